"""The tensor maths of PPO for language models — pure functions, no models, no optimiser.

Read top to bottom, this is one PPO step in the order the stage-4 loop calls it:

1. rollout       `first_eos_truncate`       cut each sampled response at its first EOS → `loss_mask`
2. score         `score_with_penalty`       the reward model's score, lowered where no EOS came
3. KL shaping    `per_token_kl`, `kl_shaped_rewards`   score at the last real token, −kl_coef·KL everywhere
4. GAE           `gae`, then `masked_whiten` on the advantages (the caller whitens, not `gae`)
5. PPO epochs    `logprobs_from_logits`, `policy_loss`, `value_loss`, `entropy_from_logits`
   between rollouts  `AdaptiveKLController` / `FixedKLController` set the next `kl_coef`

It follows "The N Implementation Details of RLHF with PPO" (Huang et al., 2024) and the last
`trl.PPOTrainer` (TRL ≥ 1.13 removed it, so the lab owns these few lines). Where the lab differs from TRL
the docstring says so.

Conventions: batch `B`, response length `T`, vocabulary `V`. `loss_mask` (B, T) is 1 for the response tokens
PPO trains on — up to and including the first EOS — and 0 after (float or bool; it is used as 0/1). Every (B, T)
output is 0 where `loss_mask` is 0, so padding never leaks into a sum. The `masked_*` statistics take any such mask.
"""

from __future__ import annotations

import torch

