"""Stage 4 contracts of the PPO loop (the tensor math is pinned in test_ppo_math.py): the first minibatch sees
ratio 1, KL 0 against an identical reference, the reward read where the reward model was trained to read it,
resume, and a toy task on which PPO must raise the reward."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from lab_utils import checkpoints as ck
from lab_utils import modeling, ppo, ppo_math, reward, stages
from lab_utils.config import PPOConfig
from lab_utils.errors import LabError
from lab_utils.reward import RewardModel

from conftest import before_eos, with_spare_rows


@pytest.fixture(scope="module")
def run_root(sft_root) -> Path:
    """tokenizer, base, SFT and reward models on micro (the reward model built here unless test_reward did)."""
    return stages.ensure("reward", "micro", sft_root)


def make_trainer(root: Path, out: Path | None = None, **changes) -> ppo.PPOTrainer:
    cfg = PPOConfig.for_profile("micro", **changes)
    policy, ref_model, value_model, reward_model, tok = ppo.load_models(cfg, root / "sft", root / "reward")
    return ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, make_trainer.prompts, out_dir=out,
                          log=lambda *_: None)


make_trainer.prompts = [f"Say something about {w}." for w in ("cats", "Paris", "apples", "rain", "music", "maths",
                                                                "tea", "ice")]


def test_an_earlier_bf16_trainer_does_not_decide_the_precision(run_root):
    """accelerate keeps one state per process, and a `Trainer` with bf16=True (the reward stage) leaves it at bf16:
    PPO's accelerator must not then wrap the models in a second autocast, nor must asking for "no" fail."""
    from accelerate import Accelerator

    from lab_utils.modeling import fresh_accelerator

    Accelerator(cpu=True, mixed_precision="bf16")  # what the reward stage's trainer leaves behind
    trainer = make_trainer(run_root, mixed_precision="no")
    assert trainer.acc.mixed_precision == "no"
    assert not hasattr(trainer.policy, "_original_forward")  # accelerate's autocast wrapper is not there
    assert fresh_accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"


@pytest.mark.parametrize("sharded", ["FSDP", "DEEPSPEED"])
def test_an_accelerate_setup_that_shards_the_weights_is_refused(monkeypatch, sharded):
    """Pretraining and PPO save the main process's weights: under FSDP or DeepSpeed that copy is a shard, so their
    accelerator refuses such a setup in one line instead of saving a partial model."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lab_utils import modeling

    monkeypatch.setattr(modeling, "Accelerator", lambda **kw: SimpleNamespace(
        distributed_type=DistributedType[sharded], **kw))
    with pytest.raises(LabError, match=rf"accelerate is set up for {sharded}.*Fix: choose multi-GPU \(DDP\)"):
        modeling.fresh_accelerator(cpu=True)
    monkeypatch.setattr(modeling, "Accelerator", lambda **kw: SimpleNamespace(
        distributed_type=DistributedType.MULTI_GPU, **kw))
    assert modeling.fresh_accelerator(cpu=False).cpu is False  # DDP goes through


@pytest.mark.parametrize("precision", ["bf16", "no"])
def test_first_minibatch_has_ratio_one_and_no_clipping(run_root, precision):
    """Read before the log rounds them (to 5 decimals): the policy has not moved, so the recomputed log-probabilities
    are the rollout's (exactly, here: 1.0 and 0.0)."""
    trainer = make_trainer(run_root, mixed_precision=precision)
    first = trainer.optimise(trainer.rollout(trainer.prompts))
    assert first["first_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert first["first_approxkl"] == pytest.approx(0.0, abs=1e-9) and first["first_clipfrac"] == 0.0
    row = trainer.step()  # and the log carries them
    assert row["first_ratio_mean"] == pytest.approx(1.0, abs=1e-5) and row["first_clipfrac"] == 0.0


def test_unknown_mixed_precision_is_a_lab_error(run_root):
    with pytest.raises(LabError, match="mixed_precision"):
        make_trainer(run_root, mixed_precision="fp16")


def test_response_logits_equal_the_full_forward_pass(run_root):
    """The LM head runs on the response positions only: the same logits as slicing a full forward pass."""
    trainer = make_trainer(run_root, mixed_precision="no")
    b = trainer.rollout(trainer.prompts[:4])
    model = trainer.acc.unwrap_model(trainer.policy).eval()
    ids = torch.cat([b["query"], b["response"]], 1)
    mask = torch.cat([b["query_mask"], b["loss_mask"].long()], 1)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=ppo.position_ids(mask)).logits
        kept = ppo.response_logits(model, b["query"], b["query_mask"], b["response"], b["loss_mask"], temperature=0.7)
    width = b["response"].shape[1]
    assert kept.shape == (4, width, model.config.vocab_size)
    assert torch.allclose(kept, full[:, -width - 1:-1] / 0.7, atol=1e-5)


def _alone(b: dict, i: int) -> tuple[torch.Tensor, int, int]:
    """Row i of a rollout without any padding: its prompt tokens and response tokens, one unpadded sequence, with
    the number of prompt tokens and of response tokens."""
    prompt = b["query"][i][b["query_mask"][i].bool()]
    response = b["response"][i][b["loss_mask"][i].bool()]
    return torch.cat([prompt, response])[None], len(prompt), len(response)


def _ragged_rollout(trainer) -> dict:
    """A rollout of 4 prompts of different lengths (left padding) whose first two responses are cut short (right
    padding; the micro model rarely samples EOS, so the cut is made here)."""
    b = trainer.rollout(trainer.prompts[:4])
    pad = trainer.tok.pad_token_id
    for i, n in ((0, 2), (1, 5)):
        b["response"][i, n:], b["loss_mask"][i, n:] = pad, 0
    assert (b["query_mask"] == 0).any(), "the prompts should need left padding"
    return b


def test_left_padded_logits_equal_each_row_run_alone(run_root):
    """Padding must change nothing: padding is never attended to, so each row's response logits equal those of the
    row run by itself, with no mask and the model's own positions. (The test above uses `position_ids` on both sides;
    this one does not. Under rotary embeddings a constant shift of every position would not change the logits
    either, so the positions themselves are pinned by the GPT-2 test below, whose positions are absolute.)"""
    trainer = make_trainer(run_root, mixed_precision="no")
    b = _ragged_rollout(trainer)
    model = trainer.acc.unwrap_model(trainer.policy).eval()
    with torch.no_grad():
        batched = ppo.response_logits(model, b["query"], b["query_mask"], b["response"], b["loss_mask"],
                                      temperature=0.7)
        for i in range(4):
            ids, n_prompt, n_response = _alone(b, i)
            alone = model(input_ids=ids).logits[0, n_prompt - 1:-1] / 0.7  # (T_i, V): what predicted each token
            assert torch.allclose(batched[i, :n_response], alone, atol=1e-4)


def test_a_left_padded_row_starts_at_position_0():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])  # (B, L): 0 = padding
    assert ppo.position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 2, 2]]


