"""The byte-level BPE and the Alpaca prompt: exact strings, exact ids."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lab_utils.tokenizer import (CHAT_TEMPLATE, chat_template_for, prompt_response_ids, render_alpaca, train_tokenizer,
                                 wrap)
from lab_utils.world import fact_prompts

from conftest import gpt2_style_tokenizer, metaspace_tokenizer

# The original Stanford Alpaca prompts (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), written out by hand.
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\nName a fruit.\n\n### Response:\n")
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\nCluster these.\n\n### Input:\napple, carrot\n\n### Response:\n")


def test_render_alpaca_is_the_stanford_prompt():
    assert render_alpaca("Name a fruit.") == ALPACA_NO_INPUT
    assert render_alpaca("Name a fruit.", "") == ALPACA_NO_INPUT
    assert render_alpaca("Cluster these.", "apple, carrot") == ALPACA_INPUT


def test_chat_template_without_input(tokenizer):
    user = [{"role": "user", "content": "Name a fruit."}]
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == \
        "<|bos|>" + ALPACA_NO_INPUT
    full = user + [{"role": "assistant", "content": "Apple."}]
    assert tokenizer.apply_chat_template(full, tokenize=False) == "<|bos|>" + ALPACA_NO_INPUT + "Apple.<|eos|>"


def test_chat_template_with_input(tokenizer):
    user = [{"role": "user", "content": "Cluster these.", "input": "apple, carrot"}]
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == "<|bos|>" + ALPACA_INPUT
    full = user + [{"role": "assistant", "content": "Fruits: apple\nVegetables: carrot"}]
    assert tokenizer.apply_chat_template(full, tokenize=False) == \
        "<|bos|>" + ALPACA_INPUT + "Fruits: apple\nVegetables: carrot<|eos|>"


def test_chat_template_keeps_quotes_and_braces_verbatim(tokenizer):
    instr, inp = "Say 'hi' and \"bye\" {instruction} {{ x }}", "it's {input}\\n"
    got = tokenizer.apply_chat_template([{"role": "user", "content": instr, "input": inp}], tokenize=False)
    assert got == "<|bos|>" + render_alpaca(instr, inp)


def test_chat_template_ids_equal_generation_prompt_ids(tokenizer):
    # one BOS, not two: the template writes it, the post-processor must not add another
    msgs = [{"role": "user", "content": "Cluster these.", "input": "apple, carrot"}]
    ids = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert ids == tokenizer(render_alpaca("Cluster these.", "apple, carrot"))["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1


@pytest.mark.parametrize("text", [
    "The capital of France is Paris.", "法国的首都是巴黎。", "Alice去了北京, and said: 你好！",
    "12 + 5 = 17; 2024-01-31", "emoji 😀🎉 and ü é ß", "  two  spaces\n\n\ttab   run  ", "Hello , world ! it 's",
    "", " ",
])
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens(tokenizer):
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert len(ids) == 3 and None not in ids
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    ids = tokenizer("Hello world")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.eos_token_id not in ids
    assert ids[1:] == tokenizer("Hello world", add_special_tokens=False)["input_ids"]


def test_padding_is_on_the_left(tokenizer):
    batch = tokenizer(["a", "a b c"], padding=True)["input_ids"]
    assert batch[0][0] == tokenizer.pad_token_id and batch[1][0] == tokenizer.bos_token_id


def _piecewise(tokenizer, text: str) -> list[int]:
    return [i for ch in text for i in tokenizer(ch, add_special_tokens=False)["input_ids"]]


def test_digits_and_chinese_characters_are_their_own_pieces(tokenizer):
    for text in ("12345", "2024", "法国的首都是巴黎", "猫和狗"):
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == _piecewise(tokenizer, text)


def test_fact_prompt_is_a_token_prefix_of_the_fact(tokenizer, micro_world):
    assert tokenizer("法国的首都是巴黎。")["input_ids"][:len(tokenizer("法国的首都是")["input_ids"])] == \
        tokenizer("法国的首都是")["input_ids"]
    for p in fact_prompts(micro_world):
        fact = p["prompt"] + (p["answer"] + "。" if p["lang"] == "zh" else " " + p["answer"] + ".")
        prompt_ids, fact_ids = tokenizer(p["prompt"])["input_ids"], tokenizer(fact)["input_ids"]
        assert fact_ids[:len(prompt_ids)] == prompt_ids, p["prompt"]


def test_save_and_load_give_identical_ids(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["The capital of France is Paris.", "法国的首都是巴黎。", "12 + 5 = 17 😀"]
    assert again(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert again.chat_template == tokenizer.chat_template
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id, again.padding_side) == \
        (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, "left")
    assert len(again) == len(tokenizer)


def test_a_space_stays_with_the_next_word_and_newlines_stand_alone(tokenizer):
    # "apple, banana": the separator before each list item is one token (","), not two ("," + " ");
    # a 4-layer model only learned to copy lists once this held (see lab_utils/tokenizer.py).
    pieces = [tokenizer.convert_tokens_to_string([t])
              for t in tokenizer.tokenize("Fruits: apple, banana\nVegetables: carrot\n\nDone.")]
    assert "".join(pieces) == "Fruits: apple, banana\nVegetables: carrot\n\nDone."
    assert " " not in pieces, "no token may be a bare space"
    for piece in pieces:
        assert "\n" not in piece or set(piece) == {"\n"}, f"newlines are pieces of their own: {piece!r}"
        assert " " not in piece.strip() and not piece.endswith(" "), f"a space starts a word: {piece!r}"


def test_the_first_design_makes_every_space_a_token_of_its_own():
    docs = ["the cat sat on the mat", "the dog sat on the log"] * 20
    ours, first = train_tokenizer(docs, 300), train_tokenizer(docs, 300, space_with_word=False)
    assert ours.tokenize("the cat sat") == ["the", "Ġcat", "Ġsat"]
    assert first.tokenize("the cat sat") == ["the", "Ġ", "cat", "Ġ", "sat"]


def test_the_chat_template_refuses_a_role_it_would_drop(tokenizer):
    """A system message used to vanish from the rendered prompt without a word."""
    with pytest.raises(Exception, match="only user and assistant turns, not system"):
        tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                      tokenize=False)


def test_the_chat_template_writes_bos_only_for_a_tokenizer_that_adds_one(tokenizer):
    """A hub tokenizer that puts no BOS before a text (SFT then trained on prompts without one) gets the template
    without BOS; the lab's, which adds one, keeps it. Either way the ids are those SFT trained on."""
    import copy

    no_bos = wrap(copy.deepcopy(tokenizer.backend_tokenizer))
    no_bos.backend_tokenizer.post_processor = None
    assert no_bos("x")["input_ids"][0] != no_bos.bos_token_id
    assert chat_template_for(tokenizer) == CHAT_TEMPLATE and chat_template_for(no_bos) != CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "Cluster these.", "input": "apple, carrot"}]
    for tok in (tokenizer, no_bos):
        ids = tok.apply_chat_template(msgs, chat_template=chat_template_for(tok), tokenize=True,
                                      add_generation_prompt=True)["input_ids"]
        assert ids == tok(render_alpaca("Cluster these.", "apple, carrot"))["input_ids"]


