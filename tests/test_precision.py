"""bf16 where it is fast, float32 where it is not: on an AVX2-only CPU a bf16 matmul took 65 times as long as the
float32 one (`modeling.bf16_is_fast`), so every stage that asks for bf16 autocast trains in float32 there, and says so.
The other tests run the bf16 paths on every CPU ($LAB_BF16_FAST=1, set in conftest.py)."""

from __future__ import annotations

import pytest

from lab_utils import dpo, modeling, pretrain, reward, sft
from lab_utils.config import DPOConfig, PPOConfig, PretrainConfig, RewardConfig, SFTConfig, WorldConfig


@pytest.fixture
def slow_bf16(monkeypatch):
    monkeypatch.setattr(modeling, "bf16_is_fast", lambda device_type: False)


def test_the_check_reads_the_cpus_bf16_support_unless_told(monkeypatch):
    monkeypatch.setenv("LAB_BF16_FAST", "0")
    import torch
    assert modeling.bf16_is_fast("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setenv("LAB_BF16_FAST", "1")
    assert modeling.bf16_is_fast("cpu")


def test_bf16_asked_for_where_it_is_slow_is_float32_with_one_warning(slow_bf16, recwarn):
    assert modeling.use_bf16(False) is False and not recwarn.list  # float32 asked for: nothing to say
    with pytest.warns(UserWarning, match="no native bf16.*trains in float32.*--mixed_precision no or --no_bf16"):
        assert modeling.use_bf16(True) is False


def test_bf16_where_it_is_fast_is_bf16(monkeypatch, recwarn):
    monkeypatch.setattr(modeling, "bf16_is_fast", lambda device_type: True)
    assert modeling.use_bf16(True) is True and not recwarn.list


def test_every_stage_that_asks_for_bf16_trains_in_float32_where_it_is_slow(slow_bf16, tmp_path, micro_run,
                                                                            monkeypatch):
    with pytest.warns(UserWarning, match="no native bf16"):
        assert sft.trl_args(SFTConfig.for_profile("micro", bf16=True), str(tmp_path), False).bf16 is False
    with pytest.warns(UserWarning, match="no native bf16"):
        assert reward._common_args(RewardConfig.for_profile("micro", bf16=True), str(tmp_path), False)["bf16"] is False
    with pytest.warns(UserWarning, match="no native bf16"):
        assert dpo.trl_args(DPOConfig.for_profile("micro", bf16=True), str(tmp_path)).bf16 is False
    built = {}

    def accelerator(**kwargs):
        built.update(kwargs)
        raise RuntimeError("stop here")  # the precision is decided; nothing needs to train

    monkeypatch.setattr(pretrain, "fresh_accelerator", accelerator)
    with pytest.warns(UserWarning, match="no native bf16"), pytest.raises(RuntimeError, match="stop here"):
        pretrain.pretrain(PretrainConfig.for_profile("micro", mixed_precision="bf16"), micro_run / "tokenizer",
                          tmp_path / "base", WorldConfig.for_profile("micro"))
    assert built["mixed_precision"] == "no"
    assert PPOConfig.for_profile("micro").mixed_precision == "bf16"  # what test_ppo's trainers then run in float32


def test_ppo_asked_for_bf16_where_it_is_slow_runs_its_forward_passes_in_float32(slow_bf16, sft_root):
    from lab_utils import ppo, stages
    import torch
    root = stages.ensure("reward", "micro", sft_root)
    cfg = PPOConfig.for_profile("micro", mixed_precision="bf16")
    policy, ref_model, value_model, reward_model, tok = ppo.load_models(cfg, root / "sft", root / "reward")
    with pytest.warns(UserWarning, match="no native bf16"):
        trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, ["Say hi.", "Say bye."],
                                 log=lambda *_: None)
    with trainer.autocast():
        assert not torch.is_autocast_enabled("cpu")