def test_left_padding_changes_nothing_for_a_model_with_absolute_positions():
    """GPT-2 adds a learned embedding of each token's position: a left-padded row gets the positions of the row run
    alone only if `position_ids` come from the attention mask (rotary Llama hides a wrong position almost entirely).
    Both the policy's logits and the value model's values."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=64, n_layer=2, n_head=2, pad_token_id=0,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    policy, value = GPT2LMHeadModel(config).eval(), ppo.ValueModel(GPT2ForSequenceClassification(config).eval())
    query = torch.tensor([[0, 0, 0, 5, 6], [7, 8, 9, 10, 11]])  # row 0 is left-padded
    query_mask = (query != 0).long()
    response, response_mask = torch.tensor([[12, 13, 14], [15, 16, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    with torch.no_grad():
        logits = ppo.response_logits(policy, query, query_mask, response, response_mask, temperature=0.7)
        values = ppo.response_values(value, query, query_mask, response, response_mask)
        for i in range(2):
            ids = torch.cat([query[i][query_mask[i].bool()], response[i][response_mask[i].bool()]])[None]
            n_prompt, n_response = int(query_mask[i].sum()), int(response_mask[i].sum())
            alone = policy(input_ids=ids).logits[0, n_prompt - 1:-1] / 0.7
            torch.testing.assert_close(logits[i, :n_response], alone, atol=1e-5, rtol=1e-5)
            per_position = value(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])[0]
            torch.testing.assert_close(values[i, :n_response], per_position[n_prompt - 1:-1], atol=1e-5, rtol=1e-5)


def test_the_rollouts_log_probabilities_are_those_of_the_distribution_it_sampled(run_root, monkeypatch):
    """Sampling at temperature T and the log-probabilities recomputed with logits / T must describe one distribution:
    `generate`'s own scores of the tokens it drew (after its temperature) equal the rollout's log-probabilities. A
    temperature left out on either side shows at once (micro samples at 0.7; float32, so the cached and the full
    forward pass agree to rounding)."""
    trainer = make_trainer(run_root, mixed_precision="no")
    assert trainer.cfg.temperature != 1.0
    policy = trainer.acc.unwrap_model(trainer.policy)
    steps = []
    generate = policy.generate

    def generate_with_scores(**kwargs):
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        steps.extend(out.scores)  # (B, V) per step: the processed logits each token was drawn from
        return out.sequences

    monkeypatch.setattr(policy, "generate", generate_with_scores)
    b = trainer.rollout(trainer.prompts)
    T = b["response"].shape[1]
    sampled = torch.stack([torch.log_softmax(s.float(), -1) for s in steps[:T]], 1)  # (B, T, V)
    by_generate = sampled.gather(-1, b["response"].unsqueeze(-1)).squeeze(-1)
    real = b["loss_mask"].bool()
    torch.testing.assert_close(b["logprobs"][real], by_generate[real], atol=1e-4, rtol=0)


def test_a_model_with_spare_rows_never_samples_them_and_leaves_them_out_of_its_log_probabilities(run_root,
                                                                                                monkeypatch):
    """A spare id decodes to nothing, and the reward model's row for it never trained; nor did PAD's, on a hub model
    whose PAD the lab added. The rollout suppresses both, and its log-probabilities are those of the distribution it
    sampled from (with the spare rows and PAD in, each would be lower by the mass they hold)."""
    cfg = PPOConfig.for_profile("micro", mixed_precision="no")
    policy, ref_model, value_model, reward_model, tok = ppo.load_models(cfg, run_root / "sft", run_root / "reward")
    prompts = make_trainer.prompts
    for m in (policy, ref_model):
        with_spare_rows(m, tok, prompts)
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    torch.manual_seed(0)
    unsuppressed = policy.generate(**enc, do_sample=True, top_k=0, max_new_tokens=cfg.response_length,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    drawn = before_eos(unsuppressed[:, enc["input_ids"].shape[1]:], tok.eos_token_id)
    assert (drawn >= len(tok)).any() and (drawn == tok.pad_token_id).any()  # the premise: they would be sampled
    trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, prompts, log=lambda *_: None)
    steps = []
    unwrapped = trainer.acc.unwrap_model(trainer.policy)
    generate = unwrapped.generate

    def generate_with_scores(**kwargs):
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        steps.extend(out.scores)  # (B, V + spare) per step, after the suppression and the temperature
        return out.sequences

    monkeypatch.setattr(unwrapped, "generate", generate_with_scores)
    b = trainer.rollout(prompts)
    answers = b["response"][b["loss_mask"].bool()]
    assert answers.max() < len(tok) and not (answers == tok.pad_token_id).any()
    T = b["response"].shape[1]
    sampled = torch.stack([torch.log_softmax(s.float(), -1) for s in steps[:T]], 1)  # (B, T, V + spare)
    by_generate = sampled.gather(-1, b["response"].unsqueeze(-1)).squeeze(-1)
    real = b["loss_mask"].bool()
    torch.testing.assert_close(b["logprobs"][real], by_generate[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(b["ref_logprobs"][real], b["logprobs"][real], atol=1e-4, rtol=0)  # the same model
    stats = trainer.optimise(b)  # the PPO epochs read the same distribution: the first ratio is exactly 1
    assert stats["first_ratio_mean"] == pytest.approx(1.0, abs=1e-6)


def test_values_are_read_where_each_response_token_was_chosen(run_root):
    """`response_values` gives token t of a response the value head's output at the position that chose it (the
    prompt's last token for t = 0): the same as the score head on each row's hidden states run alone."""
    trainer = make_trainer(run_root, mixed_precision="no")
    b = trainer.rollout(trainer.prompts[:4])
    values = ppo.response_values(trainer.value_model, b["query"], b["query_mask"], b["response"], b["loss_mask"])
    assert torch.allclose(values, b["values"], atol=1e-5)  # the rollout keeps these values
    b = _ragged_rollout(trainer)
    value = trainer.acc.unwrap_model(trainer.value_model).model.eval()
    with torch.no_grad():
        batched = ppo.response_values(trainer.value_model, b["query"], b["query_mask"], b["response"], b["loss_mask"])
        assert batched.shape == b["response"].shape
        for i in range(4):
            ids, n_prompt, n_response = _alone(b, i)
            per_position = value.score(value.base_model(input_ids=ids).last_hidden_state)[0, :, 0]  # (L,)
            assert torch.allclose(batched[i, :n_response], per_position[n_prompt - 1:-1], atol=1e-4)


def test_kl_is_zero_against_an_identical_reference(run_root):
    trainer = make_trainer(run_root)
    batch = trainer.rollout(trainer.prompts[:4])
    assert torch.allclose(batch["logprobs"], batch["ref_logprobs"], atol=1e-5)
    assert batch["kl"].abs().max() < 1e-5


def test_lora_reference_is_the_policy_with_its_adapter_off(run_root):
    """The reference of a LoRA policy is the policy with its adapter switched off: the SFT model itself. LoRA's B
    starts at 0 (adapter on == off), so B is drawn non-zero first, as after some training; otherwise a reference
    that kept the adapter on would pass too."""
    from lab_utils import ppo_math as M

    trainer = make_trainer(run_root, lora=True, mixed_precision="no")
    assert trainer.ref_model is None
    policy = trainer.acc.unwrap_model(trainer.policy)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, weight in policy.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.05)
    b = trainer.rollout(trainer.prompts[:4])
    sft = modeling.load_causal_lm(str(run_root / "sft"))[0].eval()
    with torch.no_grad():
        sft_logprobs = M.logprobs_from_logits(
            ppo.response_logits(sft, b["query"], b["query_mask"], b["response"], b["loss_mask"],
                                trainer.cfg.temperature), b["response"])
    mask = b["loss_mask"].bool()
    assert torch.allclose(b["ref_logprobs"][mask], sft_logprobs[mask], atol=1e-4)  # the adapter was off
    assert (b["logprobs"] - b["ref_logprobs"])[mask].abs().max() > 1e-2  # ... and it is on for the policy


def test_rollout_truncates_after_eos_and_penalises_missing_eos(run_root, monkeypatch):
    trainer = make_trainer(run_root, response_length=6)
    eos, pad = trainer.tok.eos_token_id, trainer.tok.pad_token_id
    policy = trainer.acc.unwrap_model(trainer.policy)
    sample = policy.generate

    def ends_some(input_ids, **kwargs):  # rows 0 and 1 sample EOS mid-answer and go on; the others never do
        out = sample(input_ids=input_ids, **kwargs)
        start = input_ids.shape[1]
        response = out[:, start:]
        response[response == eos] = eos + 1 if eos + 1 != pad else eos + 2
        response[0, 1], response[1, 3] = eos, eos
        return out

    monkeypatch.setattr(policy, "generate", ends_some)
    b = trainer.rollout(trainer.prompts)
    assert b["ended"].tolist() == [True, True] + [False] * (len(trainer.prompts) - 2)
    assert b["loss_mask"][0].sum() == 2 and b["loss_mask"][1].sum() == 4  # up to and including the first EOS
    for response, mask, ended in zip(b["response"], b["loss_mask"], b["ended"]):
        n = int(mask.sum())
        assert (response[n:] == pad).all() and (eos not in response[: n - 1].tolist())
        assert bool(ended) == (response[n - 1].item() == eos)
    expected = b["raw_scores"] + trainer.cfg.missing_eos_penalty * (~b["ended"]).float()
    assert torch.allclose(b["scores"], expected)


def test_columns_past_every_rows_end_are_dropped(run_root, monkeypatch):
    """Generation can run past the point where every row has ended (under several processes each waits for the
    others): those columns are padding in every row, and the per-token tensors leave them out."""
    trainer = make_trainer(run_root, response_length=6)
    eos, pad = trainer.tok.eos_token_id, trainer.tok.pad_token_id
    policy = trainer.acc.unwrap_model(trainer.policy)
    sample, seen = policy.generate, {}

    def all_end_early(input_ids, **kwargs):  # 6 columns sampled; every row has ended by the third
        out = sample(input_ids=input_ids, **kwargs | {"min_new_tokens": kwargs["max_new_tokens"]})
        response = out[:, input_ids.shape[1]:]
        response[response == eos] = eos + 1 if eos + 1 != pad else eos + 2
        response[:, 2], response[0, 1] = eos, eos
        seen["width"] = response.shape[1]
        return out

    monkeypatch.setattr(policy, "generate", all_end_early)
    b = trainer.rollout(trainer.prompts)
    assert seen["width"] == 6 and b["response"].shape[1] == 3 and b["loss_mask"][:, -1].any()
    assert b["loss_mask"][0].sum() == 2 and (b["loss_mask"][1:].sum(1) == 3).all()
    for key in ("logprobs", "ref_logprobs", "values", "advantages", "returns"):
        assert b[key].shape == b["response"].shape, key


@pytest.mark.parametrize("lora", [False, True], ids=["reference model", "adapter off"])
def test_the_rollout_in_groups_of_rows_equals_it_in_one(run_root, monkeypatch, lora):
    """A real vocabulary makes the rollout's logits gigabytes: they are taken in groups of rows under a cap, and the
    log-probabilities, the reference's and the entropy are those of one pass (with LoRA, the adapter is switched off
    for the reference in every group)."""
    trainer = make_trainer(run_root, mixed_precision="no", lora=lora)
    with torch.no_grad():  # a trained adapter: B = 0 would make the policy its own reference
        for name, weight in trainer.policy.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.05)
    torch.manual_seed(0)
    whole = trainer.rollout(trainer.prompts)
    vocab = trainer.acc.unwrap_model(trainer.policy).config.vocab_size
    monkeypatch.setattr(reward, "LOGITS_PER_BATCH", 3 * (trainer.cfg.response_length + 1) * vocab)  # 3 rows or more
    shapes, real = [], ppo.response_logits
    monkeypatch.setattr(ppo, "response_logits", lambda model, *a: shapes.append(a[2].shape[0]) or real(model, *a))
    torch.manual_seed(0)
    grouped = trainer.rollout(trainer.prompts)
    assert torch.equal(grouped["response"], whole["response"])
    assert len(shapes) > 2 and sum(shapes) == 2 * len(trainer.prompts) and max(shapes) < len(trainer.prompts)
    for key in ("logprobs", "ref_logprobs", "entropy", "kl", "advantages"):
        assert torch.allclose(torch.as_tensor(grouped[key]), torch.as_tensor(whole[key]), atol=1e-5), key
    if lora:  # the reference is the SFT model, not the policy with its adapter on
        mask = whole["loss_mask"].bool()
        assert (whole["logprobs"] - whole["ref_logprobs"])[mask].abs().max() > 1e-3


def _ends_rows_0_and_1(trainer, monkeypatch) -> None:
    """The policy's samples, with rows 0 and 1 ended by an EOS early (micro rarely samples one): padding after them."""
    eos, pad = trainer.tok.eos_token_id, trainer.tok.pad_token_id
    policy = trainer.acc.unwrap_model(trainer.policy)
    sample = policy.generate

    def ends_some(input_ids, **kwargs):
        out = sample(input_ids=input_ids, **kwargs | {"min_new_tokens": kwargs["max_new_tokens"]})
        response = out[:, input_ids.shape[1]:]
        response[response == eos] = eos + 1 if eos + 1 != pad else eos + 2
        response[0, 1], response[1, 3] = eos, eos
        return out

    monkeypatch.setattr(policy, "generate", ends_some)


