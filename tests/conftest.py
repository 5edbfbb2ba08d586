"""Shared fixtures: one micro tokenizer and one micro run per session, built offline in pytest's tmp dirs.

Nothing here touches `runs/` of the repository or the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LAB_BF16_FAST", "1")  # the bf16 paths are tested on every CPU (modeling.bf16_is_fast)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Micro models gain nothing from intra-op threads, and on a shared 2-core runner idle OpenMP workers
# spinning against other processes made a 20-step run ~50x slower. One thread also keeps sums in one order.
torch.set_num_threads(1)

# Importing the training stack once at collection time: on AVX512-BF16 CPUs bitsandbytes (pulled in by
# transformers.optimization -> peft) logs a one-off warning to stderr on first import. Emitting it here
# keeps it out of the tests that assert stderr holds exactly one "error:" line.
import lab_utils.pretrain  # noqa: E402,F401
from lab_utils import stages  # noqa: E402
from lab_utils.config import WorldConfig, build_world_from  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("LAB_REAL_DATA", REPO / ".." / "shared" / "data" / "real"))


def real_sample(name: str) -> Path:
    """A file of ../shared/data/real (or $LAB_REAL_DATA); the test is skipped where it is absent."""
    path = REAL_DATA / name
    if not path.is_file():
        pytest.skip(f"real sample data not found at {path} (set LAB_REAL_DATA to its folder)")
    return path


def _bpe_tokenizer(pre_tokenizer, decoder, text: list[str]):
    """A small BPE (bytes or characters, 3 specials, a few merges: every id fits the micro model's 512 rows) wrapped
    as transformers wraps a hub tokenizer, BOS first."""
    from tokenizers import Tokenizer, models, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(byte_fallback=decoder is None))
    tok.pre_tokenizer, tok.decoder = pre_tokenizer, decoder
    tok.train_from_iterator(text * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                                           initial_alphabet=sorted(set("".join(text)))))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def gpt2_style_tokenizer():
    """GPT-2's byte-level pre-tokenisation (SmolLM2's, Qwen's): a newline and the spaces after it can be one token."""
    from tokenizers import decoders, pre_tokenizers
    return _bpe_tokenizer(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(),
                          ["Response:\n    return x\n", "def f(x):\n    return x\n  indented\n",
                           "".join(pre_tokenizers.ByteLevel.alphabet())])


def metaspace_tokenizer():
    """transformers' `LlamaTokenizer` (SentencePiece-style: Metaspace, byte fallback, as Llama's and Mistral's) on a
    small BPE: a text's first word gets a word-start "▁", so a response tokenised alone starts with one it does not
    have after the prompt's newline (a byte token, "<0x0A>", that no merge crosses)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer
    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    text = ["Below is an instruction that describes a task. ### Instruction: Name the capital of France. ### Response: "
            "Paris is the capital.", "def f(x): return x"] * 20
    bpe.train_from_iterator(text, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    spec = json.loads(bpe.to_str())["model"]
    vocab = spec["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[tuple(m) if isinstance(m, list) else tuple(m.split())
                                               for m in spec["merges"]])


def with_spare_rows(model, tok, prompts: list[str], n: int = 8):
    """`model` with `n` output rows past its tokenizer's tokens, as hub models have (Qwen2.5: 271), each a copy of a
    row the model likes best for the prompts' first response token, and PAD's row (untrained, on a hub model whose
    PAD the lab added) three times the best one: unsuppressed, a sampler draws them often, and PAD first."""
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        top = model(**enc).logits[:, -1].mean(0).topk(n).indices
        model.resize_token_embeddings(len(tok) + n, mean_resizing=False)
        head = model.get_output_embeddings().weight
        head[len(tok):] = head[top]
        head[tok.pad_token_id] = 3 * head[top[0]]
    return model


def before_eos(ids, eos: int):
    """The ids of each row before its first EOS, one flat tensor (what a sampler drew as the answer's text)."""
    ended = (ids == eos).cumsum(1) > 0
    return ids[~ended]


@pytest.fixture(scope="module")
def alpaca_demo() -> Path:
    return real_sample("alpaca_en_demo.json")


@pytest.fixture(scope="module")
def wiki_demo() -> Path:
    return real_sample("wiki_demo.txt")


@pytest.fixture(scope="session")
def micro_world():
    return build_world_from(WorldConfig.for_profile("micro"))


@pytest.fixture(scope="session")
def tok_root(tmp_path_factory) -> Path:
    """A run folder holding only the micro tokenizer (`<root>/tokenizer`)."""
    root = tmp_path_factory.mktemp("micro_run")
    stages.run_tokenizer("micro", root)
    return root


@pytest.fixture(scope="session")
def tok_dir(tok_root) -> Path:
    return tok_root / "tokenizer"


@pytest.fixture(scope="session")
def tokenizer(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="session")
def micro_run(tok_root) -> Path:
    """The same folder after pretrain + eval on micro: several tests read its report.json."""
    stages.run_pretrain("micro", tok_root, progress=False)
    stages.run_eval("micro", tok_root)
    return tok_root


@pytest.fixture(scope="session")
def sft_root(micro_run, tmp_path_factory) -> Path:
    """A run folder of its own (tokenizer, base, micro SFT) for the later stages, so that the shared micro run
    stays as it is. The reward and PPO tests build on it."""
    import shutil

    root = tmp_path_factory.mktemp("sft_run")
    for folder in ("tokenizer", "base"):
        shutil.copytree(micro_run / folder, root / folder)
    stages.run_sft("micro", root, progress=False)
    return root
