"""Stage 2 contracts: the SFT loss covers exactly the response and EOS; under QLoRA the base sits in 4-bit NF4
with double quantisation and only the LoRA weights move; the merged model is base + adapter, in fp32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTTrainer

from lab_utils.config import SFTConfig
from lab_utils.errors import LabError
from lab_utils.modeling import load_causal_lm
from lab_utils import sft
from lab_utils.sft import load_for_method, lora_config, to_prompt_completion, train_sft, trainable_params, trl_args
from lab_utils.tokenizer import render_alpaca

from conftest import gpt2_style_tokenizer, metaspace_tokenizer

RECORDS = [
    {"instruction": "Name the capital of France.", "input": "", "output": "The capital of France is Paris."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5"},
    {"instruction": "把这句话翻译成英文。", "input": "我爱北京。", "output": "I love Beijing."},
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
]
# A learning rate far above the profile's, so that three steps move every LoRA weight unmistakably.
FAST = {"max_steps": 3, "batch_size": 2, "lr": 1e-2}


@pytest.fixture(scope="module")
def base_dir(micro_run) -> Path:
    return micro_run / "base"


@pytest.fixture(scope="module")
def base_tokenizer(base_dir):  # the tokenizer saved with the base model, as train_sft loads it
    return AutoTokenizer.from_pretrained(base_dir)


@pytest.fixture(scope="module")
def fp32_base(base_dir):
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()


def build_trainer(cfg: SFTConfig, base_dir: Path, tokenizer, records: list[dict], tmp: Path) -> SFTTrainer:
    """The trainer `train_sft` trains (`sft.build_trainer`), without training."""
    torch.manual_seed(cfg.seed)  # LoRA A is initialised inside the constructor, before the Trainer seeds
    return sft.build_trainer(cfg, load_for_method(str(base_dir), cfg.method), tokenizer, records, str(tmp))


def lora_count(model: nn.Module, r: int) -> int:
    """r·(in + out) per linear layer that "all-linear" targets: every nn.Linear but the output head."""
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name != "lm_head")


# ------------------------------------------------------------------ the loss mask

def expected_row(tok, record: dict) -> tuple[list[int], list[int]]:
    """(input_ids, labels) from the tokenizer alone: the prompt (BOS included) is never trained on (-100);
    the response is, token for token, and so is the EOS that teaches the model to stop."""
    prompt = tok(render_alpaca(record["instruction"], record["input"]))["input_ids"]
    response = tok(record["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert prompt[0] == tok.bos_token_id
    return prompt + response, [-100] * len(prompt) + response


@pytest.mark.parametrize("record", RECORDS[:3], ids=["no_input", "input", "chinese"])
def test_labels_cover_exactly_response_and_eos(base_dir, base_tokenizer, tmp_path, record):
    trainer = build_trainer(SFTConfig.for_profile("micro"), base_dir, base_tokenizer, [record], tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = expected_row(base_tokenizer, record)
    assert torch.equal(batch["input_ids"], torch.tensor([ids]))  # (1, T)
    assert torch.equal(batch["labels"], torch.tensor([labels]))
    assert torch.equal(batch["attention_mask"], torch.ones(1, len(ids), dtype=torch.long))


def test_collator_pads_to_exact_tensors(base_dir, base_tokenizer, tmp_path):
    records = [RECORDS[3], RECORDS[0]]  # the first is the shorter one
    trainer = build_trainer(SFTConfig.for_profile("micro"), base_dir, base_tokenizer, records, tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    (ids0, labels0), (ids1, labels1) = (expected_row(base_tokenizer, r) for r in records)
    pad = len(ids1) - len(ids0)
    assert pad > 0
    # padded on the right: the pad id in input_ids, -100 in labels, 0 in attention_mask; (2, T)
    assert torch.equal(batch["input_ids"], torch.tensor([ids0 + [base_tokenizer.pad_token_id] * pad, ids1]))
    assert torch.equal(batch["labels"], torch.tensor([labels0 + [-100] * pad, labels1]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1] * len(ids0) + [0] * pad, [1] * len(ids1)]))


def test_the_response_is_tokenised_apart_from_the_prompt_as_generation_sees_it(base_dir, tmp_path):
    """With GPT-2-style pre-tokenisation, TRL's prompt + completion string merges the prompt's last "\\n" with an
    indented answer's spaces into one token, trained as the answer's first: a token the model never samples, since
    at inference the "\\n" is already in the prompt. The lab's trainer trains on the prompt's tokens, then the
    answer's, as `generate` continues a prompt."""
    tok = gpt2_style_tokenizer()
    record = {"instruction": "Write the body.", "input": "", "output": "    return x"}
    prompt = tok(render_alpaca(record["instruction"]))["input_ids"]
    assert tok.decode(prompt[-1:]) == "\n"
    trl = SFTTrainer(model=load_for_method(str(base_dir), "full"), train_dataset=to_prompt_completion([record]),
                     args=trl_args(SFTConfig.for_profile("micro", method="full"), str(tmp_path / "trl"), False),
                     processing_class=tok)
    first = next(t for t, label in zip(trl.train_dataset[0]["input_ids"], trl.train_dataset[0]["labels"])
                 if label != -100)
    assert "\n" in tok.decode([first])  # TRL's string path: the prompt's newline is trained as part of the answer
    trainer = build_trainer(SFTConfig.for_profile("micro", method="full"), base_dir, tok, [record], tmp_path / "lab")
    batch = trainer.data_collator([trainer.train_dataset[0]])
    answer = tok(record["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert batch["input_ids"].tolist() == [prompt + answer]
    assert batch["labels"].tolist() == [[-100] * len(prompt) + answer]


def test_a_llama_style_tokenizer_keeps_trls_ids():
    """With a SentencePiece-style tokenizer the prompt's ids do begin the whole text's, and the response keeps the ids
    it has there (TRL's): tokenised alone, "Paris" would start with a word-start "▁" the data does not have."""
    tok = metaspace_tokenizer()
    record = {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital."}
    row = sft.tokenized_records([record], tok)[0]
    prompt = tok(render_alpaca(record["instruction"]))["input_ids"]
    assert row["input_ids"] == tok(render_alpaca(record["instruction"]) + record["output"])["input_ids"] + [
        tok.eos_token_id]
    assert row["completion_mask"] == [0] * len(prompt) + [1] * (len(row["input_ids"]) - len(prompt))
    assert tok.convert_ids_to_tokens(row["input_ids"][len(prompt)])[0] != "▁"


# ------------------------------------------------------------------ QLoRA: what is quantised, what moves

def test_qlora_trains_only_lora_weights(base_dir, base_tokenizer, fp32_base, tmp_path):
    cfg = SFTConfig.for_profile("micro", method="qlora", **FAST)
    trainer = build_trainer(cfg, base_dir, base_tokenizer, RECORDS, tmp_path)
    model = trainer.model
    quantised = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    n_linear = sum(isinstance(m, nn.Linear) and n != "lm_head" for n, m in fp32_base.named_modules())
    assert len(quantised) == n_linear  # every linear layer but the head
    for m in quantised.values():
        state = m.weight.quant_state
        assert m.weight.dtype == torch.uint8  # two 4-bit codes per byte
        assert state.quant_type == "nf4"
        assert state.nested and state.state2 is not None  # double quant: the absmax constants are quantised too
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # as train_sft trains them
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    absmax = {n: m.weight.quant_state.absmax.clone() for n, m in quantised.items()}

    trainer.train()

    after = dict(model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert {n.split("lora_")[1][0] for n in lora} == {"A", "B"} and len(lora) == 2 * n_linear
    # lora_B starts at zero, so a moved B proves the update reached the output; A moves once B is non-zero
    changed = [n for n in lora if not torch.equal(before[n], after[n].detach())]
    assert changed == lora
    frozen = [n for n in before if "lora_" not in n]
    assert all(torch.equal(before[n], after[n].detach()) for n in frozen)  # bit for bit
    for name, m in quantised.items():  # explicitly: the packed 4-bit codes and their scales
        assert torch.equal(before[f"{name}.weight"], m.weight.data)
        assert torch.equal(absmax[name], m.weight.quant_state.absmax)
    embed = next(n for n in before if n.endswith("embed_tokens.weight"))
    assert torch.equal(before[embed], after[embed].detach())


def test_qlora_adapters_train_in_fp32_not_in_the_bf16_trl_casts_them_to(base_dir, base_tokenizer, tmp_path):
    """TRL casts a quantised model's adapters to bf16 (for bf16 GPUs). With fp32 compute that only loses updates: at
    lr 1e-5 an Adam step is far below bf16's resolution at LoRA A's scale (~0.1), so A would not move. The lab's
    trainer keeps them in fp32 (`keep_adapters_fp32`), where the same two steps move every element of A."""
    cfg = SFTConfig.for_profile("micro", method="qlora", max_steps=2, batch_size=2, lr=1e-5, warmup_steps=0)

    def moved_share_of_a(trainer) -> float:
        a = {n: p for n, p in trainer.model.named_parameters() if "lora_A" in n}
        before = {n: p.detach().clone() for n, p in a.items()}
        trainer.train()  # step 1 moves B off zero; step 2 gives A a gradient
        moved = sum((p.detach() != before[n]).sum().item() for n, p in a.items())
        return moved / sum(p.numel() for p in a.values())

    torch.manual_seed(cfg.seed)
    bare = SFTTrainer(model=load_for_method(str(base_dir), "qlora"), args=trl_args(cfg, str(tmp_path / "a"), False),
                      train_dataset=to_prompt_completion(RECORDS), processing_class=base_tokenizer,
                      peft_config=lora_config(cfg))
    assert {p.dtype for p in bare.model.parameters() if p.requires_grad} == {torch.bfloat16}  # what TRL does
    frozen = {n: (p.dtype, p.detach().clone()) for n, p in bare.model.named_parameters() if not p.requires_grad}
    assert moved_share_of_a(bare) < 0.5  # measured: 68 of 8,192 elements
    lab = build_trainer(cfg, base_dir, base_tokenizer, RECORDS, tmp_path / "b")
    assert {p.dtype for p in lab.model.parameters() if p.requires_grad} == {torch.float32}
    after = dict(lab.model.named_parameters())  # the cast touched no frozen weight: the same dtypes and values
    assert all(after[n].dtype == dtype and torch.equal(after[n].detach(), w) for n, (dtype, w) in frozen.items())
    assert moved_share_of_a(lab) > 0.99  # measured: 8,186 of 8,192


# ------------------------------------------------------------------ trainable parameters

@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_lora_trainable_params(base_dir, base_tokenizer, fp32_base, tmp_path, method):
    cfg = SFTConfig.for_profile("micro", method=method)
    trainer = build_trainer(cfg, base_dir, base_tokenizer, RECORDS, tmp_path)
    expected = lora_count(fp32_base, cfg.lora_r)
    lora = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert trainable_params(trainer.model) == lora == expected
    adapted = sum(m.weight.numel() for n, m in fp32_base.named_modules() if isinstance(m, nn.Linear) and n != "lm_head")
    total = sum(p.numel() for p in fp32_base.parameters())
    assert expected < adapted and expected < total / 2


def test_full_trains_every_param(base_dir, base_tokenizer, fp32_base, tmp_path):
    trainer = build_trainer(SFTConfig.for_profile("micro", method="full"), base_dir, base_tokenizer, RECORDS, tmp_path)
    assert all(p.requires_grad for p in trainer.model.parameters())
    assert trainable_params(trainer.model) == sum(p.numel() for p in fp32_base.parameters())


@pytest.mark.parametrize("method", ["qlora", "lora", "full"])
def test_full_fine_tuning_trains_at_full_lr_and_lora_at_lr(tmp_path, method):
    """--method full moves every weight and takes its own, lower learning rate (--full_lr); at the LoRA rate (--lr,
    5x higher on micro and tiny) it would push every weight of the model far too hard. qlora's and lora's adapters
    take --lr."""
    cfg = SFTConfig.for_profile("micro", method=method)
    assert cfg.full_lr != cfg.lr  # otherwise the check below could not tell them apart
    assert trl_args(cfg, str(tmp_path), False).learning_rate == (cfg.full_lr if method == "full" else cfg.lr)


# ------------------------------------------------------------------ train_sft: the saved artifacts

@pytest.fixture(scope="module")
def qlora_run(base_dir, tmp_path_factory):
    cfg = SFTConfig.for_profile("micro", method="qlora", **FAST)
    out = tmp_path_factory.mktemp("sft_run") / "sft"
    torch.manual_seed(0)
    metrics = train_sft(cfg, base_dir, RECORDS, out, progress=False)
    return cfg, metrics, out


def test_a_run_without_progress_prints_no_log_lines(base_dir, tmp_path, capsys):
    """`progress=False` is quiet. With tqdm off, transformers prints every logged dict instead of a bar: notebook 03's
    comparison of three methods printed two dozen `{'loss': ...}` lines. The losses stay in the metrics' history."""
    cfg = SFTConfig.for_profile("micro", method="lora", **FAST | {"logging_steps": 1})
    capsys.readouterr()
    metrics = train_sft(cfg, base_dir, RECORDS, tmp_path / "sft", progress=False)
    assert len(metrics["history"]) == cfg.max_steps
    assert "'loss'" not in capsys.readouterr().out


def test_train_sft_saves_merged_model_and_adapter(qlora_run, base_dir, fp32_base):
    cfg, metrics, out = qlora_run
    assert (out / "model.safetensors").is_file() and not list(out.parent.glob(".tmp-*"))
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert all(f.get_tensor(k).dtype == torch.float32 for k in keys)
    assert not any("lora" in k for k in keys)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_modules())
    assert set(merged.state_dict()) == set(fp32_base.state_dict())  # same architecture as the base
    adapter = out.with_name("sft-adapter")
    adapter_cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert (adapter / "adapter_model.safetensors").is_file()
    assert adapter_cfg["r"] == cfg.lora_r and adapter_cfg["lora_alpha"] == cfg.lora_alpha
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:  # trained in fp32 (keep_adapters_fp32)
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    saved = json.loads((out / "lab_config.json").read_text())
    assert saved["sft"]["method"] == "qlora" and saved["base"] == str(base_dir)


def test_the_adapter_folder_loads_on_its_own_from_any_working_folder(base_dir, tmp_path, monkeypatch):
    """sft-adapter/ is a model `lab eval --model` reads: it holds the tokenizer it trained with, and its base is found
    from another working folder though train_sft was given a relative path (a review found both missing: the folder
    was refused as having no tokenizer, and PEFT recorded "base" as given)."""
    monkeypatch.chdir(base_dir.parent)
    cfg = SFTConfig.for_profile("micro", method="qlora", **FAST)
    train_sft(cfg, Path(base_dir.name), RECORDS, tmp_path / "sft", progress=False)
    adapter = tmp_path / "sft-adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    monkeypatch.chdir(tmp_path)  # where "base" is no folder
    lm, tok = load_causal_lm(str(adapter))
    merged, _ = load_causal_lm(str(tmp_path / "sft"))
    ids = torch.tensor([tok(render_alpaca("Name the capital of France."))["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(lm.eval()(ids).logits, merged.eval()(ids).logits, atol=1e-4)


def test_a_save_interrupted_between_its_two_folders_leaves_the_stage_unfinished(base_dir, tmp_path, monkeypatch):
    """The adapter is renamed into place before the merged model: until both are, the old SFT model must not count as
    finished beside an adapter from another run."""
    import lab_utils.sft as sft

    out = tmp_path / "sft"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # a finished earlier run
    monkeypatch.setattr(sft.PeftModel, "from_pretrained", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_sft(SFTConfig.for_profile("micro", method="lora", max_steps=1, batch_size=2), base_dir, RECORDS, out,
                  progress=False)
    assert (tmp_path / "sft-adapter" / "adapter_config.json").is_file() and not (out / "metrics.json").exists()


def test_a_base_with_a_chat_template_of_its_own_is_saved_with_the_one_sft_trained_on(base_dir, tmp_path):
    """A hub base brings its own chat template (ChatML, say); the SFT model is tuned on Alpaca prompts, so
    `apply_chat_template` on the saved model must render those, not the base's layout. And a full fine-tune leaves
    no earlier QLoRA run's adapter beside it: that adapter belongs to a model no longer there."""
    import shutil

    base = tmp_path / "hub-like-base"
    shutil.copytree(base_dir, base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    tok.save_pretrained(base)
    out = tmp_path / "sft"
    (tmp_path / "sft-adapter").mkdir()
    (tmp_path / "sft-adapter" / "adapter_config.json").write_text("{}")  # an earlier QLoRA run's
    train_sft(SFTConfig.for_profile("micro", method="full", max_steps=1, batch_size=2), base, RECORDS, out,
              progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub-like-base", "sft"]
    saved = AutoTokenizer.from_pretrained(out)
    ids = saved.apply_chat_template([{"role": "user", "content": "Say hello."}], tokenize=True,
                                    add_generation_prompt=True)["input_ids"]
    assert ids == saved(render_alpaca("Say hello."))["input_ids"]


def test_train_sft_metrics(qlora_run, fp32_base):
    cfg, metrics, _ = qlora_run
    assert metrics["method"] == "qlora"
    assert metrics["trainable_params"] == lora_count(fp32_base, cfg.lora_r)
    assert metrics["total_params"] == sum(p.numel() for p in fp32_base.parameters())
    assert 0 < metrics["weight_bytes_4bit"] < metrics["weight_bytes_full"]
    assert metrics["wall_s"] >= metrics["train_s"] > 0
    assert metrics["steps"] == cfg.max_steps and [h["step"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["n_train_records"] == len(RECORDS)


def test_merged_logits_equal_base_plus_adapter(qlora_run, base_dir, base_tokenizer, fp32_base):
    _, _, out = qlora_run
    ids = torch.tensor([base_tokenizer(render_alpaca("Name the capital of France."))["input_ids"]])  # (1, T)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, out.with_name("sft-adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        want, got, before = reference(ids).logits, merged(ids).logits, fp32_base(ids).logits  # (1, T, V)
    assert torch.allclose(got, want, atol=1e-4)
    assert (got - before).abs().max() > 1e-2  # the adapter really changed the model: not a vacuous check


# ------------------------------------------------------------------ errors

def test_unknown_method_is_lab_error(base_dir, tmp_path):
    with pytest.raises(LabError, match="unknown method 'dora'") as info:
        load_for_method(str(base_dir), "dora")
    assert "qlora" in str(info.value)  # the fix lists the valid methods
    out = tmp_path / "sft"
    with pytest.raises(LabError, match="unknown method"):
        train_sft(SFTConfig.for_profile("micro", method="dora"), base_dir, RECORDS, out, progress=False)
    assert not out.exists() and not out.with_name("sft-adapter").exists()


def test_records_longer_than_max_length_are_lab_error(base_dir, tmp_path):
    cfg = SFTConfig.for_profile("micro", max_length=16)  # shorter than any Alpaca prompt
    with pytest.raises(LabError, match="max_length"):
        train_sft(cfg, base_dir, RECORDS, tmp_path / "sft", progress=False)
    assert not (tmp_path / "sft").exists()


def test_a_record_cut_by_max_length_is_left_out_not_trained_without_its_eos(base_dir, base_tokenizer):
    """TRL would keep it, cut after some of its response: without its EOS it teaches the model not to stop."""
    long = {"instruction": "Tell me about Paris.", "input": "", "output": " ".join(["Paris is a city."] * 40)}
    rows = to_prompt_completion(RECORDS + [long])
    lengths = [len(base_tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows]  # + EOS
    prompt_len = len(base_tokenizer(rows[-1]["prompt"])["input_ids"])
    max_length = max(lengths[:-1]) + 2  # every short record fits; the long one keeps its prompt, loses its end
    assert prompt_len < max_length < lengths[-1]
    cfg = SFTConfig.for_profile("micro", max_length=max_length, max_steps=1, batch_size=2)
    with pytest.warns(UserWarning, match=rf"1 of 5 SFT records are longer than {max_length} tokens \(max_length="):
        metrics = train_sft(cfg, base_dir, RECORDS + [long], progress=False)
    assert (metrics["n_train_records"], metrics["n_dropped"]) == (len(RECORDS), 1)


def test_records_past_the_models_context_are_left_out_whatever_max_length_says(base_dir, base_tokenizer, tmp_path):
    """A --max_length beyond the model's context would train on positions the model never learned (the real Alpaca
    sample on tiny's 256 positions: 563 of 999 records): the context caps it, as in `lab reward` and `lab dpo`."""
    long = {"instruction": "Tell me about Paris.", "input": "", "output": " ".join(["Paris is a city."] * 40)}
    rows = to_prompt_completion(RECORDS + [long])
    lengths = [len(base_tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows]  # + EOS
    context = max(lengths[:-1]) + 2  # every short record fits the model; the long one does not
    short = tmp_path / "short-context"
    shutil.copytree(base_dir, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(config | {"max_position_embeddings": context}))
    cfg = SFTConfig.for_profile("micro", max_length=10 * lengths[-1], max_steps=1, batch_size=2)
    with pytest.warns(UserWarning, match=rf"1 of 5 SFT records are longer than {context} tokens .*the model's context"):
        metrics = train_sft(cfg, short, RECORDS + [long], progress=False)
    assert (metrics["n_train_records"], metrics["n_dropped"]) == (len(RECORDS), 1)
    for max_length in (cfg.max_length, context):  # at the context (tiny: 256 and 256) a higher flag changes nothing
        with pytest.raises(LabError, match=r"the model's context .*Fix: shorten the records, or fine-tune a model "
                                           "with a longer context"):
            train_sft(SFTConfig.for_profile("micro", max_length=max_length), short, [long], progress=False)


def test_a_tokenizer_whose_pad_is_eos_gets_a_pad_of_its_own(base_dir, tmp_path):
    """Many hub tokenizers reuse EOS as PAD; PPO's first-EOS truncation and the reward model's last-non-PAD read
    need them apart."""
    from lab_utils.modeling import load_causal_lm

    model, tok = load_causal_lm(str(base_dir))
    tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.eos_token_id
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, tok = load_causal_lm(str(tmp_path / "m"))
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tok.pad_token_id
    assert model.get_input_embeddings().num_embeddings >= len(tok)


def test_a_run_shorter_than_logging_steps_still_reports_its_final_loss(base_dir):
    cfg = SFTConfig.for_profile("micro", max_steps=2, logging_steps=10, batch_size=2)
    metrics = train_sft(cfg, base_dir, RECORDS, progress=False)
    assert [row["step"] for row in metrics["history"]] == [2] and metrics["final_loss"] > 0