def test_the_rollout_shapes_rewards_with_the_controllers_beta_and_whitens_the_advantages(run_root, monkeypatch):
    """Steps 3 of the loop, wired as the docstrings say: the per-token rewards use the KL controller's current β (not
    the starting --kl_coef), GAE its γ and λ, the returns are the raw advantages plus the values, and the
    advantages are whitened over the real tokens; the entropy is a mean over real tokens only. The policy is moved
    off the reference first, so that the KL term is not zero."""
    trainer = make_trainer(run_root, mixed_precision="no", gamma=0.9, lam=0.8, response_length=6)
    with torch.no_grad():
        for p in trainer.policy.parameters():
            p.add_(torch.randn_like(p), alpha=0.02)
    trainer.kl_ctl.value = 0.77  # as after some adaptive updates
    assert trainer.cfg.kl_coef != 0.77
    _ends_rows_0_and_1(trainer, monkeypatch)
    b = trainer.rollout(trainer.prompts)
    mask = b["loss_mask"]
    assert (mask.sum(1) < mask.shape[1]).any() and (b["kl"][mask.bool()].abs() > 1e-4).any()
    rewards, kl = ppo_math.kl_shaped_rewards(b["scores"], b["logprobs"], b["ref_logprobs"], mask, 0.77)
    raw, returns = ppo_math.gae(rewards, b["values"], mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(b["kl"], kl)
    torch.testing.assert_close(b["returns"], returns)
    torch.testing.assert_close(b["advantages"], ppo_math.masked_whiten(raw, mask))
    real = b["advantages"][mask.bool()]  # whitened: mean 0, variance 1 over the real tokens, 0 on padding
    assert abs(real.mean().item()) < 1e-5 and real.var().item() == pytest.approx(1.0, abs=1e-4)
    assert (b["advantages"][~mask.bool()] == 0).all()
    with torch.no_grad():
        logits = ppo.response_logits(trainer.policy, b["query"], b["query_mask"], b["response"], mask,
                                     trainer.cfg.temperature)
    entropy = ppo_math.entropy_from_logits(logits)
    torch.testing.assert_close(b["entropy"], ppo_math.masked_mean(entropy, mask))
    assert (b["entropy"] - entropy.mean()).abs() > 1e-4  # padding would have moved it


def test_the_first_loss_is_the_clipped_policy_loss_plus_vf_coef_times_the_value_loss(run_root):
    """Step 4's loss, wired as the docstrings say: on the first minibatch (nothing has moved yet, so the new
    log-probabilities and values are the rollout's) it is policy_loss + vf_coef · value_loss, the value loss
    regressing the values on the returns. Half the rollout, so that its advantages do not average to 0 (whitened over
    the whole rollout, they would: the policy term would be 0 whatever it was)."""
    trainer = make_trainer(run_root, mixed_precision="no", mini_batch=4, vf_coef=0.3, ppo_epochs=1)
    b = trainer.rollout(trainer.prompts)
    losses, backward = [], trainer.acc.backward
    trainer.acc.backward = lambda loss, **kw: losses.append(loss.detach().clone()) or backward(loss, **kw)
    rng = torch.get_rng_state()
    trainer.optimise(b)
    torch.set_rng_state(rng)
    idx = torch.randperm(len(b["prompts"]))[:4]  # the first minibatch optimise drew
    mb = {k: b[k][idx] for k in ("logprobs", "values", "advantages", "returns", "loss_mask")}
    cfg = trainer.cfg
    pg, _ = ppo_math.policy_loss(mb["logprobs"], mb["logprobs"], mb["advantages"], mb["loss_mask"], cfg.cliprange)
    vf, _ = ppo_math.value_loss(mb["values"], mb["values"], mb["returns"], mb["loss_mask"], cfg.cliprange_value)
    assert pg.abs() > 1e-3 and vf > 1e-3 and len(losses) == 2  # two minibatches, one epoch
    torch.testing.assert_close(losses[0], pg + 0.3 * vf, atol=1e-5, rtol=1e-4)


def test_reward_is_read_where_the_reward_model_was_trained(run_root):
    """PPO scores a left-padded batch of prompts with right-padded responses; the reward model was trained on one
    unpadded sequence per answer (BOS, prompt, answer, EOS if it ended) and reads the score at its last token.
    In float32, so that the 1e-4 tolerance measures the position read and not bf16 rounding."""
    trainer = make_trainer(run_root, mixed_precision="no")
    tok, reward_model = trainer.tok, trainer.reward_model
    prompts = [trainer.prompts[0], "Name a colour that the sky can be on a clear day in summer.", "Hi.",
               trainer.prompts[3]]
    texts, ended = ["Paris.", "It is blue, and at sunset it is red", "Yes", "The rain in Spain falls."], \
        [True, False, True, True]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    ids = [tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
           for t, e in zip(texts, ended)]
    width = max(map(len, ids))
    response = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in ids])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
    assert (enc["attention_mask"] == 0).any() and (mask == 0).any(), "the batch should need padding on both sides"
    with torch.no_grad():
        by_ppo = ppo.score_responses(reward_model, enc["input_ids"], enc["attention_mask"], response, mask)
        alone = torch.stack([reward_model.model(input_ids=torch.tensor([reward.encode(tok, p, t, e)])).logits[0, 0]
                             for p, t, e in zip(prompts, texts, ended)])
    assert torch.allclose(by_ppo, reward_model.normalise(alone), atol=1e-4)
    assert torch.allclose(by_ppo, reward_model.score(prompts, texts, ended), atol=1e-4)


def test_a_sampled_pad_is_scored_where_the_response_ends(run_root):
    """PPO samples with top-k 0, so PAD can be drawn (rarely) and stays a real token of the response. The score is
    read at the response's last real token even when that token is PAD (the classifier's own reading, at the last
    token that is not PAD, would take the token before); a response without PAD gets the classifier's number."""
    trainer = make_trainer(run_root, mixed_precision="no")
    tok, reward_model = trainer.tok, trainer.reward_model
    enc = tok([trainer.prompts[0], "Hi."], return_tensors="pt", padding=True, padding_side="left")
    words = tok("Cats are nice", add_special_tokens=False)["input_ids"]
    response = torch.tensor([words + [tok.pad_token_id], words + [tok.eos_token_id]])
    mask = torch.ones_like(response)  # the PAD of row 0 was sampled: it counts
    model = reward_model.model
    with torch.no_grad():
        by_ppo = ppo.score_responses(reward_model, enc["input_ids"], enc["attention_mask"], response, mask)
        ids = torch.cat([enc["input_ids"][0][enc["attention_mask"][0].bool()], response[0]])[None]
        per_position = model.score(model.base_model(input_ids=ids).last_hidden_state)[0, :, 0]
        seqs = [reward.encode(tok, p, "Cats are nice") for p in ("Hi.", "Say something about tea, please.")]
        classifier = model(**reward.batch(tok, seqs)).logits[:, 0]
    assert by_ppo[0].item() == pytest.approx(reward_model.normalise(per_position[-1:]).item(), abs=1e-4)
    assert abs(per_position[-1] - per_position[-2]) > 1e-3, "the test needs the two positions to score apart"
    assert by_ppo[1].item() == pytest.approx(reward_model.score(["Hi."], ["Cats are nice"])[0].item(), abs=1e-4)
    assert torch.equal(reward.raw_scores(model, tok, seqs), classifier)  # no PAD inside: the classifier's number