# ------------------------------------------------------------------ masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1.

    x, mask: (B, T). dim=None → a 0-d tensor (mean over every real token of the batch);
    dim=1 → (B,) per-row means. Padded positions are never read, even if they hold inf or NaN.
    """
    mask = mask.to(x.dtype)
    x = torch.where(mask.bool(), x, torch.zeros_like(x))  # not x * mask: 0 * inf would be NaN
    if dim is None:
        return x.sum() / mask.sum()
    return x.sum(dim) / mask.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over the masked positions, a 0-d tensor. x, mask: (B, T).

    unbiased=True applies Bessel's correction n / (n - 1), n = number of real tokens (needs n ≥ 2).
    """
    centered = x - masked_mean(x, mask)
    var = masked_mean(centered**2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError(f"unbiased masked_var needs at least 2 real tokens, got {int(n)}")
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked positions; (B, T) → (B, T), 0 where `mask` is 0.

    After whitening, the real tokens have mean 0 and unbiased variance 1 (up to the 1e-8 that guards a
    zero variance). shift_mean=False puts the mean back (only the scale changes): TRL uses that for rewards.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


# ------------------------------------------------------------------ 1. rollout: where each response ends


def first_eos_truncate(response_ids: torch.Tensor, eos_id: int,
                       pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each response at its first EOS.

    response_ids: (B, T) sampled tokens (generation may run on past an EOS in a batch).
    Returns
      ids        (B, T) long — tokens after the first EOS replaced by `pad_id`; the EOS itself is kept
      loss_mask  (B, T) float — 1 up to and including the first EOS, 0 after; a row without EOS keeps all T
      ended      (B,)   bool — True where an EOS occurred (False = cut off at max length)

    >>> first_eos_truncate(torch.tensor([[5, 2, 7, 2]]), eos_id=2, pad_id=0)
    (tensor([[5, 2, 0, 0]]), tensor([[1., 1., 0., 0.]]), tensor([True]))
    """
    is_eos = (response_ids == eos_id).long()  # (B, T)
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos  # (B, T) EOS tokens strictly before each position
    loss_mask = eos_before == 0  # (B, T) bool: nothing has ended yet at this position
    ids = torch.where(loss_mask, response_ids, torch.full_like(response_ids, pad_id))
    return ids, loss_mask.float(), is_eos.bool().any(dim=1)


# ------------------------------------------------------------------ 2. score


def score_with_penalty(scores: torch.Tensor, ended: torch.Tensor, missing_eos_penalty: float) -> torch.Tensor:
    """Add `missing_eos_penalty` to the score of every response that never emitted EOS.

    scores: (B,) reward-model scores; ended: (B,) bool from `first_eos_truncate`. Returns (B,), a new tensor.

    The penalty is a **negative** number here (e.g. -1.0) and is *added*. This is TRL's
    `missing_eos_penalty` with the sign written into the number: TRL takes a positive value and subtracts
    it (`scores[~contain_eos_token] -= missing_eos_penalty`), so the lab's -1.0 equals TRL's 1.0. A positive
    value is refused, so a value copied from a TRL config cannot silently reward rambling.
    Why penalise at all: a response cut at max length is unfinished, but the reward model may still
    score it well; without the penalty PPO learns to never stop (Huang et al., 2024).
    """
    if missing_eos_penalty > 0:
        raise ValueError(f"missing_eos_penalty must be <= 0 (it is added to the score), got {missing_eos_penalty}")
    return torch.where(ended, scores, scores + missing_eos_penalty)


# ------------------------------------------------------------------ 3. KL-shaped rewards


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, loss_mask: torch.Tensor,
                 estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || ref_model) at the sampled tokens; (B, T), 0 where `loss_mask` is 0.

    logprobs, ref_logprobs: (B, T) log-probabilities of the sampled tokens under policy / ref_model.
      k1 = logp - ref_logp                 unbiased, can be negative per token (Ziegler et al., 2019)
      k3 = (exp(r) - 1) - r, r = ref - logp  unbiased and always ≥ 0, lower variance (Schulman, "Approximating
                                             KL Divergence", 2020)
    """
    if estimator == "k1":
        kl = logprobs - ref_logprobs
    elif estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        kl = torch.expm1(log_ratio) - log_ratio  # expm1(r) = exp(r) - 1, exact near r = 0
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")
    return torch.where(loss_mask.bool(), kl, torch.zeros_like(kl))


def kl_shaped_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                      loss_mask: torch.Tensor, kl_coef: float,
                      estimator: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef·KL on every real token, plus the score on the last real token.

    scores: (B,); logprobs, ref_logprobs, loss_mask: (B, T). Returns (rewards, kl), both (B, T), 0 after the
    response.
    The last real token is index loss_mask.sum(1) - 1: the EOS of a response that ended, else token T-1 —
    the token the reward model read its score from. (TRL put the score one position *past* the EOS
    when there was room; the lab keeps it on the EOS, inside the loss mask, where the value model also stops.)
    Every row needs at least one real token.
    """
    kl = per_token_kl(logprobs, ref_logprobs, loss_mask, estimator)  # (B, T)
    rewards = -kl_coef * kl  # (B, T)
    last = loss_mask.sum(dim=1).long() - 1  # (B,) index of the last real token
    if (last < 0).any():
        raise ValueError("every row of loss_mask needs at least one real token")
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards, kl


# ------------------------------------------------------------------ 4. GAE


def gae(rewards: torch.Tensor, values: torch.Tensor, loss_mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al., 2016), computed backwards over the T tokens.

    rewards, values, loss_mask: (B, T). Returns (advantages, returns), both (B, T), 0 where `loss_mask` is 0.
      delta_t = r_t + gamma · V_{t+1} - V_t          (V_{t+1} = 0 at the last real token: the episode ends)
      A_t     = delta_t + gamma · lam · A_{t+1}
      returns = A + V                                 (the value model's regression target)
    Rewards and values where `loss_mask` is 0 are treated as 0, whatever they hold. The advantages are *not*
    whitened here; the caller does `masked_whiten(advantages, loss_mask)`.
    """
    loss_mask = loss_mask.to(values.dtype)
    real = loss_mask.bool()  # padding → 0, so it adds nothing below (where, not ×: 0 × inf would be NaN)
    rewards, values = torch.where(real, rewards, 0.0), torch.where(real, values, 0.0)  # (B, T)
    B, T = values.shape
    advantages = torch.zeros_like(values)
    next_value = torch.zeros(B, dtype=values.dtype, device=values.device)  # (B,) V_{t+1}
    next_advantage = torch.zeros_like(next_value)  # (B,) A_{t+1}
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * loss_mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    returns = (advantages + values) * loss_mask
    return advantages, returns


# ------------------------------------------------------------------ 5. PPO epochs: losses


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                loss_mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate objective, as a loss to minimise (Schulman et al., 2017, eq. 7).

    logprobs: (B, T) under the policy being trained (carries grad); old_logprobs: (B, T) from the rollout;
    advantages: (B, T), usually whitened; loss_mask: (B, T).
      ratio = exp(logp - old)
      loss  = masked_mean(max(-A·ratio, -A·clamp(ratio, 1-eps, 1+eps)))
    Returns (loss 0-d tensor, stats) with detached 0-d tensors: `clipfrac` (share of tokens where the
    clipped term won), `approxkl` (0.5·mean((logp-old)²), the KL moved since the rollout), `ratio_mean`.
    On the first minibatch of a rollout logp == old, so ratio ≡ 1, clipfrac ≡ 0 and approxkl ≡ 0.
    """
    log_ratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), loss_mask)
    stats = {"clipfrac": masked_mean((pg_loss2 > pg_loss1).float(), loss_mask).detach(),
             "approxkl": (0.5 * masked_mean(log_ratio**2, loss_mask)).detach(),
             "ratio_mean": masked_mean(ratio, loss_mask).detach()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, loss_mask: torch.Tensor,
               clip_range_value: float) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: the value model may move at most `clip_range_value` from its rollout values.

    values: (B, T) from the value model being trained; old_values, returns: (B, T) from the rollout/GAE.
      vclipped = old + clamp(values - old, -c, c)
      loss     = 0.5 · masked_mean(max((values - returns)², (vclipped - returns)²))
    Returns (loss 0-d tensor, {"vf_clipfrac": share of tokens where the clipped term won, detached}).
    """
    vclipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    vf_loss1 = (values - returns) ** 2  # (B, T)
    vf_loss2 = (vclipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_loss1, vf_loss2), loss_mask)
    return loss, {"vf_clipfrac": masked_mean((vf_loss2 > vf_loss1).float(), loss_mask).detach()}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution; logits (B, T, V) → (B, T).

    H = -Σ p·log p = logsumexp(z) - Σ p·z, with p = softmax(z): no log of a tiny probability is taken.
    z is first shifted so its max is 0 (H does not change): with logits near 1000, float32 would otherwise
    lose ~1e-4 in the difference of two large numbers. (Logits of -inf, as from a vocabulary mask, would give
    0·inf = NaN; the lab's models produce none.)
    """
    z = logits - logits.amax(dim=-1, keepdim=True)  # (B, T, V), max 0
    probs = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (probs * z).sum(dim=-1)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) under softmax(logits); logits (B, T, V), labels (B, T) long → (B, T) float32.

    Equal to log_softmax(logits).gather(labels), without materialising the (B, T, V) log_softmax. The softmax is
    taken in float32, so it adds no bf16 rounding of its own to ratio = exp(logp - old) (logits that come out of a
    bf16 matmul still carry that matmul's rounding). Divide logits by the sampling
    temperature *before* calling, so the logprobs are those of the distribution that was sampled.
    Remember the shift: logits at position t predict token t+1.
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T) z[label]
    return picked - torch.logsumexp(logits, dim=-1)


# ------------------------------------------------------------------ between rollouts: the KL coefficient


class AdaptiveKLController:
    """kl_coef that steers the measured KL toward `target` (Ziegler et al., 2019, section 2.2).

    After each rollout: proportional_error = clip(current_kl / target - 1, -0.2, 0.2);
    value *= 1 + proportional_error · n_steps / horizon. KL above target → kl_coef rises, below → falls;
    the clip bounds one update to a factor of 1 ± 0.2·n_steps/horizon. `floor` (optional) is the lowest value it
    may set: a KL ceiling that raises β when the KL runs over target and lets it fall back, but never below `floor`.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int, floor: float = 0.0):
        self.value, self.target, self.horizon, self.floor = init_kl_coef, target, horizon, floor

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.value = max(self.floor, self.value * (1 + proportional_error * n_steps / self.horizon))


class FixedKLController:
    """A constant kl_coef with the same interface as `AdaptiveKLController` (`update` does nothing)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass
