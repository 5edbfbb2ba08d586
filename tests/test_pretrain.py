"""Pretraining: the loss is the textbook next-token cross-entropy, and a resumed run equals a straight one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lab_utils import checkpoints as ck
from lab_utils.config import PretrainConfig, WorldConfig
from lab_utils.modeling import build_model, count_params
from lab_utils.pretrain import batch_indices, pack, pretrain


def causal_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Token t predicts token t+1: drop the last logit and the first label. logits (B, T, V), ids (B, T)."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1))


def test_inline_loss_equals_model_loss(tokenizer):
    cfg = PretrainConfig.for_profile("micro")
    model = build_model(cfg, tokenizer, seed=0).eval()
    x = torch.randint(0, len(tokenizer), (3, cfg.seq_len), generator=torch.Generator().manual_seed(0))  # (B, T)
    with torch.no_grad():
        out = model(input_ids=x, labels=x)
    assert out.logits.shape == (3, cfg.seq_len, len(tokenizer))
    assert torch.allclose(causal_lm_loss(out.logits, x), out.loss, atol=1e-6)


def test_tied_embeddings_counted_once(tokenizer):
    model = build_model(PretrainConfig.for_profile("micro"), tokenizer)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_pack_puts_bos_and_eos_around_every_document(tokenizer):
    docs = ["Paris.", "巴黎。", "1 + 2 = 3."]
    flat = [t for d in docs for t in [tokenizer.bos_token_id] +
            tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    rows = pack(tokenizer, docs, seq_len=4)  # (N, T)
    assert rows.shape == (len(flat) // 4, 4)
    assert rows.flatten().tolist() == flat[: rows.numel()]


def test_batches_are_a_pure_function_of_seed_and_step():
    a = [batch_indices(40, 8, step, seed=0).tolist() for step in range(10)]
    assert a == [batch_indices(40, 8, step, seed=0).tolist() for step in range(10)]
    # one epoch (5 steps) visits every row exactly once
    assert sorted(i for batch in a[:5] for i in batch) == list(range(40))
    assert a[:5] != a[5:]  # the next epoch is reshuffled


def test_resume_equals_straight_run(tok_dir, tmp_path):
    cfg, world_cfg = PretrainConfig.for_profile("micro", max_steps=20, save_every=10), WorldConfig.for_profile("micro")
    assert cfg.mixed_precision == "no"
    straight = pretrain(cfg, tok_dir, tmp_path / "a" / "base", world_cfg, progress=False)

    out_b = tmp_path / "b" / "base"
    cut = pretrain(cfg, tok_dir, out_b, world_cfg, stop_at=10, progress=False)
    assert cut["interrupted_at"] == 10 and not out_b.exists()  # an interrupted run leaves no model behind
    assert ck.latest_checkpoint(tmp_path / "b" / "base-checkpoints").name == "step-0000010"
    resumed = pretrain(cfg, tok_dir, out_b, world_cfg, resume=True, progress=False)

    assert resumed["resumed_from"] == 10 and straight["resumed_from"] == 0
    assert resumed["history"] == straight["history"]
    assert resumed["history"]["step"] == list(range(1, 21))
    a, b = load_file(tmp_path / "a" / "base" / "model.safetensors"), load_file(out_b / "model.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_bench_times_the_architecture_named_by_model(micro_run):
    """`lab bench --profile full` must time the hub model it would train, not the tiny Llama of the defaults."""
    from transformers import AutoConfig

    from lab_utils.bench import pretrain_throughput, train_flops_per_token

    cfg = PretrainConfig.for_profile("micro", model=str(micro_run / "base"), n_layers=7, d_model=128)
    result = pretrain_throughput(cfg, steps=1)
    config = AutoConfig.from_pretrained(micro_run / "base")
    n = count_params(AutoModelForCausalLM.from_config(config))
    assert result["params"] == n
    per_token = train_flops_per_token(n, cfg, config.num_hidden_layers, config.hidden_size)
    assert result["flops_per_s"] == pytest.approx(result["tokens_per_s"] * per_token)