def assert_same_weights(a, b, atol=1e-6):
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.allclose(x, y, atol=atol), name


def straight_resumed_fresh(run_root: Path, tmp_path: Path, **settings):
    """A 3-iteration run straight through; the same run stopped after 2 (its checkpoint in tmp_path/b); and a fresh
    trainer that loaded that checkpoint and has not trained yet."""
    straight = make_trainer(run_root, tmp_path / "a", iterations=3, **settings)
    straight.train()
    resumed = make_trainer(run_root, tmp_path / "b", iterations=3, **settings)
    resumed.train(stop_at=2)
    fresh = make_trainer(run_root, tmp_path / "b", iterations=3, **settings)
    fresh.load_checkpoint(ck.latest_checkpoint(tmp_path / "b"))
    return straight, resumed, fresh


def test_checkpoint_resume_gives_the_same_run(run_root, tmp_path):
    """With the adaptive KL controller, so that a coefficient not restored would show."""
    straight, resumed, fresh = straight_resumed_fresh(run_root, tmp_path, adaptive_kl=True, kl_floor=False)
    assert fresh.iteration == 2 and fresh.kl_ctl.value == resumed.kl_ctl.value != straight.cfg.kl_coef
    fresh.train()
    assert_same_weights(straight.acc.unwrap_model(straight.policy), fresh.acc.unwrap_model(fresh.policy))
    assert [r["score"] for r in straight.history] == pytest.approx([r["score"] for r in fresh.history], abs=1e-5)
    assert [r["kl_coef"] for r in straight.history] == pytest.approx([r["kl_coef"] for r in fresh.history])
    # the table of sample responses has rows of every iteration, and the checkpoint keeps the ones before it
    shown = min(ppo.SAMPLES_PER_ITERATION, straight.cfg.rollout_batch)
    assert [s["iteration"] for s in straight.samples] == [i for i in (1, 2, 3) for _ in range(shown)]
    assert [(s["prompt"], s["response"]) for s in fresh.samples] == [(s["prompt"], s["response"])
                                                                     for s in straight.samples]
    assert [s["score"] for s in fresh.samples] == pytest.approx([s["score"] for s in straight.samples], abs=1e-3)


def test_checkpoint_resume_with_the_kl_ceiling_gives_the_same_run(run_root, tmp_path):
    """The shipped default (adaptive β with its floor at kl_coef). micro's policy hardly moves at its own learning rate
    (KL −0.03, under target, so β stays at the floor); at 5e-3 its KL reaches ~1.3 and a tiny target makes β rise."""
    straight, resumed, fresh = straight_resumed_fresh(run_root, tmp_path, adaptive_kl=True, kl_floor=True,
                                                      kl_target=1e-3, kl_horizon=8.0, lr=5e-3)
    assert fresh.kl_ctl.value == resumed.kl_ctl.value > straight.cfg.kl_coef
    assert fresh.kl_ctl.floor == straight.cfg.kl_coef
    fresh.train()
    assert [r["kl_coef"] for r in straight.history] == pytest.approx([r["kl_coef"] for r in fresh.history])
    assert_same_weights(straight.acc.unwrap_model(straight.policy), fresh.acc.unwrap_model(fresh.policy))


def test_a_lora_run_resumes_to_the_same_adapter_and_is_saved_merged(run_root, tmp_path):
    """Profile `full`'s layout: LoRA on the policy, the reference is the policy with its adapter off. The resumed run
    ends with the straight run's weights, and `save_policy` writes a plain causal LM (no adapter keys) whose logits
    are the trained policy's."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    straight, _, fresh = straight_resumed_fresh(run_root, tmp_path, lora=True, lr=5e-3)
    fresh.train()
    policy = straight.acc.unwrap_model(straight.policy)
    assert any("lora_B" in n and p.abs().max() > 0 for n, p in policy.named_parameters())  # the adapter trained
    assert_same_weights(policy, fresh.acc.unwrap_model(fresh.policy))
    ids = straight.tok(straight.prompts[:1], return_tensors="pt")  # one prompt: no padding
    with torch.no_grad():
        trained = policy.eval()(**ids).logits
    ppo.save_policy(straight, tmp_path / "rlhf")
    assert not any("lora" in k for k in load_file(tmp_path / "rlhf" / "model.safetensors"))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "rlhf").eval()
    with torch.no_grad():
        assert torch.allclose(saved(**ids).logits, trained, atol=1e-4)


def test_kl_ceiling_is_on_for_tiny_and_off_for_full():
    tiny, full = PPOConfig.for_profile("tiny"), PPOConfig.for_profile("full")
    assert tiny.adaptive_kl and tiny.kl_floor and tiny.kl_target == 1.0
    assert not full.adaptive_kl  # kl_target is tiny's; a real model's KL per response is unmeasured


def test_kl_floor_sets_the_adaptive_controllers_floor_at_kl_coef(run_root):
    assert make_trainer(run_root, adaptive_kl=True, kl_floor=True, kl_coef=0.3).kl_ctl.floor == 0.3
    assert make_trainer(run_root, adaptive_kl=True, kl_floor=False, kl_coef=0.3).kl_ctl.floor == 0.0
    assert isinstance(make_trainer(run_root, adaptive_kl=False).kl_ctl, ppo.M.FixedKLController)


def test_lab_ppo_resume_continues_from_the_last_checkpoint(run_root):
    """`lab ppo --resume` (stages.run_ppo) finds the checkpoint the trainer wrote, and a fresh run first
    removes an earlier run's checkpoints (at its first save) so that they can never be resumed into it."""
    straight = stages.run_ppo("micro", run_root, save_to="resume-a", log=lambda *_: None)
    stale = run_root / "resume-b-checkpoints" / "step-0000009"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    part = stages.run_ppo("micro", run_root, save_to="resume-b", stop_at=1, log=lambda *_: None)
    assert part["iterations"] == 1 and not stale.exists()
    assert ck.latest_checkpoint(run_root / "resume-b-checkpoints").name == "step-0000001"
    lines = []
    rest = stages.run_ppo("micro", run_root, save_to="resume-b", resume=True, log=lines.append)
    assert "[lab] ppo: resumed from step-0000001" in lines
    assert rest["iterations"] == straight["iterations"] == 2
    assert [r["score"] for r in rest["history"]] == pytest.approx([r["score"] for r in straight["history"]], abs=1e-5)
    a, _ = modeling.load_causal_lm(str(run_root / "resume-a"))
    b, _ = modeling.load_causal_lm(str(run_root / "resume-b"))
    assert_same_weights(a, b)


