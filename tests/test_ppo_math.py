"""Stage 4 maths contracts, on hand-worked numbers: masked statistics ignore padding, responses end at their first
EOS, the score lands on the last real token, GAE matches a 3-step example, and on the first PPO minibatch
ratio ≡ 1, KL ≡ 0 and clip fraction ≡ 0."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch.distributions import Categorical

from lab_utils import ppo_math as P

HUGE = 1e6  # what padded positions hold in these tests: any leak into a result shows at once


def f64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_docstring_examples_run():
    result = doctest.testmod(P)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------ masked statistics

X = f64([[1.0, 2.0, 3.0, HUGE],
         [4.0, HUGE, HUGE, HUGE]])
MASK = f64([[1, 1, 1, 0],
            [1, 0, 0, 0]])  # real tokens: 1, 2, 3, 4


def test_masked_mean_ignores_padding():
    assert P.masked_mean(X, MASK).item() == 2.5  # (1 + 2 + 3 + 4) / 4
    assert torch.equal(P.masked_mean(X, MASK, dim=1), f64([2.0, 4.0]))
    with_nan = X.clone()
    with_nan[1, 1:] = torch.tensor([float("inf"), float("nan"), -float("inf")])
    assert P.masked_mean(with_nan, MASK).item() == 2.5  # padding is never read, not even as 0 * inf


def test_masked_var_ignores_padding():
    # deviations from 2.5: -1.5, -0.5, 0.5, 1.5 → squares sum to 5.0
    assert P.masked_var(X, MASK, unbiased=False).item() == pytest.approx(5.0 / 4)
    assert P.masked_var(X, MASK).item() == pytest.approx(5.0 / 3)
    with pytest.raises(ValueError, match="at least 2"):
        P.masked_var(X, f64([[1, 0, 0, 0], [0, 0, 0, 0]]))


def test_masked_whiten_uses_only_real_tokens():
    white = P.masked_whiten(X, MASK)
    expected = (f64([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]]) - 2.5) / math.sqrt(5.0 / 3) * MASK
    torch.testing.assert_close(white, expected)
    assert torch.equal(white[MASK == 0], torch.zeros(4, dtype=torch.float64))  # padding → exactly 0
    assert abs(P.masked_mean(white, MASK).item()) < 1e-12
    assert P.masked_var(white, MASK).item() == pytest.approx(1.0, abs=1e-6)

    kept_mean = P.masked_whiten(X, MASK, shift_mean=False)  # only the scale changes
    torch.testing.assert_close(kept_mean, white + 2.5 * MASK)
    assert P.masked_mean(kept_mean, MASK).item() == pytest.approx(2.5)
    assert torch.equal(kept_mean[MASK == 0], torch.zeros(4, dtype=torch.float64))


# ------------------------------------------------------------------ 1. rollout, 2. score

EOS, PAD = 2, 0


def test_first_eos_truncate_exact_tensors():
    sampled = torch.tensor([[5, 2, 7, 2],   # EOS in the middle (and a second one after it)
                            [2, 5, 6, 7],   # EOS first: the response is just EOS
                            [5, 6, 7, 8],   # no EOS: cut off at max length, all T tokens stay
                            [5, 6, 7, 2]])  # EOS as the very last token
    ids, loss_mask, ended = P.first_eos_truncate(sampled, EOS, PAD)
    assert torch.equal(ids, torch.tensor([[5, 2, 0, 0],
                                          [2, 0, 0, 0],
                                          [5, 6, 7, 8],
                                          [5, 6, 7, 2]]))
    assert torch.equal(loss_mask, torch.tensor([[1.0, 1.0, 0.0, 0.0],
                                           [1.0, 0.0, 0.0, 0.0],
                                           [1.0, 1.0, 1.0, 1.0],
                                           [1.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(ended, torch.tensor([True, True, False, True]))
    assert torch.equal(sampled[0], torch.tensor([5, 2, 7, 2]))  # the input is left as it was


def test_missing_eos_penalty_only_where_no_eos():
    scores = torch.tensor([0.5, 0.25, -0.25])
    ended = torch.tensor([True, False, True])
    assert torch.equal(P.score_with_penalty(scores, ended, -1.0), torch.tensor([0.5, -0.75, -0.25]))
    assert torch.equal(P.score_with_penalty(scores, ended, 0.0), scores)
    with pytest.raises(ValueError, match="<= 0"):  # TRL's positive convention would reward rambling here
        P.score_with_penalty(scores, ended, 1.0)


# ------------------------------------------------------------------ 3. KL-shaped rewards

SHAPE_MASK = f64([[1, 1, 1, 0],
                  [1, 1, 1, 1]])  # row 0 ends at index 2, row 1 runs to T-1 = 3
SCORES = f64([2.0, -1.0])


def test_zero_kl_gives_score_one_hot_at_last_real_token():
    logprobs = f64([[-1.0, -2.0, -0.5, HUGE], [-0.1, -0.2, -0.3, -0.4]])
    rewards, kl = P.kl_shaped_rewards(SCORES, logprobs, logprobs.clone(), SHAPE_MASK, kl_coef=0.1)
    assert torch.equal(kl, torch.zeros(2, 4, dtype=torch.float64))
    assert torch.equal(rewards, f64([[0.0, 0.0, 2.0, 0.0],
                                     [0.0, 0.0, 0.0, -1.0]]))


def test_kl_term_elsewhere_and_score_at_the_end():
    logprobs = f64([[-1.0, -2.0, -0.5, HUGE], [-0.5, -0.5, -0.5, -0.5]])
    ref_logprobs = f64([[-1.5, -1.0, -0.5, -HUGE], [-1.0, -0.25, -0.5, -0.75]])
    rewards, kl = P.kl_shaped_rewards(SCORES, logprobs, ref_logprobs, SHAPE_MASK, kl_coef=0.1)
    # k1 = logp - ref_logp; padding → 0
    torch.testing.assert_close(kl, f64([[0.5, -1.0, 0.0, 0.0], [0.5, -0.25, 0.0, 0.25]]))
    # rewards = -0.1 * kl, plus the score at index loss_mask.sum(1) - 1 = [2, 3]
    torch.testing.assert_close(rewards, f64([[-0.05, 0.1, 0.0 + 2.0, 0.0],
                                             [-0.05, 0.025, 0.0, -0.025 - 1.0]]))


def test_k3_estimator_hand_value():
    logprobs = f64([[-math.log(2.0), 0.0, HUGE]])
    ref_logprobs = f64([[0.0, -math.log(2.0), 0.0]])
    kl = P.per_token_kl(logprobs, ref_logprobs, f64([[1, 1, 0]]), estimator="k3")
    # r = ref - logp: token 0 r = log 2 → (2 - 1) - log 2; token 1 r = -log 2 → (0.5 - 1) + log 2
    torch.testing.assert_close(kl, f64([[1.0 - math.log(2.0), -0.5 + math.log(2.0), 0.0]]))
    assert (kl >= 0).all()
    with pytest.raises(ValueError, match="unknown KL estimator"):
        P.per_token_kl(logprobs, ref_logprobs, f64([[1, 1, 0]]), estimator="k2")


# ------------------------------------------------------------------ 4. GAE


def test_gae_hand_worked_three_steps():
    # rewards [0, 0, 1], values [0.5, 0.6, 0.7], gamma = 1, lam = 0.95; V after the last token is 0.
    #   t=2: delta = 1 + 0   - 0.7 = 0.3   A2 = 0.3
    #   t=1: delta = 0 + 0.7 - 0.6 = 0.1   A1 = 0.1 + 0.95 * 0.3   = 0.385
    #   t=0: delta = 0 + 0.6 - 0.5 = 0.1   A0 = 0.1 + 0.95 * 0.385 = 0.46575
    #   returns = A + V = [0.96575, 0.985, 1.0]
    # Row 2 is padded after two tokens (loss_mask [1, 1, 0]); its padded reward and value hold garbage.
    # rewards [0, 1, 5], values [0.5, 0.6, 9]: the last real step's next value is 0, not 9.
    #   t=2: padded → A2 = 0
    #   t=1: delta = 1 + 0   - 0.6 = 0.4   A1 = 0.4
    #   t=0: delta = 0 + 0.6 - 0.5 = 0.1   A0 = 0.1 + 0.95 * 0.4 = 0.48
    #   returns = [0.98, 1.0, 0]
    rewards = f64([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = f64([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    loss_mask = f64([[1, 1, 1], [1, 1, 0]])
    advantages, returns = P.gae(rewards, values, loss_mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(advantages, f64([[0.46575, 0.385, 0.3], [0.48, 0.4, 0.0]]))
    torch.testing.assert_close(returns, f64([[0.96575, 0.985, 1.0], [0.98, 1.0, 0.0]]))


def test_gae_ignores_whatever_padding_holds_even_inf_and_nan():
    """The docstring's promise, "treated as 0, whatever they hold": not computed as value × mask (0 × inf is NaN)."""
    rewards, values, loss_mask = f64([[0.0, 1.0, 0.0]]), f64([[0.5, 0.6, 0.0]]), f64([[1, 1, 0]])
    expected = P.gae(rewards, values, loss_mask)
    for garbage in (float("inf"), -float("inf"), float("nan")):
        r, v = rewards.clone(), values.clone()
        r[0, 2], v[0, 2] = garbage, garbage
        for got, want in zip(P.gae(r, v, loss_mask), expected):
            assert torch.equal(got, want), garbage