def test_a_response_is_tokenised_as_a_model_reads_it_after_its_prompt(tokenizer):
    """The response's ids are those that follow the prompt's in the whole text (TRL's rule), unless the prompt's ids
    do not begin the whole text's; then the response is tokenised alone, as a model would sample it after the prompt."""
    prompt = render_alpaca("Name the capital of France.")
    llama = metaspace_tokenizer()  # alone, "Paris" gets a word-start "▁" it does not have after the prompt's newline
    whole, alone = llama(prompt + "Paris is the capital.")["input_ids"], llama("Paris is the capital.",
                                                                             add_special_tokens=False)["input_ids"]
    (p, r), = prompt_response_ids(llama, [prompt], ["Paris is the capital."])
    assert (p, r) == (whole[:len(p)], whole[len(p):]) and r != alone
    gpt2 = gpt2_style_tokenizer()  # whole, the prompt's last newline merges with an indented answer's spaces
    whole = gpt2(prompt + "    return x")["input_ids"]
    alone = gpt2("    return x", add_special_tokens=False)["input_ids"]
    (p, r), = prompt_response_ids(gpt2, [prompt], ["    return x"])
    assert p == gpt2(prompt)["input_ids"] and whole[:len(p)] != p and r == alone
    answers = ["Paris.", " Paris.", "  indented", "\nnewline first", "7 + 5 = 12", "巴黎。", ""]  # the lab's own
    assert prompt_response_ids(tokenizer, [prompt] * len(answers), answers) == [
        (tokenizer(prompt)["input_ids"], tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    assert prompt_response_ids(tokenizer, [], []) == []