def test_a_fresh_run_stopped_before_its_first_checkpoint_keeps_the_earlier_ones(run_root):
    """The earlier run's checkpoints go when the fresh run saves its first, not when it starts: a Ctrl-C in its first
    iteration used to leave `lab ppo --resume` nothing to continue, though the message says the checkpoints stay."""
    ckpts = run_root / "resume-c-checkpoints"
    stages.run_ppo("micro", run_root, save_to="resume-c", stop_at=1, log=lambda *_: None)

    def ctrl_c(trainer, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stages.run_ppo("micro", run_root, save_to="resume-c", callback=ctrl_c, log=lambda *_: None)
    assert ck.latest_checkpoint(ckpts).name == "step-0000001"
    lines = []
    assert stages.run_ppo("micro", run_root, save_to="resume-c", resume=True, log=lines.append)["iterations"] == 2
    assert "[lab] ppo: resumed from step-0000001" in lines
    stages.run_ppo("micro", run_root, save_to="resume-c", save_every=0, log=lambda *_: None)  # finished, no save
    assert not ckpts.exists()  # the earlier run's are gone: a later --resume must not continue them


@pytest.mark.parametrize("damaged", ["state.pt", "policy/model.safetensors"])
def test_a_checkpoint_file_cut_short_is_one_clear_error_naming_the_step(run_root, damaged):
    stages.run_ppo("micro", run_root, save_to="resume-d", stop_at=1, log=lambda *_: None)
    step = run_root / "resume-d-checkpoints" / "step-0000001"
    with open(step / damaged, "r+b") as f:
        f.truncate(100)
    with pytest.raises(LabError, match=r"step-0000001: a file of this checkpoint cannot be read \(.*\)\. Fix: delete "
                                       r"resume-d-checkpoints/ \(this is its only checkpoint\) and run the command "
                                       r"again: it starts at the beginning"):
        stages.run_ppo("micro", run_root, save_to="resume-d", resume=True, log=lambda *_: None)


def test_lab_run_continues_an_interrupted_ppo_run_but_not_another_runs(run_root, tmp_path, capsys):
    """`lab run` resumes PPO as it resumes pretraining (resume="auto"): the checkpoint of this run's settings and
    models is continued; one of other settings starts the stage afresh, where `lab ppo --resume` would refuse."""
    root = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(run_root / folder, root / folder)
    stages.run_ppo("micro", root, stop_at=1, log=lambda *_: None)
    capsys.readouterr()
    stages.ensure("ppo", "micro", root)
    assert "[lab] ppo: resumed from step-0000001" in capsys.readouterr().out
    assert ck.read_json(root / "rlhf" / "metrics.json")["iterations"] == 2
    shutil.rmtree(root / "rlhf")
    stages.run_ppo("micro", root, stop_at=1, lr=1e-3, log=lambda *_: None)  # another run, stopped
    capsys.readouterr()
    stages.ensure("ppo", "micro", root)
    log = capsys.readouterr().out
    assert "is not this run's to continue (the checkpoint is of a run with other settings (lr 0.001 -> 3e-05))" \
           ": starting afresh" in log, log
    assert "resumed from" not in log
    assert ck.read_json(root / "rlhf" / "metrics.json")["config"]["lr"] == 3e-05


def test_lab_run_stops_at_a_damaged_ppo_checkpoint_as_at_a_damaged_pretraining_one(run_root, tmp_path):
    """A checkpoint whose state.json was cut short is one error whose fix says how to go on, not a fresh start that
    throws away the older checkpoints at its first save (what `lab run` did for PPO, not for pretraining)."""
    root = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(run_root / folder, root / folder)
    stages.run_ppo("micro", root, stop_at=1, log=lambda *_: None)
    state = ck.latest_checkpoint(root / "rlhf-checkpoints") / "state.json"
    state.write_text(state.read_text()[:20])
    with pytest.raises(ck.DamagedFile, match=r"state\.json: the file is not JSON .*Fix: .*delete this file"):
        stages.ensure("ppo", "micro", root)
    assert not (root / "rlhf").exists()


def test_resume_with_other_settings_or_models_is_one_clear_error(run_root, tmp_path):
    """The optimizer, the schedule (its base learning rate and length) and the KL coefficient come back from the
    checkpoint, so a changed flag used to be silently ignored (`--kl_coef`, `--lr`) or to bend the schedule
    (`--iterations`); and a policy trained against one reward model used to go on against a rebuilt one."""
    first = make_trainer(run_root, tmp_path, iterations=3)
    first.built_from = {"sft": "2026-11-30T10:00:00", "reward": "2026-11-30T11:00:00", "--data": "0a1b"}
    first.train(stop_at=1)
    latest = ck.latest_checkpoint(tmp_path)
    for changes, built_from, words in [
            ({"kl_coef": 0.05}, first.built_from, rf"kl_coef {first.cfg.kl_coef} -> 0.05"),
            ({"iterations": 5, "lr": 1e-4}, first.built_from, r"iterations 3 -> 5; lr 3e-05 -> 0.0001"),
            ({}, first.built_from | {"reward": "2026-11-30T12:00:00"}, r"the reward model \(built again since\)"),
            ({}, first.built_from | {"--data": "2c3d"}, r"the --data file \(changed since\)")]:
        again = make_trainer(run_root, tmp_path, **({"iterations": 3} | changes))
        again.built_from = built_from
        with pytest.raises(LabError, match=rf"other settings \({words}\).*start again without --resume"):
            again.load_checkpoint(latest)
    same = make_trainer(run_root, tmp_path, iterations=3, save_every=2, log_every=0)  # how often it saves or logs
    same.built_from = first.built_from
    same.load_checkpoint(latest)
    assert same.iteration == 1


def test_a_resume_notices_that_the_data_file_changed(run_root, tmp_path, monkeypatch):
    """What --data, --model and --reward_model name is read by path, so no stage's build records it: the checkpoint
    keeps the file's hash (a folder's stamp), or a resume would go on with other prompts or other models. The same
    file by another path resumes (it was refused as other settings)."""
    path = tmp_path / "prompts.jsonl"
    write = lambda word: path.write_text("".join(json.dumps({"instruction": f"Name a {word}, number {i}."}) + "\n"  # noqa: E731
                                                 for i in range(10)), encoding="utf-8")
    write("colour")
    run = dict(save_to="resume-data", data=str(path), log=lambda *_: None)
    stages.run_ppo("micro", run_root, stop_at=1, **run)
    saved = ck.read_json(ck.latest_checkpoint(run_root / "resume-data-checkpoints") / "state.json")["built_from"]
    assert saved["--data"] == ck.file_sha256(path) and set(saved) == {"sft", "reward", "--data"}
    monkeypatch.chdir(tmp_path)
    run["data"] = "prompts.jsonl"
    assert stages.run_ppo("micro", run_root, resume=True, stop_at=2, **run)["iterations"] == 2
    write("fruit")
    with pytest.raises(LabError, match=r"other settings \(the --data file \(changed since\)\)"):
        stages.run_ppo("micro", run_root, resume=True, **run)


def test_a_full_checkpoint_is_not_loaded_into_a_lora_policy(run_root, tmp_path):
    make_trainer(run_root, tmp_path, iterations=3).train(stop_at=1)
    meta = ck.read_json(ck.latest_checkpoint(tmp_path) / "state.json")
    del meta["config"]  # a checkpoint from before the settings were saved: the weights still have to match
    ck.write_json(ck.latest_checkpoint(tmp_path) / "state.json", meta)
    with pytest.raises(LabError, match="is not this LoRA policy's adapter"):
        make_trainer(run_root, tmp_path, iterations=3, lora=True).load_checkpoint(ck.latest_checkpoint(tmp_path))


def test_a_reward_model_with_another_tokenizer_is_refused(run_root, tmp_path):
    """The value and reward models read the policy's token ids: another vocabulary would score other text."""
    import shutil

    from lab_utils.tokenizer import train_tokenizer

    other = tmp_path / "reward"
    shutil.copytree(run_root / "reward", other)
    train_tokenizer(["a different corpus", "with other merges"], 300).save_pretrained(other)
    with pytest.raises(LabError, match="the reward model's tokenizer is not the policy's"):
        ppo.load_models(PPOConfig.for_profile("micro"), run_root / "sft", other)


def test_lab_ppo_reward_model_flag_uses_that_folder(run_root, tmp_path, capsys):
    """`--reward_model PATH` used to land in a Python argument of the same name (a `RewardModel` object): without a
    reward stage in the run folder it said there was none, with one it crashed on the string."""
    import shutil

    from lab_utils.cli import main

    out = tmp_path / "run"
    shutil.copytree(run_root / "sft", out / "sft")  # a run folder with no reward stage
    shutil.copytree(run_root / "reward", tmp_path / "my-reward")
    assert main(["ppo", "--profile", "micro", "--out", str(out), "--reward_model", str(tmp_path / "my-reward"),
                 "--iterations", "1"]) == 0
    assert "[lab] ppo:" in capsys.readouterr().out
    assert ck.read_json(out / "rlhf-checkpoints" / "step-0000001" / "state.json")["config"]["reward_model"] == \
        str(tmp_path / "my-reward")


def test_a_rollout_of_one_episode_is_a_lab_error(run_root):
    """Advantages are whitened over the batch's real tokens; one response of one token has no variance."""
    with pytest.raises(LabError, match="--rollout_batch 1 gives each of the 1 process"):
        make_trainer(run_root, rollout_batch=1, mini_batch=1)


def test_a_rollout_that_does_not_split_into_equal_minibatches_is_a_lab_error(run_root):
    """Each minibatch's loss is a mean over its own tokens and a step averages its minibatches: 8 episodes in
    minibatches of 3, 3 and 2 would weigh an episode of the last one half as much again (trl refuses it too)."""
    with pytest.raises(LabError, match="--rollout_batch 8 does not split into minibatches of --mini_batch 3"):
        make_trainer(run_root, rollout_batch=8, mini_batch=3)


def test_one_prompt_is_a_lab_error_too(run_root):
    """A rollout draws min(rollout_batch, prompts) prompts: one prompt would be a rollout of one episode."""
    cfg = PPOConfig.for_profile("micro")
    policy, ref_model, value_model, reward_model, tok = ppo.load_models(cfg, run_root / "sft", run_root / "reward")
    with pytest.raises(LabError, match="1 prompt\\(s\\) give each of the 1 process"):
        ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, ["Say something."], log=lambda *_: None)
    said = []
    ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, ["Say something.", "Say more."],
                   log=said.append)
    assert said == [f"only 2 prompts: each rollout answers 2 of them, not --rollout_batch {cfg.rollout_batch}"]