def test_gae_discount_and_no_whitening():
    # gamma = 0.5, lam = 1, values 0: A_t is the discounted reward-to-go: [1 + 0.5*2, 2] = [2, 2]
    advantages, returns = P.gae(f64([[1.0, 2.0]]), f64([[0.0, 0.0]]), f64([[1, 1]]), gamma=0.5, lam=1.0)
    assert torch.equal(advantages, f64([[2.0, 2.0]]))  # not whitened (that would give [0, 0])
    assert torch.equal(returns, advantages)


def test_gae_discounts_the_next_value_in_each_td_error():
    # gamma = 0.5, lam = 0.5, rewards [0, 1], values [0.4, 0.8]; V after the last token is 0.
    #   t=1: delta = 1 + 0.5*0   - 0.8 = 0.2   A1 = 0.2
    #   t=0: delta = 0 + 0.5*0.8 - 0.4 = 0.0   A0 = 0.0 + 0.5*0.5 * 0.2 = 0.05
    #   returns = A + V = [0.45, 1.0]
    # (with γ left out of delta: A0 = 0.4 + 0.05 = 0.45; with γ only in the recursion the test above passes too)
    advantages, returns = P.gae(f64([[0.0, 1.0]]), f64([[0.4, 0.8]]), f64([[1, 1]]), gamma=0.5, lam=0.5)
    torch.testing.assert_close(advantages, f64([[0.05, 0.2]]))
    torch.testing.assert_close(returns, f64([[0.45, 1.0]]))


