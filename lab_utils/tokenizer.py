"""A byte-level BPE trained on the world corpus with `tokenizers`, wrapped as `PreTrainedTokenizerFast`.

Pre-tokenisation, in order:
  1. every Chinese character is its own piece, so "法国的首都是" tokenizes the same whether or not
     "巴黎" follows (a merge across the prompt boundary would make fact prompts look unlike the corpus);
  2. digits are split one by one (as in Llama), so "12 + 5 = 17" is built from the same ten digits;
  3. newlines are pieces of their own;
  4. GPT-2's byte-level split: its regex keeps a space with the word after it ("apple, banana" -> `apple`
     `,` ` banana`), then every byte becomes a printable symbol, so any Unicode text round-trips exactly and
     there is no unknown token. Measured on tiny: with every space a token of its own (our first design,
     `space_with_word=False`), two tokens separated list items and the 4-layer model never learned to copy
     a list from its context (SFT task accuracy 0.57, cluster and extract answers invented items); with the
     space kept on the word it copies ("Who went?" read-back 0.975), and English packs more characters per
     token (notebook 01 measures both). The price: an answer's first word after "### Response:\n" has no
     leading space, so SFT has to learn that spelling once.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

# The original Stanford Alpaca prompts, byte for byte.
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def render_alpaca(instruction: str, input: str = "") -> str:
    """The Alpaca prompt for one record (the variant with `### Input:` only when input is non-empty)."""
    if input:
        return PROMPT_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


def _jinja(template: str, instruction: str, input: str | None = None) -> str:
    text = template.replace("\n", "\\n").replace("'", "\\'")
    text = text.replace("{instruction}", "' + " + instruction + " + '")
    if input:
        text = text.replace("{input}", "' + " + input + " + '")
    return "'" + text + "'"


# A user message carries the instruction in `content` and, optionally, the Alpaca `input` in `input`:
#   [{"role": "user", "content": "Cluster these.", "input": "apple, carrot"}, {"role": "assistant", ...}]
# Any other role (system, tool) is an error, not a message silently left out.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if m.get('input') -%}{{ " + _jinja(PROMPT_INPUT, "m['content']", "m['input']") + " }}"
    "{%- else -%}{{ " + _jinja(PROMPT_NO_INPUT, "m['content']") + " }}{%- endif -%}"
    "{%- elif m['role'] == 'assistant' -%}{{ m['content'] }}{{ eos_token }}"
    "{%- else -%}{{ raise_exception('the Alpaca template has only user and assistant turns, not ' + m['role'] + "
    "': put a system message at the start of the first user message') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def chat_template_for(tokenizer) -> str:
    """The Alpaca chat template for `tokenizer`: `CHAT_TEMPLATE`, whose BOS is kept only when the tokenizer itself
    puts one before a text, as the lab's does (SFT trained on `tokenizer(prompt)`; many hub tokenizers add none)."""
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [bos]
    return CHAT_TEMPLATE if adds_bos else CHAT_TEMPLATE.removeprefix("{{ bos_token }}")


def train_tokenizer(texts: list[str], vocab_size: int = 4096, space_with_word: bool = True) -> PreTrainedTokenizerFast:
    """Learn BPE merges on `texts`; BOS is added by the post-processor, EOS/PAD by the callers.
    `space_with_word=False` makes every space a piece of its own (the first design, for comparison)."""
    tok = Tokenizer(models.BPE())
    spaces = [] if space_with_word else [pre_tokenizers.Split(Regex(" "), behavior="isolated")]
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"),
        *spaces,
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                      special_tokens=[(BOS, bos_id)])
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   padding_side="left", chat_template=CHAT_TEMPLATE,
                                   clean_up_tokenization_spaces=False, model_max_length=1_000_000)


def prompt_response_ids(tokenizer, prompts: list[str], responses: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) per pair, as a model reads the response after its prompt: the prompt tokenised
    alone (BOS included), and the response's tokens as they follow the prompt in the whole text when the prompt's
    ids begin the whole text's (TRL's rule: a SentencePiece tokenizer such as Llama's or Mistral's, given the response
    alone, would start it with a word-start "▁" the text does not have). Where they do not, the response is tokenised
    alone: a GPT-2-style BPE merges the prompt's last newline with an indented response's spaces (SmolLM2's) or with a
    response's leading newline (Qwen's) into one token, which the model could never sample after the prompt it is
    given. On the lab's tokenizer, which keeps newlines tokens of their own, both ways give the same ids. No EOS is
    added, and text that spells a special token ("<|eos|>", sampled as plain tokens) stays text: read as the control
    token, a reward model scored another sequence than the one generated (the lab's data loaders refuse such text
    where a person brings it; a model's answer can still spell it)."""
    if not prompts:
        return []
    prompt_ids = tokenizer(prompts, split_special_tokens=True)["input_ids"]
    whole = tokenizer([p + r for p, r in zip(prompts, responses, strict=True)], split_special_tokens=True)["input_ids"]
    merged = [i for i, (p, w) in enumerate(zip(prompt_ids, whole)) if w[:len(p)] != p]
    alone = tokenizer([responses[i] for i in merged], add_special_tokens=False,
                      split_special_tokens=True)["input_ids"] if merged else []
    alone = dict(zip(merged, alone))
    return [(p, alone.get(i, w[len(p):])) for i, (p, w) in enumerate(zip(prompt_ids, whole))]


def chars_per_token(tokenizer, texts: list[str]) -> float:
    """Compression: characters per token (no special tokens counted)."""
    n_chars = sum(len(t) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return n_chars / max(1, n_tokens)