def test_fewer_prompts_than_a_rollout_are_cut_to_whole_minibatches(run_root):
    """A rollout draws min(rollout_batch, prompts) prompts, but past one minibatch only whole ones: 6 prompts in
    minibatches of 4 would leave a last minibatch of 2 whose episodes weigh twice as much (micro: rollout 8, mini 4)."""
    cfg = PPOConfig.for_profile("micro")
    assert (cfg.rollout_batch, cfg.mini_batch) == (8, 4)
    policy, ref_model, value_model, reward_model, tok = ppo.load_models(cfg, run_root / "sft", run_root / "reward")
    said = []
    six = [f"Say something about {w}." for w in ("cats", "Paris", "apples", "rain", "music", "tea")]
    trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, six, log=said.append)
    assert said == ["only 6 prompts: each rollout answers 4 of them (whole minibatches of --mini_batch 4), "
                    "not --rollout_batch 8"]
    assert trainer.step()["episodes"] == 4
    assert [ppo.episodes_per_rollout(PPOConfig.for_profile("tiny"), n) for n in (3, 8, 12, 63, 64, 500)] == \
        [3, 8, 8, 56, 64, 64]  # tiny: rollout 64, minibatches of 8
    assert ppo.episodes_per_rollout(cfg, 3, n_proc=2) == 2  # equal shares first


def test_learning_rate_decays_linearly_to_zero(run_root):
    trainer = make_trainer(run_root, iterations=4)
    trainer.train()
    lr = trainer.cfg.lr
    assert [r["lr"] for r in trainer.history] == pytest.approx([lr, 0.75 * lr, 0.5 * lr, 0.25 * lr])
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0


def test_a_shorter_last_accumulation_group_is_averaged_over_its_own_minibatches(run_root):
    """micro: 8 episodes in minibatches of 4 → 2 per epoch. grad_accum 3 leaves one group of 2, which must give
    exactly the step of grad_accum 2 (dividing by 3 would shrink it)."""
    a = make_trainer(run_root, grad_accum=2)
    a.step()  # before building b: each trainer seeds the global torch generator it samples with
    b = make_trainer(run_root, grad_accum=3)
    b.step()
    for (name, x), (_, y) in zip(a.acc.unwrap_model(a.policy).named_parameters(),
                                 b.acc.unwrap_model(b.policy).named_parameters()):
        assert torch.equal(x, y), name


def test_the_trainer_turns_dropout_off_so_the_first_minibatch_is_on_policy(run_root):
    """The micro models have no dropout to begin with; given models whose attention drops half its weights in
    training mode, the trainer must switch that off, or the first minibatch's ratio would not be 1."""
    cfg = PPOConfig.for_profile("micro", mixed_precision="no")
    models = ppo.load_models(cfg, run_root / "sft", run_root / "reward")
    policy, ref_model, value_model, reward_model, tok = models
    layers = [m for model in (policy, ref_model, value_model, reward_model.model) for m in model.modules()
              if isinstance(getattr(m, "attention_dropout", None), float)]
    assert layers
    for layer in layers:
        layer.attention_dropout = 0.5
    trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, make_trainer.prompts,
                             log=lambda *_: None)
    first = trainer.optimise(trainer.rollout(trainer.prompts))
    assert first["first_ratio_mean"] == pytest.approx(1.0, abs=1e-6) and first["first_clipfrac"] == 0.0


def test_disable_dropout_reaches_modules_and_attention_layers():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, attention_dropout=0.3))
    model.model.extra = nn.Dropout(0.5)  # as a value or score head may bring
    ppo.disable_dropout(model)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)


def test_kl_negative_for_three_iterations_raises_the_alarm(run_root):
    lines = []
    trainer = make_trainer(run_root)
    trainer.log = lines.append
    rows = [{"kl": kl, "kl_se": 0.02} for kl in (-0.1, -0.2, 0.3, -0.1, -0.1, -0.1)]
    with pytest.warns(UserWarning, match="KL has been negative for 3 iterations"):
        for row in rows:
            trainer._check_kl(row)
    assert [r["kl_alarm"] for r in rows] == [False, False, False, False, False, True]
    assert len(lines) == 1 and lines[0].startswith("[lab] ALARM")


def test_kl_below_zero_within_its_noise_raises_no_alarm(run_root):
    """Near the reference the true KL is ~0 and a batch's estimate dips below zero by chance (seen with LoRA)."""
    trainer = make_trainer(run_root)
    trainer.log = lambda *_: None
    rows = [{"kl": kl, "kl_se": 0.003} for kl in (-0.002, -0.0032, -0.0009, -0.005, -0.001)]
    for row in rows:
        trainer._check_kl(row)
    assert not any(r["kl_alarm"] for r in rows)
    rows = [{"kl": -0.0065, "kl_se": 0.003} for _ in range(3)]  # more than two standard errors below, three times
    with pytest.warns(UserWarning, match="KL has been negative for 3 iterations"):
        for row in rows:
            trainer._check_kl(row)
    assert rows[-1]["kl_alarm"]


class TokenLover(nn.Module):
    """A stand-in reward model: the share of a sequence's last 8 real tokens that are `token`."""

    def __init__(self, token: int, pad: int):
        super().__init__()
        self.token, self.pad = token, pad
        self.config = types.SimpleNamespace()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    @property
    def device(self):
        return self.anchor.device

    def forward(self, input_ids, attention_mask, **_):
        ends = attention_mask.sum(1)
        rows = [ids[max(0, e - 8): e] for ids, e in zip(input_ids, ends)]
        share = torch.stack([(r == self.token).float().mean() for r in rows])
        return types.SimpleNamespace(logits=share[:, None] * 10)


def test_ppo_raises_the_reward_on_a_toy_task(run_root):
    """A reward model that likes one token: within a few iterations the policy says it more."""
    cfg = PPOConfig.for_profile("micro", iterations=8, rollout_batch=16, mini_batch=8, ppo_epochs=4,
                                response_length=8, lr=1e-2, kl_coef=0.0, adaptive_kl=False, temperature=1.0,
                                missing_eos_penalty=0.0)
    policy, ref_model, value_model, _, tok = ppo.load_models(cfg, run_root / "sft", run_root / "reward")
    liked = tok(".", add_special_tokens=False)["input_ids"][0]  # the full stop: a token of its own, common
    reward_model = RewardModel(TokenLover(liked, tok.pad_token_id), tok)
    trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok,
                             [f"Tell me about {i}." for i in range(32)], log=lambda *_: None)
    history = trainer.train()
    start, end = history[0]["score"], sum(r["score"] for r in history[-2:]) / 2
    assert end > start + 3.0, [r["score"] for r in history]  # measured: 0.08 → 6.3, 7.7 (of at most 10)


def test_a_policy_trained_against_a_reward_model_passed_in_is_not_saved_as_the_rlhf_stage(run_root):
    """run_ppo(reward_override=...) records no build to check, and the stage would be reused as a regular RLHF
    model by `lab run`; notebook 05's reward-hacking run saves to rlhf-hacked."""
    flawed = RewardModel.load(run_root / "reward")
    before = sorted(p.name for p in run_root.iterdir())
    with pytest.raises(LabError, match=r"reward_override.*Fix: give it a folder of its own: save_to='rlhf-"):
        stages.run_ppo("micro", run_root, reward_override=flawed, log=lambda *_: None)
    assert sorted(p.name for p in run_root.iterdir()) == before


def test_missing_models_are_lab_errors(tmp_path, run_root):
    # a mistyped --reward_model was told to run `lab reward`, which writes the run's own folder, not the one typed
    with pytest.raises(LabError, match="reward: no reward model for PPO: no such folder. Fix: check the path"):
        ppo.load_models(PPOConfig.for_profile("micro"), run_root / "sft", tmp_path / "reward")
    with pytest.raises(LabError, match="tokenizer: no reward model for PPO: no model in this folder .no config.json."):
        ppo.load_models(PPOConfig.for_profile("micro"), run_root / "sft", run_root / "tokenizer")
    with pytest.raises(LabError, match="sft: no such model folder .*Fix: check the path, or build it first"):
        ppo.load_models(PPOConfig.for_profile("micro"), tmp_path / "sft", run_root / "reward")