# ------------------------------------------------------------------ 5. PPO losses


def test_policy_loss_first_minibatch_is_exactly_on_policy():
    torch.manual_seed(0)
    logprobs = -torch.rand(3, 5, dtype=torch.float64)
    advantages = torch.randn(3, 5, dtype=torch.float64)
    loss_mask = f64([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    old_logprobs = torch.where(loss_mask.bool(), logprobs, torch.full_like(logprobs, HUGE))  # padding differs
    loss, stats = P.policy_loss(logprobs, old_logprobs, advantages, loss_mask, clip_range=0.2)
    assert stats["ratio_mean"].item() == 1.0
    assert stats["clipfrac"].item() == 0.0
    assert stats["approxkl"].item() == 0.0
    assert torch.equal(loss, -P.masked_mean(advantages, loss_mask))


def test_policy_loss_clipped_hand_case():
    # clip_range 0.2; per real token (ratio, A) → pg1 = -A*ratio, pg2 = -A*clamp(ratio, 0.8, 1.2), max:
    #   (1.5,  1): pg1 -1.5, pg2 -1.2 → -1.2  clipped (no credit beyond 1.2)
    #   (0.5, -1): pg1  0.5, pg2  0.8 →  0.8  clipped
    #   (1.0,  2): pg1 -2.0, pg2 -2.0 → -2.0  not clipped (equal)
    #   (1.5, -1): pg1  1.5, pg2  1.2 →  1.5  not clipped: the pessimistic term is the unclipped one
    # loss = (-1.2 + 0.8 - 2.0 + 1.5) / 4 = -0.225; clipfrac = 2/4; ratio_mean = 4.5 / 4 = 1.125
    logprobs = f64([[math.log(1.5), math.log(0.5), 0.0, math.log(1.5), HUGE]])
    old_logprobs = f64([[0.0, 0.0, 0.0, 0.0, -HUGE]])
    advantages = f64([[1.0, -1.0, 2.0, -1.0, HUGE]])
    loss_mask = f64([[1, 1, 1, 1, 0]])
    loss, stats = P.policy_loss(logprobs, old_logprobs, advantages, loss_mask, clip_range=0.2)
    assert loss.item() == pytest.approx(-0.225)
    assert stats["clipfrac"].item() == 0.5
    assert stats["ratio_mean"].item() == pytest.approx(1.125)
    assert stats["approxkl"].item() == pytest.approx(0.5 * (2 * math.log(1.5) ** 2 + math.log(0.5) ** 2) / 4)


def test_policy_loss_no_gradient_through_padding():
    logprobs = f64([[-1.0, -2.0, -3.0]]).requires_grad_()
    loss, _ = P.policy_loss(logprobs, f64([[-1.0, -2.0, -3.0]]), f64([[1.0, 2.0, 3.0]]), f64([[1, 1, 0]]), 0.2)
    loss.backward()
    # d loss / d logp_t = -A_t * ratio_t / n_real = [-0.5, -1.0], and exactly 0 on the padded token
    assert torch.equal(logprobs.grad, f64([[-0.5, -1.0, 0.0]]))


def test_value_loss_clipped_hand_case():
    # clip_range_value 0.2; per real token (old, values, returns) → vclipped, l1 = (v-R)^2, l2 = (vclip-R)^2, max:
    #   (0.0, 0.5,  1.0): vclipped 0.2;  l1 0.25,   l2 0.64   → 0.64    clipped term wins
    #   (0.0, 0.5,  0.0): vclipped 0.2;  l1 0.25,   l2 0.04   → 0.25    not clipped
    #   (1.0, 1.25, 2.0): moved 0.25 > 0.2 → vclipped 1.2;  l1 0.5625, l2 0.64 → 0.64  clipped term wins
    # loss = 0.5 * (0.64 + 0.25 + 0.64) / 3 = 0.255; vf_clipfrac = 2/3
    old_values = f64([[0.0, 0.0, 1.0, 0.0]])
    values = f64([[0.5, 0.5, 1.25, HUGE]])
    returns = f64([[1.0, 0.0, 2.0, -HUGE]])
    loss_mask = f64([[1, 1, 1, 0]])
    loss, stats = P.value_loss(values, old_values, returns, loss_mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.255)
    assert stats["vf_clipfrac"].item() == pytest.approx(2 / 3)

    # inside the clip range both terms agree: loss = 0.5 * mean((v - R)^2), nothing clipped
    loss, stats = P.value_loss(f64([[0.1, -0.1]]), f64([[0.0, 0.0]]), f64([[1.1, 0.9]]), f64([[1, 1]]), 0.2)
    assert loss.item() == pytest.approx(0.5)
    assert stats["vf_clipfrac"].item() == 0.0


def test_entropy_of_uniform_logits_is_log_v():
    V = 7
    for offset in (0.0, 1000.0):  # a huge constant offset must not overflow (logsumexp)
        entropy = P.entropy_from_logits(torch.full((2, 3, V), offset))
        torch.testing.assert_close(entropy, torch.full((2, 3), math.log(V)))
    torch.manual_seed(0)
    logits = torch.randn(2, 3, V) * 4
    torch.testing.assert_close(P.entropy_from_logits(logits), Categorical(logits=logits).entropy())


def test_logprobs_from_logits_matches_categorical():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11) * 3  # (B, T, V)
    labels = torch.randint(0, 11, (2, 5))  # (B, T)
    logprobs = P.logprobs_from_logits(logits, labels)
    assert logprobs.shape == (2, 5) and logprobs.dtype == torch.float32
    torch.testing.assert_close(logprobs, Categorical(logits=logits).log_prob(labels))
    # bf16 logits are read in float32
    assert P.logprobs_from_logits(logits.bfloat16(), labels).dtype == torch.float32


# ------------------------------------------------------------------ the KL coefficient


def test_adaptive_kl_controller_moves_toward_target_within_the_clip():
    # target 6, horizon 10_000: one update of n_steps = horizon multiplies by 1 + clip(kl/6 - 1, -0.2, 0.2)
    up = P.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    up.update(current_kl=60.0, n_steps=10_000)  # error 9 → clipped to 0.2
    assert up.value == pytest.approx(0.12)
    down = P.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    down.update(current_kl=0.0, n_steps=10_000)  # error -1 → clipped to -0.2
    assert down.value == pytest.approx(0.08)
    small = P.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    small.update(current_kl=6.6, n_steps=1_000)  # error 0.1, scaled by 1000/10000 → × 1.01
    assert small.value == pytest.approx(0.101)
    on_target = P.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    on_target.update(current_kl=6.0, n_steps=10_000)
    assert on_target.value == pytest.approx(0.1)


def test_adaptive_kl_controller_floor_keeps_beta_at_or_above_it():
    # with a floor the controller only ever adds to β: below target it falls back, but not under the floor
    ceiling = P.AdaptiveKLController(0.3, target=1.0, horizon=64, floor=0.3)
    ceiling.update(current_kl=0.0, n_steps=64)  # would be × 0.8 → held at the floor
    assert ceiling.value == pytest.approx(0.3)
    ceiling.update(current_kl=3.0, n_steps=64)  # over target: × 1.2
    assert ceiling.value == pytest.approx(0.36)
    ceiling.update(current_kl=0.9, n_steps=64)  # a little under target: × 0.9, not under the floor
    assert ceiling.value == pytest.approx(0.324)
    ceiling.update(current_kl=0.0, n_steps=64)
    assert ceiling.value == pytest.approx(0.3)
    free = P.AdaptiveKLController(0.3, target=1.0, horizon=64)  # no floor: the same update goes below 0.3
    free.update(current_kl=0.0, n_steps=64)
    assert free.value == pytest.approx(0.24)


def test_fixed_kl_controller_never_moves():
    fixed = P.FixedKLController(0.05)
    fixed.update(current_kl=100.0, n_steps=10_000)
    assert fixed.value == 0.05