def test_run_ppo_then_eval_reports_reward_and_head_to_head(run_root):
    m = stages.run_ppo("micro", run_root, log=lambda *_: None)
    for key in ("iterations", "episodes", "episodes_per_s", "reward_start", "reward_end", "kl_end", "wall_s"):
        assert key in m
    beta = PPOConfig.for_profile("micro").kl_coef  # micro, like tiny, has the KL ceiling: β never under kl_coef
    assert all(r["kl_coef"] >= beta for r in m["history"])  # the floor held at every iteration
    assert (run_root / "rlhf" / "model.safetensors").is_file()
    results = stages.run_eval("micro", run_root)
    assert set(results) == {"base", "sft", "rlhf"} and all("mean_reward" in r for r in results.values())
    duel = results["rlhf"]["head_to_head_vs_sft"]
    assert duel["n"] == results["rlhf"]["n_prompts"]
    report = json.loads((run_root / "report.json").read_text())
    assert report["stages"]["ppo"]["episodes"] == m["episodes"] and "win_rate_vs_sft" in report["eval"]["rlhf"]
    assert "responses" not in report["eval"]["rlhf"]  # the report keeps numbers, not every answer


def test_bench_measures_ppo_and_sampling_throughput(tokenizer):
    from lab_utils.bench import ppo_throughput
    from lab_utils.config import PretrainConfig

    r = ppo_throughput(PretrainConfig.for_profile("micro"), PPOConfig.for_profile("micro"), tokenizer, iterations=1)
    assert r["ppo_episodes_per_s"] > 0 and r["generation_tokens_per_s"] > 0


def test_lab_ppo_data_optimises_on_the_files_prompts(run_root, tmp_path):
    """`lab ppo --data`: the file's distinct prompts, rendered as SFT renders them; one over max_prompt_length is
    left out and counted; the world's prompts are not used."""
    from lab_utils.tokenizer import render_alpaca

    records = [{"instruction": f"Name a colour you like, number {i}."} for i in range(10)]
    records += [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}, {"prompt": "What is 2+2?"},
                {"instruction": "Repeat: " + "word " * 200}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with pytest.warns(UserWarning, match="1 of 12 PPO prompts are longer than max_prompt_length=300"):
        m = stages.run_ppo("micro", run_root, save_to="from-file", data=str(path), max_prompt_length=300,
                           log=lambda *_: None)
    assert (m["n_prompts"], m["n_prompts_too_long"], m["data"]) == (11, 1, str(path))
    allowed = {render_alpaca(r.get("instruction", r.get("prompt")), "") for r in records[:-1]}
    assert m["samples"] and {s["prompt"] for s in m["samples"]} <= allowed
    assert m["config"]["data"] == str(path)


def test_a_prompt_that_leaves_no_room_for_the_response_in_the_context_is_left_out(run_root, tmp_path):
    """A model with learned positions (GPT-2's) has no row past its context: a prompt of 506 tokens and a 48-token
    response crashed the rollout with an IndexError after a warning. Such prompts are left out and counted, as
    those over max_prompt_length are (micro: 512 positions, 12 response tokens, max_prompt_length 512)."""
    from lab_utils.tokenizer import render_alpaca

    policy, tok = modeling.load_causal_lm(str(run_root / "sft"))
    ctx = policy.config.max_position_embeddings
    long = next(q for k in range(80, 600) if 500 < len(tok(render_alpaca(q := "word " * k))["input_ids"]) <= 512)
    path = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"Name a colour you like, number {i}."} for i in range(6)] + [{"instruction": long}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.warns(UserWarning, match=rf"1 of 7 PPO prompts are longer than {ctx - 12} tokens, which leave room "
                                         rf"for --response_length 12 in the model's context of {ctx}"):
        m = stages.run_ppo("micro", run_root, save_to="past-context", data=str(path), iterations=1, save_every=0,
                           log=lambda *_: None)
    assert (m["n_prompts"], m["n_prompts_too_long"]) == (6, 1)
    with pytest.raises(LabError, match=rf"--response_length {ctx} leaves no room for a prompt in the model's "
                                       rf"context of {ctx} positions"):
        stages.run_ppo("micro", run_root, save_to="past-context", response_length=ctx, stop_at=1, save_every=0,
                       log=lambda *_: None)


def test_lab_ppo_data_with_every_prompt_too_long_is_one_clear_error(run_root, tmp_path):
    path = tmp_path / "long.json"
    path.write_text(json.dumps([{"prompt": "word " * 600}]), encoding="utf-8")
    with pytest.raises(LabError, match="longer than max_prompt_length=300") as err:
        stages.run_ppo("micro", run_root, save_to="too-long", data=str(path), max_prompt_length=300,
                       log=lambda *_: None)
    assert str(path) in str(err.value) and "--max_prompt_length" in str(err.value)


def test_lab_ppo_data_keeps_a_seeded_sample_of_n_prompts(run_root, tmp_path):
    from lab_utils.config import WorldConfig, build_world_from

    path = tmp_path / "many.json"
    path.write_text(json.dumps([{"instruction": f"Say {i}."} for i in range(50)]), encoding="utf-8")
    cfg = PPOConfig.for_profile("micro", data=str(path), n_prompts=8)
    world = build_world_from(WorldConfig.for_profile("micro"))
    _, tok = modeling.load_causal_lm(str(run_root / "sft"))
    first, n_long = stages.ppo_prompts(cfg, world, tok)
    assert len(first) == 8 and n_long == 0 and first == stages.ppo_prompts(cfg, world, tok)[0]
    assert first != stages.ppo_prompts(PPOConfig.for_profile("micro", data=str(path), n_prompts=8, seed=1), world,
                                       tok)[0]


def test_the_worlds_prompts_all_fit_tinys_max_prompt_length(tmp_path):
    """The limit leaves out none of the world's prompts, so it changes no tiny run."""
    from lab_utils.config import WorldConfig, build_world_from

    from transformers import AutoTokenizer

    stages.run_tokenizer("tiny", tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    world = build_world_from(WorldConfig.for_profile("tiny"))
    prompts, n_long = stages.ppo_prompts(PPOConfig.for_profile("tiny"), world, tok)
    assert n_long == 0 and len(prompts) == PPOConfig.for_profile("tiny").n_prompts


def test_ppo_warns_when_its_prompts_are_not_what_the_reward_model_was_trained_on(run_root, tmp_path):
    import shutil
    import warnings

    cfg = PPOConfig.for_profile("micro")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stages._warn_if_prompts_differ(cfg, run_root / "reward")  # both on the world's tasks: silent
    with pytest.warns(UserWarning, match="trained on the world's tasks, but PPO optimises on the prompts of p.jsonl"):
        stages._warn_if_prompts_differ(PPOConfig.for_profile("micro", data="p.jsonl"), run_root / "reward")
    shutil.copy(run_root / "reward" / "metrics.json", tmp_path / "metrics.json")
    metrics = ck.read_json(tmp_path / "metrics.json")
    ck.write_json(tmp_path / "metrics.json", metrics | {"config": metrics["config"] | {"data": "pairs.json"}})
    with pytest.warns(UserWarning, match="trained on the pairs of pairs.json, but PPO optimises on the world.s tasks.*--data pairs.json"):
        stages._warn_if_prompts_differ(cfg, tmp_path)


def test_ppo_under_torchrun_shares_each_batch_between_two_processes(run_root, tmp_path):
    """torchrun / accelerate launch (DDP): each process answers half of every global batch with its own samples, the
    main process logs, checkpoints (with both processes' random states), saves the policy and reports once. A run
    resumed from its first checkpoint goes on as the straight run did (each process restores its own random state)."""
    import os
    import shutil
    import subprocess
    import sys

    out = tmp_path / "run"
    for folder in ("tokenizer", "sft", "reward"):
        shutil.copytree(run_root / folder, out / folder)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cfg = PPOConfig.for_profile("micro")  # 2 iterations of 8 episodes, minibatches of 4, a checkpoint every one
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "lab_utils.cli", "ppo", "--profile", "micro",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("[lab] ppo:") == 1 and proc.stdout.count("[ppo] it    1") == 1, proc.stdout
    stage = ck.read_json(out / "report.json")["stages"]["ppo"]
    assert stage["iterations"] == cfg.iterations and stage["episodes"] == cfg.iterations * cfg.rollout_batch
    assert (out / "rlhf" / "model.safetensors").is_file()
    blob = torch.load(ck.latest_checkpoint(out / "rlhf-checkpoints") / "state.pt", weights_only=True)
    rng = blob["torch_rng_per_process"]
    assert rng.shape[0] == 2 and not torch.equal(rng[0], rng[1])  # each process samples answers of its own
    straight = ck.read_json(ck.latest_checkpoint(out / "rlhf-checkpoints") / "state.json")["history"]
    shutil.rmtree(ck.latest_checkpoint(out / "rlhf-checkpoints"))  # as if stopped after the first iteration
    assert ck.latest_checkpoint(out / "rlhf-checkpoints").name.endswith("1")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "lab_utils.cli", "ppo", "--profile", "micro",
                           "--out", str(out), "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step-0000001" in proc.stdout + proc.stderr
    resumed = ck.read_json(ck.latest_checkpoint(out / "rlhf-checkpoints") / "state.json")["history"]
    untimed = [[{k: v for k, v in it.items() if k != "wall_s"} for it in h] for h in (straight, resumed)]
    assert len(straight) == cfg.iterations and untimed[0] == untimed[1]


def test_global_batches_must_share_out_equally(run_root, monkeypatch):
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 3))
    with pytest.raises(LabError, match="shared out equally among the 3 processes"):
        make_trainer(run_root)


def test_the_lora_policy_is_drawn_by_the_seed_not_by_what_ran_before(run_root):
    cfg = PPOConfig.for_profile("micro", lora=True)
    adapters = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # an earlier notebook cell, another test
        policy = ppo.load_models(cfg, run_root / "sft", run_root / "reward")[0]
        adapters.append({n: p.detach().clone() for n, p in policy.named_parameters() if "lora_A" in n})
    assert adapters[0] and all(torch.equal(adapters[0][n], adapters[1][n]) for n in adapters[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these kernels may run")
@pytest.mark.parametrize("kernel", ["flash_attention_2", "flex_attention"])
def test_an_attention_kernel_a_cpu_cannot_run_is_one_clear_error_before_any_model_loads(kernel):
    with pytest.raises(LabError, match=f"--attn_implementation {kernel} runs only on a GPU here. Fix: use 'eager'"):
        PPOConfig.for_profile("micro", attn_implementation=kernel)


def test_a_flash_kernel_with_float32_models_is_one_clear_error():
    """Flash attention computes in bf16/fp16 only; with --mixed_precision no the four models stay float32, and it would
    fail at the first forward pass of a GPU run."""
    with pytest.raises(LabError, match="flash_attention_2 computes in bf16 or fp16 only.*Fix: use --mixed_precision"):
        PPOConfig.for_profile("micro", attn_implementation="flash_attention_2", mixed_precision="no")


def test_an_sft_model_tuned_from_a_base_whose_pad_is_its_eos_goes_through_reward_and_ppo(run_root, tmp_path):
    """Most hub bases ship no PAD (Llama 3, Qwen2.5 base, GPT-2): TRL then pads SFT with EOS, on the tokenizer the
    stage saves. The SFT model is saved with a PAD of its own, and PPO loads its policy as every stage loads a model:
    reward model and policy read the same ids."""
    from transformers import AutoTokenizer

    from lab_utils.config import SFTConfig
    from lab_utils.sft import train_sft

    base = tmp_path / "eos-pad-base"
    shutil.copytree(run_root / "base", base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = tok.eos_token  # as a hub base whose tokenizer has no PAD ends up inside TRL
    tok.save_pretrained(base)
    records = [{"instruction": f"Say {w}.", "input": "", "output": f"{w}!"} for w in ("hi", "yes", "no", "tea")]
    train_sft(SFTConfig.for_profile("micro", method="full", max_steps=1, batch_size=2), base, records,
              tmp_path / "sft", progress=False)
    saved = AutoTokenizer.from_pretrained(tmp_path / "sft")
    assert saved.pad_token_id != saved.eos_token_id
    sft = modeling.AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    assert sft.config.pad_token_id == saved.pad_token_id < sft.get_input_embeddings().num_embeddings
    score_tok = reward.score_tokenizer(tmp_path / "sft")
    RewardModel(reward.load_score_model(tmp_path / "sft", score_tok.pad_token_id, len(score_tok)).eval(),
                score_tok).save(tmp_path / "reward")
    policy, _, _, _, tok = ppo.load_models(PPOConfig.for_profile("micro"), tmp_path / "sft", tmp_path / "reward")
    assert tok.get_vocab() == saved.get_vocab() and tok.pad_token_id != tok.eos_token_id


@pytest.mark.parametrize("rows", [10, 16])
def test_a_new_pad_gets_an_embedding_row_and_a_hub_models_spare_rows_stay(rows):
    """`give_distinct_pad` for a tokenizer of 10 tokens without a PAD: a model with exactly 10 rows grows one for it;
    one with spare rows (Qwen2.5 has 270) keeps its size, and the PAD uses a spare row."""
    from transformers import LlamaConfig, LlamaForCausalLM

    class Tok:  # the part of a tokenizer `with_distinct_pad` uses
        pad_token = pad_token_id = None
        eos_token_id, n = 2, 10

        def __len__(self):
            return self.n

        def add_special_tokens(self, special):
            self.pad_token, self.pad_token_id, self.n = special["pad_token"], self.n, self.n + 1

    model = LlamaForCausalLM(LlamaConfig(vocab_size=rows, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    tok = Tok()
    modeling.give_distinct_pad(model, tok)
    assert (tok.pad_token, tok.pad_token_id, len(tok)) == ("<|pad|>", 10, 11)
    assert model.get_input_embeddings().num_embeddings == max(rows, 11) == model.get_output_embeddings().out_features
    assert model.config.pad_token_id == model.generation_config.pad_token_id == 10


def test_a_hub_models_generation_config_does_not_change_how_the_lab_samples(run_root, tmp_path):
    """A hub model's generation_config.json (Qwen2.5-Instruct ships repetition_penalty 1.1) fills every setting a
    `generate` call leaves out: PPO would sample from another distribution than the one it scores, and greedy
    answers would not be greedy. Models load with the lab's settings only."""
    from lab_utils.generation import generate_ended

    folder = tmp_path / "sft"
    shutil.copytree(run_root / "sft", folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 3.0,
                                                               "no_repeat_ngram_size": 1, "temperature": 0.1}))
    model, tok = modeling.load_causal_lm(str(folder))
    clean, _ = modeling.load_causal_lm(str(run_root / "sft"))
    config = model.generation_config
    assert config.repetition_penalty in (None, 1.0) and not config.no_repeat_ngram_size
    prompts = ["Say something about cats.", "What is 2 + 3?"]
    assert generate_ended(model, tok, prompts, 12) == generate_ended(clean, tok, prompts, 12)
    policy = ppo.load_models(PPOConfig.for_profile("micro"), folder, run_root / "reward")[0]
    assert policy.generation_config.repetition_penalty in (None, 1.0)


def test_a_hub_id_given_as_the_model_is_loaded_as_one_not_refused_as_a_missing_stage(run_root, monkeypatch):
    """`--model ORG/NAME` for the reward stage and PPO: offline and not cached, the message is about the hub id, not
    "run `lab sft` first"."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LabError, match="not-a-cached-org/no-such-model: could not load a model.*Fix: check the hub id"):
        ppo.load_models(PPOConfig.for_profile("micro"), Path("not-a-cached-org/no-such-model"), run_root / "reward")
    with pytest.raises(LabError, match="not-a-cached-org/no-such-model: could not load a model.*Fix: check the hub id"):
        stages.run_reward("micro", run_root, progress=False, model="not-a-cached-org/no-such-model")
    # a mistyped folder two parts deep is shaped like a hub id: the message says there is no such folder too
    with pytest.raises(LabError, match=r"runs/sft-ful: could not load a model: no such folder here, and as a hub id "
                                       r"\(.*Fix: .*; or, for a folder, check the path"):
        ppo.load_models(PPOConfig.for_profile("micro"), Path("runs/sft-ful"), run_root / "reward")


def test_an_attention_kernel_that_cannot_load_is_one_clear_error():
    def refuse(kernel):
        raise ImportError("FlashAttention2 has been toggled on, but it cannot be used")

    with pytest.raises(LabError, match="--attn_implementation flash_attention_2 cannot load .*Fix: install"):
        ppo._set_attention(types.SimpleNamespace(set_attn_implementation=refuse), "flash_attention_2")


def test_an_adaptive_kl_that_could_fall_to_zero_is_one_clear_error():
    """The controller multiplies β by 1 + err · rollout_batch / kl_horizon, err ≥ −0.2: from β = 0, or with a
    rollout five times the horizon (one rollout under target gives a factor ≤ 0), β would be 0 for good and the
    run would go on without a KL penalty."""
    with pytest.raises(LabError, match="--adaptive_kl with --kl_coef 0.*Fix: give --kl_coef the starting β"):
        PPOConfig.for_profile("micro", kl_coef=0.0)
    PPOConfig.for_profile("micro", kl_coef=0.0, adaptive_kl=False)  # no KL penalty, as asked
    with pytest.raises(LabError, match="--kl_horizon 8 with --rollout_batch 40.*Fix: raise --kl_horizon above 8"):
        PPOConfig.for_profile("micro", rollout_batch=40, kl_horizon=8.0)
    controller = ppo_math.AdaptiveKLController(0.3, target=1.0, horizon=8.0)
    controller.update(0.0, n_steps=39)  # the largest batch the check lets through keeps β above 0
    assert controller.value > 0


def test_entropy_under_ddp_is_the_mean_over_every_process_tokens():
    """Two processes, one with 10 response tokens of mean entropy 1, one with 30 of mean 3: the logged entropy is the
    mean over all 40 tokens (2.5), not the mean of the two means (2.0). `reduce` sums over the stacked processes."""
    means, tokens = torch.tensor([1.0, 3.0]), torch.tensor([10.0, 30.0])
    pooled = ppo.token_mean_across(lambda t, op: t.sum() if op == "sum" else None, means, tokens)
    assert pooled.item() == pytest.approx(2.5)
