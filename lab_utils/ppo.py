"""Stage 4: RLHF with PPO — our own trainer (TRL 1.13+ no longer ships one). The tensor math is in
`ppo_math`; this module is the loop around it.

One iteration:
  1. rollout   — sample a response to each prompt of the batch from the policy (temperature T, top-k 0,
                 top-p 1); truncate after the first EOS;
  2. evaluate  — log-probabilities of those tokens under the policy and the frozen reference (logits / T),
                 values from the value model, the reward model's score at the last real token
                 (normalised; a fixed penalty when there is no EOS);
  3. shape     — per-token rewards = −β·KL(policy ‖ reference), plus the score at the last real token;
                 GAE (γ = 1, λ = 0.95) → advantages (whitened over real tokens) and returns;
  4. optimise  — `ppo_epochs` passes over shuffled minibatches: clipped policy loss + vf_coef × clipped
                 value loss; the learning rate decays linearly to zero over the run.

Four models: the policy (starts as the SFT model), the reference (the SFT model, frozen — or, with
LoRA, the policy with its adapter switched off), the value model (starts as the reward model: a
per-token value head that already knows what a good answer looks like), and the frozen reward model.
Dropout is off in all four, so the log-probabilities of the rollout and of the first minibatch agree.

Speed (tiny, 2 CPU cores; `bench/ppo_vs_trl.py`): every forward pass runs under bf16 autocast
(`mixed_precision`), the LM head runs only on the response positions, columns that are padding in every
response are dropped, and the optimizer is fused AdamW. None of these changes the algorithm. Autocast
lowers the precision of the matmuls, the LM head's included, so the logits carry bf16 rounding; the weights, the
gradients and the log-softmax over those logits stay float32. `mixed_precision="no"` turns it off.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification
from trl.trainer.utils import disable_dropout_in_model

from . import checkpoints as ck
from . import ppo_math as M
from .config import PPOConfig
from .errors import LabError
from .generation import unsampled_ids
from .modeling import check_model_folder, fresh_accelerator, load_causal_lm, use_bf16
from . import reward
from .reward import RewardModel

RESUMABLE_CHANGES = ("save_every", "log_every")  # settings a resumed run may change; any other would mix two runs
KL_ALARM_ITERATIONS = 3  # a mean KL below zero this many iterations in a row means a bug, not luck ...
KL_ALARM_SE = 2.0  # ... when it is below zero by more than this many standard errors (near 0, noise dips below)
SAMPLES_PER_ITERATION = 4  # rows each iteration adds to the table of sample responses (metrics["samples"])


def disable_dropout(model) -> None:
    """Every `nn.Dropout` (TRL's helper) and the attention dropout rate that attention layers copy from their
    config when they are built (changing the config afterwards would not reach them)."""
    disable_dropout_in_model(model)
    for m in model.modules():
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


def episodes_per_rollout(cfg: PPOConfig, n_prompts: int, n_proc: int = 1) -> int:
    """Prompts each rollout draws: `rollout_batch`, or all the prompts there are when they are fewer — shared out
    equally among the processes and, past one minibatch, cut to whole minibatches (a short last one would weigh
    each of its episodes more, as `rollout_batch` itself is refused when it does not split)."""
    k = min(cfg.rollout_batch, n_prompts) // n_proc * n_proc
    return k // cfg.mini_batch * cfg.mini_batch if k > cfg.mini_batch else k


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded prompt starts at position 0."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def response_logits(model, query, query_mask, response, response_mask, temperature: float,
                    vocab: int | None = None, pad: int | None = None):
    """Logits (B, T, V) that predicted each response token, divided by the sampling temperature. For a model with
    rows the rollout never samples (`generation.unsampled_ids`), `vocab` keeps the tokenizer's ids only, and `pad`
    gives PAD a logit of −1e4: zero probability in float32, as the rollout's suppression gives it, so these are the
    log-probabilities of the distribution it sampled from (−inf would make the entropy 0·∞, and the padding after a
    response, whose label is PAD, would get log-probabilities of −inf)."""
    ids, mask = torch.cat([query, response], 1), torch.cat([query_mask, response_mask.long()], 1)
    # The LM head runs only on the T + 1 last positions (the prompt's logits would be thrown away): the
    # same numbers for a fraction of the (V × D) head's work, forward and backward.
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                   logits_to_keep=response.shape[1] + 1).logits
    logits = logits[:, :-1, :vocab] if vocab is not None else logits[:, :-1]  # position t predicts token t + 1
    logits = logits.float() / temperature
    if pad is not None:
        logits = logits.index_fill(-1, torch.tensor([pad], device=logits.device), -1e4)
    return logits


def token_mean_across(reduce, mean: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """The mean over every process's response tokens, from each process's own token mean and token count (`reduce`:
    accelerate's, which sums over the processes). A mean of the processes' means would weigh a process whose answers
    were short like one whose answers were long."""
    return reduce(mean * n_tokens, "sum") / reduce(n_tokens, "sum")


class ValueModel(torch.nn.Module):
    """The value model (a sequence-classification model) as one module whose `forward` gives a value at every
    position, (B, L): the score head on each hidden state, not only the last. One `forward`, because data-parallel
    training (DDP) synchronises the gradients of what runs through it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return self.model.score(hidden.last_hidden_state).squeeze(-1)


def response_values(value_model, query, query_mask, response, response_mask):
    """Per-token values (B, T): the value head read at every position that chose a response token."""
    ids, mask = torch.cat([query, response], 1), torch.cat([query_mask, response_mask.long()], 1)
    values = value_model(ids, mask, position_ids(mask))  # (B, P + T)
    return values[:, query.shape[1] - 1: -1].float()


def score_responses(reward_model: RewardModel, query, query_mask, response, response_mask) -> torch.Tensor:
    """Normalised reward-model scores, on exactly the layout the reward model was trained on: the prompt
    tokens (no padding), the response tokens up to and including the first EOS, right-padded."""
    prompt_ids = [q[m.bool()].tolist() for q, m in zip(query, query_mask)]
    response_ids = [r[m.bool()].tolist() for r, m in zip(response, response_mask)]
    return reward_model.score_tokens(prompt_ids, response_ids).to(query.device)


class PPOTrainer:
    """PPO for a causal LM against a reward model. `train()` runs `cfg.iterations` iterations."""

    def __init__(self, cfg: PPOConfig, policy, ref_model, value_model, reward_model: RewardModel, tokenizer,
                 prompts: list[str], out_dir: Path | None = None, log=print):
        self.cfg, self.tok, self.prompts, self.out_dir, self.log = cfg, tokenizer, prompts, out_dir, log
        self.acc = fresh_accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")  # autocast: ours, below
        # Under torchrun / accelerate launch (DDP), rollout_batch and mini_batch are global: each process answers its
        # share of every batch, and the gradients of the shares are averaged.
        self.n_proc = self.acc.num_processes
        if cfg.rollout_batch % self.n_proc or cfg.mini_batch % self.n_proc:
            raise LabError(f"--rollout_batch {cfg.rollout_batch} and --mini_batch {cfg.mini_batch} are shared out "
                           f"equally among the {self.n_proc} processes", fix=f"make both multiples of {self.n_proc}")
        if cfg.rollout_batch % cfg.mini_batch:  # a short last minibatch would weigh each of its episodes more
            raise LabError(f"--rollout_batch {cfg.rollout_batch} does not split into minibatches of --mini_batch "
                           f"{cfg.mini_batch}", fix="give a --mini_batch that divides --rollout_batch")
        if cfg.rollout_batch // self.n_proc < 2:  # advantages are whitened over a process's real tokens: 2 at least
            raise LabError(f"--rollout_batch {cfg.rollout_batch} gives each of the {self.n_proc} process(es) "
                           f"{cfg.rollout_batch // self.n_proc} episode(s)", fix=f"give at least {2 * self.n_proc}")
        self.episodes = episodes_per_rollout(cfg, len(prompts), self.n_proc)
        if self.episodes < 2 * self.n_proc:  # advantages are whitened over a process's share of a rollout
            raise LabError(f"{len(prompts)} prompt(s) give each of the {self.n_proc} process(es) fewer than 2 episodes "
                           "per rollout (advantages are whitened over a rollout)",
                           fix=f"give at least {2 * self.n_proc} prompts (--data)")
        if self.episodes < cfg.rollout_batch and self.acc.is_main_process:
            cut = self.episodes < min(cfg.rollout_batch, len(prompts)) // self.n_proc * self.n_proc
            whole = f" (whole minibatches of --mini_batch {cfg.mini_batch})" if cut else ""
            log(f"only {len(prompts)} prompts: each rollout answers {self.episodes} of them{whole}, not "
                f"--rollout_batch {cfg.rollout_batch}")
        self.mini_batch = cfg.mini_batch // self.n_proc  # this process's share of each minibatch
        if cfg.mixed_precision not in ("bf16", "no"):
            raise LabError(f"mixed_precision must be 'bf16' or 'no', got {cfg.mixed_precision!r}",
                           fix="pass --mixed_precision bf16 or --mixed_precision no")
        self.bf16 = cfg.mixed_precision == "bf16" and use_bf16(True, self.acc.device.type)  # float32 where slow
        for m in (policy, ref_model, value_model, reward_model.model):
            if m is not None:
                disable_dropout(m)
        self.ref_model = ref_model.to(self.acc.device).eval() if ref_model is not None else None
        reward_model.model.to(self.acc.device).eval()
        self.reward_model = reward_model
        # a hub model's rows past its tokenizer's tokens, and PAD with them: never sampled, and left out of every
        # log-probability (`generation.unsampled_ids`)
        unsampled = unsampled_ids(policy, tokenizer)
        self._no_spare = {"suppress_tokens": unsampled} if unsampled else {}
        self.vocab = len(tokenizer) if unsampled else None
        self.pad_out = tokenizer.pad_token_id if tokenizer.pad_token_id in unsampled else None
        params = [p for m in (policy, value_model) for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5, weight_decay=0.0, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / cfg.iterations))
        self.policy, self.value_model, self.optimizer = self.acc.prepare(policy, ValueModel(value_model), optimizer)
        self.scheduler = scheduler
        self.kl_ctl = M.AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon,
                                              floor=cfg.kl_coef if cfg.kl_floor else 0.0) if cfg.adaptive_kl \
            else M.FixedKLController(cfg.kl_coef)
        self.iteration, self.history, self.samples, self._negative_kl = 0, [], [], 0
        self.built_from: dict | None = None  # the models' builds (stages.run_ppo sets it): a resume checks them
        # a fresh run (stages.run_ppo sets it): an earlier run's checkpoints in out_dir go when this run saves its
        # first, not before, so that stopping this run before then does not cost them
        self.clear_earlier = False
        self.rng = random.Random(cfg.seed)  # the same in every process: they draw one global batch and share it out
        torch.manual_seed(cfg.seed + self.acc.process_index)  # ... and sample answers of their own

    # ---------------------------------------------------------------- 1–3: rollout, evaluation, shaping

    def autocast(self):
        """bf16 autocast around every forward pass: matmuls in bfloat16 (`lab bench` on the two CPUs with
        AVX512-BF16 we measured: 2.3× and 4.1× float32's throughput; tensor cores on a GPU), weights, gradients,
        optimizer and the log-probability math in float32. Ours rather than accelerate's, which would wrap only
        each model's `forward`: this one covers `generate` and the value model's backbone the same way, so the
        accelerator is built with mixed_precision="no"."""
        return torch.autocast(self.acc.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _reference(self):
        """The frozen reference: its own model, or the LoRA policy with the adapter switched off."""
        if self.ref_model is not None:
            return self.ref_model, nullcontext()
        return self.policy, self.acc.unwrap_model(self.policy).disable_adapter()

    @torch.no_grad()
    def rollout(self, prompts: list[str]) -> dict:
        with self.autocast():
            return self._rollout(prompts)

    def _rollout(self, prompts: list[str]) -> dict:
        cfg, tok, device = self.cfg, self.tok, self.acc.device
        # 1. rollout: sample a response to each prompt, truncated after its first EOS
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
        query, query_mask = enc["input_ids"], enc["attention_mask"]
        policy = self.acc.unwrap_model(self.policy)
        policy.eval()
        out = policy.generate(input_ids=query, attention_mask=query_mask, do_sample=True, top_k=0, top_p=1.0,
                              temperature=cfg.temperature, max_new_tokens=cfg.response_length,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **self._no_spare)
        response = out[:, query.shape[1]:]  # as wide as the longest row (generation stops once every row has ended)
        response, loss_mask, ended = M.first_eos_truncate(response, tok.eos_token_id, tok.pad_token_id)
        width = int(loss_mask.sum(1).max().item())  # columns past every row's end are padding everywhere: drop them
        response, loss_mask = response[:, :width], loss_mask[:, :width]
        # 2. evaluate: log-probabilities under the policy and the reference, values, the reward model's score
        logprobs, ref_logprobs, entropy = self._logprobs(query, query_mask, response, loss_mask)
        values = response_values(self.value_model, query, query_mask, response, loss_mask)
        raw = score_responses(self.reward_model, query, query_mask, response, loss_mask)
        scores = M.score_with_penalty(raw, ended, cfg.missing_eos_penalty)
        # 3. shape: per-token rewards −β·KL plus the score at the last real token; GAE → advantages and returns
        rewards, kl = M.kl_shaped_rewards(scores, logprobs, ref_logprobs, loss_mask, self.kl_ctl.value)
        advantages, returns = M.gae(rewards, values, loss_mask, cfg.gamma, cfg.lam)
        advantages = M.masked_whiten(advantages, loss_mask)
        return {"prompts": prompts, "query": query, "query_mask": query_mask, "response": response,
                "loss_mask": loss_mask,
                "ended": ended, "logprobs": logprobs, "ref_logprobs": ref_logprobs, "values": values,
                "raw_scores": raw, "scores": scores, "kl": kl, "advantages": advantages, "returns": returns,
                "entropy": entropy}

    def _logprobs(self, query, query_mask, response, loss_mask) -> tuple:
        """Log-probabilities of the response tokens under the policy and the reference, (B, T) each, and the policy's
        mean entropy; in groups of rows whose (rows, T, V) float32 logits stay under `reward.LOGITS_PER_BATCH`: a
        150k vocabulary makes 64 rows of 128 tokens 5 GB, and the entropy's temporaries several times that. On tiny
        the whole rollout is one group."""
        vocab = self.acc.unwrap_model(self.policy).config.vocab_size
        rows = max(1, reward.LOGITS_PER_BATCH // ((response.shape[1] + 1) * vocab))
        logprobs, ref_logprobs, entropy = [], [], []
        for i in range(0, len(response), rows):
            part = [t[i:i + rows] for t in (query, query_mask, response, loss_mask)]
            logits = response_logits(self.policy, *part, self.cfg.temperature, self.vocab, self.pad_out)  # (rows, T, V)
            logprobs.append(M.logprobs_from_logits(logits, part[2]))
            entropy.append(M.entropy_from_logits(logits))
            del logits
            ref_model, ctx = self._reference()  # the adapter switched off for this group (a context is used once)
            with ctx:
                ref_logits = response_logits(ref_model, *part, self.cfg.temperature, self.vocab, self.pad_out)
                ref_logprobs.append(M.logprobs_from_logits(ref_logits, part[2]))
        return torch.cat(logprobs), torch.cat(ref_logprobs), M.masked_mean(torch.cat(entropy), loss_mask)

    # ---------------------------------------------------------------- 4: PPO epochs

    def optimise(self, b: dict) -> dict:
        """4. optimise: `ppo_epochs` passes over shuffled minibatches of the rollout; clipped policy + value loss."""
        cfg = self.cfg
        self.policy.train(), self.value_model.train()
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "approxkl", "clipfrac",
                                                         "ratio_mean", "vf_clipfrac")}
        first: dict | None = None  # the first minibatch of the first epoch: the policy has not moved yet
        n = len(b["prompts"])
        n_mini = -(-n // self.mini_batch)  # minibatches per epoch
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n)
            for k, start in enumerate(range(0, n, self.mini_batch)):
                idx = order[start:start + self.mini_batch]
                mb = {key: b[key][idx] for key in ("query", "query_mask", "response", "loss_mask", "logprobs",
                                                   "values", "advantages", "returns")}
                with self.autocast():
                    logits = response_logits(self.policy, mb["query"], mb["query_mask"], mb["response"],
                                             mb["loss_mask"], cfg.temperature, self.vocab, self.pad_out)
                    new_values = response_values(self.value_model, mb["query"], mb["query_mask"], mb["response"],
                                                 mb["loss_mask"])
                new_logprobs = M.logprobs_from_logits(logits, mb["response"])
                pg_loss, pg_stats = M.policy_loss(new_logprobs, mb["logprobs"], mb["advantages"], mb["loss_mask"],
                                                  cfg.cliprange)
                vf_loss, vf_stats = M.value_loss(new_values, mb["values"], mb["returns"], mb["loss_mask"],
                                                 cfg.cliprange_value)
                # the mean over the minibatches of one optimizer step; the epoch's last group may be shorter
                group = min(cfg.grad_accum, n_mini - k // cfg.grad_accum * cfg.grad_accum)
                self.acc.backward((pg_loss + cfg.vf_coef * vf_loss) / group)
                if (k + 1) % cfg.grad_accum == 0 or k + 1 == n_mini:
                    torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                                   cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                if first is None:
                    first = {f"first_{k}": float(v) for k, v in pg_stats.items()}
                for key, value in (pg_stats | vf_stats | {"policy_loss": pg_loss, "value_loss": vf_loss}).items():
                    stats[key].append(float(value.detach()))
        self.scheduler.step()
        return {k: sum(v) / len(v) for k, v in stats.items()} | (first or {})

    def step(self) -> dict:
        """One PPO iteration on a fresh batch of prompts; returns its logged statistics (over every process's share)."""
        t0 = time.perf_counter()
        drawn = self.rng.sample(self.prompts, self.episodes)
        prompts = drawn[self.acc.process_index::self.n_proc]  # this process's share
        b = self.rollout(prompts)
        every = self.acc.gather  # the whole batch's values, from every process (one process: the tensor itself)
        kl_per_seq, scores, raw = every(b["kl"].sum(1)), every(b["scores"]), every(b["raw_scores"])
        ended, lengths = every(b["ended"].float()), every(b["loss_mask"].sum(1).float())
        kl_se = (kl_per_seq.std() / len(drawn) ** 0.5).item() if len(drawn) > 1 else 0.0  # of the mean KL
        lr = self.scheduler.get_last_lr()[0]  # the rate of this iteration's updates (optimise steps the schedule)
        opt, entropy = self.optimise(b), b["entropy"]
        if self.n_proc > 1:  # the optimiser's statistics are means of equal shares; the entropy's shares differ
            opt = {key: self.acc.reduce(torch.tensor(v, device=self.acc.device), "mean").item()
                   for key, v in opt.items()}
            entropy = token_mean_across(self.acc.reduce, entropy, b["loss_mask"].sum().float())
        beta = self.kl_ctl.value
        self.kl_ctl.update(kl_per_seq.mean().item(), len(drawn))
        self.iteration += 1
        row = {"iteration": self.iteration, "episodes": self.iteration * len(drawn),
               "rlhf_reward": round((scores - beta * kl_per_seq).mean().item(), 4),
               "score": round(raw.mean().item(), 4), "kl": round(kl_per_seq.mean().item(), 4),
               "kl_se": round(kl_se, 4),
               "entropy": round(entropy.item(), 4), "eos_rate": round(ended.mean().item(), 4),
               "response_len": round(lengths.mean().item(), 2), "kl_coef": round(beta, 5),
               "lr": lr} | {key: round(v, 5) for key, v in opt.items()}
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        self._check_kl(row)
        self.history.append(row)
        shown = slice(SAMPLES_PER_ITERATION)
        texts = self.tok.batch_decode([r[m.bool()] for r, m in zip(b["response"][shown], b["loss_mask"][shown])],
                                      skip_special_tokens=True)
        # the table of sample responses grows by a few rows an iteration: how the answers changed, not only how they end
        self.samples += [{"iteration": self.iteration, "prompt": p, "response": t, "score": round(s, 3)}
                         for p, t, s in zip(prompts[shown], texts, b["raw_scores"][shown].tolist())]
        return row

    def _check_kl(self, row: dict) -> None:
        """KL(policy ‖ reference) estimated on samples of the policy cannot stay negative: if it does, the
        log-probabilities of the two models are not computed the same way (temperature, padding, positions).
        "Negative" means below zero by more than KL_ALARM_SE standard errors (`kl_se`): while the policy is still
        near the reference (the first iterations, a small learning rate, LoRA) the true KL is near zero and its
        estimate on one batch is below zero about half the time."""
        self._negative_kl = self._negative_kl + 1 if row["kl"] < -KL_ALARM_SE * row.get("kl_se", 0.0) else 0
        row["kl_alarm"] = self._negative_kl >= KL_ALARM_ITERATIONS
        if row["kl_alarm"] and self.acc.is_main_process:  # one process says it
            message = (f"KL has been negative for {self._negative_kl} iterations (now {row['kl']}): policy and "
                       f"reference log-probabilities disagree on something other than the weights")
            warnings.warn(message, stacklevel=2)
            self.log(f"[lab] ALARM: {message}")

    # ---------------------------------------------------------------- the run, checkpoints

    def train(self, stop_at: int | None = None, callback=None) -> list[dict]:
        """Iterate to `cfg.iterations` (or `stop_at`), checkpointing every `save_every` iterations.
        `callback(trainer, row)` runs after every iteration (the notebook draws its live plot there)."""
        end = min(self.cfg.iterations, stop_at or self.cfg.iterations)
        while self.iteration < end:
            row = self.step()
            if callback is not None:
                callback(self, row)
            if self.cfg.log_every and (row["iteration"] % self.cfg.log_every == 0 or row["iteration"] == 1):
                self.log(f"[ppo] it {row['iteration']:>4}  score {row['score']:+.3f}  rlhf_reward "
                         f"{row['rlhf_reward']:+.3f}  kl {row['kl']:.3f}  entropy {row['entropy']:.3f}  "
                         f"clipfrac {row['clipfrac']:.3f}  eos {row['eos_rate']:.2f}")
            if self.out_dir is not None and self.cfg.save_every and self.iteration % self.cfg.save_every == 0:
                self.save_checkpoint()
        return self.history

    def save_checkpoint(self) -> Path:
        """`out_dir/step-NNNNNNN/`, where `checkpoints.latest_checkpoint(out_dir)` finds it; the two newest stay.
        The main process writes it; with several processes it holds each one's random state."""
        root = Path(self.out_dir)
        final = root / f"step-{self.iteration:07d}"
        rng = self._rng_states()
        if self.acc.is_main_process:
            if self.clear_earlier:  # never resume an earlier run's later iteration into this one
                shutil.rmtree(root, ignore_errors=True)
            with ck.atomic_dir(final) as tmp:
                self.acc.unwrap_model(self.policy).save_pretrained(tmp / "policy")
                self.acc.unwrap_model(self.value_model).model.save_pretrained(tmp / "value")
                state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()} | rng
                ck.torch_save(state, tmp / "state.pt")
                ck.write_json(tmp / "state.json", {"step": self.iteration, "history": self.history,
                                                   "samples": self.samples,
                                                   "kl_coef": self.kl_ctl.value, "rng": _rng_state(self.rng),
                                                   "negative_kl_streak": self._negative_kl,
                                                   "processes": self.n_proc, "config": self.cfg.to_dict(),
                                                   "built_from": self.built_from})
            ck.prune_checkpoints(root)
        self.clear_earlier = False
        self.acc.wait_for_everyone()  # nobody goes on (or resumes) before the checkpoint is complete
        return final

    def _rng_states(self) -> dict:
        """The random state `generate` samples with: torch's (and the GPU's, where it samples there); with several
        processes one row per process, gathered to every process."""
        cuda = torch.cuda.is_available()
        if self.n_proc == 1:
            return {"torch_rng": torch.get_rng_state()} | ({"cuda_rng": torch.cuda.get_rng_state_all()} if cuda else {})
        rows = {"torch_rng_per_process": torch.get_rng_state()}
        if cuda:
            rows["cuda_rng_per_process"] = torch.cuda.get_rng_state()  # this process's device
        return {key: self.acc.gather(state.to(self.acc.device)[None]).cpu() for key, state in rows.items()}

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, optimizer, schedule, KL coefficient and alarm streak, history and RNGs from
        `save_checkpoint`."""
        from safetensors.torch import load_file

        meta = self.check_resumable(path)
        value_model = self.acc.unwrap_model(self.value_model).model
        for model, sub in ((self.acc.unwrap_model(self.policy), "policy"), (value_model, "value")):
            with ck.readable_checkpoint(path):
                state = {k: v for f in sorted((path / sub).glob("*.safetensors")) for k, v in load_file(f).items()}
            if hasattr(model, "peft_config"):  # a LoRA policy saved only its adapter
                from peft import set_peft_model_state_dict
                result = set_peft_model_state_dict(model, state)
                if result.unexpected_keys or not state:
                    found = f"unexpected {result.unexpected_keys[:3]}" if state else "no adapter weights there"
                    raise LabError(f"checkpoint {sub} is not this LoRA policy's adapter ({found})",
                                   path=str(path / sub),
                                   fix="resume with the same --lora settings, or start without --resume")
                continue
            missing, unexpected = model.load_state_dict(state, strict=False)
            tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
            if unexpected or set(missing) - tied:
                raise LabError(f"checkpoint {sub} does not match the model (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})", path=str(path / sub),
                               fix="resume with the same --profile and model settings, or start without --resume")
        with ck.readable_checkpoint(path):
            blob = torch.load(path / "state.pt", weights_only=True, map_location="cpu")  # a GPU run, resumed on a CPU
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        rank = self.acc.process_index
        # a process's row of the saved states is a view into the others' memory: torch 2.13's set_rng_state crashes
        # (SIGSEGV) on a view that does not start the storage, so every row is restored from a copy of its own
        torch.set_rng_state(blob["torch_rng_per_process"][rank].clone() if self.n_proc > 1 else blob["torch_rng"])
        if torch.cuda.is_available():
            if self.n_proc > 1 and "cuda_rng_per_process" in blob:
                torch.cuda.set_rng_state(blob["cuda_rng_per_process"][rank].clone())
            elif "cuda_rng" in blob:
                torch.cuda.set_rng_state_all(blob["cuda_rng"])
        self.iteration, self.history, self.kl_ctl.value = meta["step"], meta["history"], meta["kl_coef"]
        self.samples = meta.get("samples", [])  # a checkpoint from before they were saved has none
        self._negative_kl = meta.get("negative_kl_streak", 0)
        self.rng.setstate(_rng_from(meta["rng"]))

    def check_resumable(self, path: Path, strict: bool = False) -> dict:
        """The checkpoint's state.json, when this run may continue it: as many processes, the same settings and
        models (`_check_same_run`); else one `LabError`. `strict` (`lab run`, which resumes only what it can check)
        also refuses a checkpoint that did not record its settings and models."""
        meta = ck.read_json(path / "state.json")
        if meta.get("processes", 1) != self.n_proc:
            raise LabError(f"the checkpoint was written by {meta.get('processes', 1)} process(es), this run has "
                           f"{self.n_proc}", path=str(path), fix="resume with as many processes as the run had")
        if strict and not ("config" in meta and meta.get("built_from") and self.built_from):
            raise LabError("the checkpoint did not record its settings and models (an older one)", path=str(path),
                           fix="start again without --resume")
        self._check_same_run(meta, path)
        return meta

    def _check_same_run(self, meta: dict, path: Path) -> None:
        """A resumed run continues the checkpoint's: its optimizer, learning-rate schedule, KL coefficient and
        weights would silently keep the old settings, and its policy was trained against the models it was built
        from. Any difference is one `LabError` listing them (a checkpoint from before they were saved is not
        checked)."""
        if "config" not in meta:
            return
        recorded = ck.data_as_named_now(meta["config"], (meta.get("built_from") or {}).get("--data"),
                                        (self.built_from or {}).get("--data"), self.cfg.data)
        changed = ck.resume_changes(recorded, self.cfg.to_dict(), RESUMABLE_CHANGES)
        if meta.get("built_from") and self.built_from:
            # an upstream stage's build, or the folder or file given by path (--model, --reward_model, --data); one
            # only this side records (a checkpoint from before they were recorded) is not compared
            for key in sorted(self.built_from.keys() & meta["built_from"].keys()):
                if meta["built_from"][key] != self.built_from[key]:
                    changed.append(f"the {key} {'file' if key == '--data' else 'folder'} (changed since)"
                                   if key.startswith("--") else f"the {key} model (built again since)")
        if changed:
            raise LabError(f"the checkpoint is of a run with other settings ({'; '.join(changed)})", path=str(path),
                           fix="resume with the run's settings, or start again without --resume")


def _rng_state(rng: random.Random) -> list:
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]


def _rng_from(saved: list) -> tuple:
    return saved[0], tuple(saved[1]), saved[2]


# ------------------------------------------------------------------ building the four models

def _set_attention(model, kernel: str) -> None:
    """`--attn_implementation`, or one clear error where it cannot load (a GPU-only kernel on a CPU is refused by
    `PPOConfig.check_together`, before any model loads)."""
    try:
        model.set_attn_implementation(kernel)
    except (ImportError, ValueError) as err:
        raise LabError(f"--attn_implementation {kernel} cannot load ({err})",
                       fix="install the kernel's package (e.g. pip install flash-attn), or use 'sdpa'") from None


def load_models(cfg: PPOConfig, policy_dir: Path, reward_dir: Path):
    """(policy, reference or None, value model, reward model, tokenizer) as the config asks."""
    if not (Path(reward_dir) / "config.json").exists():  # a local folder: it carries its normalisation
        said = "no such folder" if not Path(reward_dir).exists() else "no model in this folder (no config.json)"
        raise LabError(f"no reward model for PPO: {said}", path=str(reward_dir),
                       fix="check the path (--reward_model takes a folder `lab reward` wrote, such as "
                           "runs/tiny/reward), or run `lab reward` (or `lab run`) first")
    check_model_folder(str(policy_dir))  # the policy may be a hub id (--model): its load says what is wrong
    reward_model = RewardModel.load(reward_dir)  # checks it is a reward model before the policy's copies load
    # a PAD of its own (as the reward model's tokenizer got one) and the lab's sampling settings only
    policy, tokenizer = load_causal_lm(str(policy_dir))
    if cfg.lora:
        from peft import LoraConfig, get_peft_model
        torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn here: by --seed, not by whatever ran before
        policy = get_peft_model(policy, LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r,
                                                   target_modules="all-linear", task_type="CAUSAL_LM"))
        ref_model = None  # the adapter switched off is the SFT model: no second copy in memory
    else:
        ref_model = copy.deepcopy(policy).requires_grad_(False)  # the SFT model, before PPO moves the policy
    value_model = AutoModelForSequenceClassification.from_pretrained(reward_dir, dtype=torch.float32,
                                                                     use_safetensors=True)
    reward_model.model.requires_grad_(False)
    for model in (policy, ref_model, value_model, reward_model.model):
        if model is not None:
            _set_attention(model, cfg.attn_implementation)
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise LabError("PAD and EOS are the same token", path=str(policy_dir),
                       fix="give the tokenizer a separate pad token (lab_utils.modeling.load_causal_lm adds one)")
    if reward_model.tokenizer.get_vocab() != tokenizer.get_vocab():  # the value and reward models read the policy's ids
        raise LabError("the reward model's tokenizer is not the policy's", path=str(reward_dir),
                       fix="train the reward model from this SFT model (`lab reward`), or pass a matching --model")
    return policy, ref_model, value_model, reward_model, tokenizer


def save_policy(trainer: PPOTrainer, out_dir: Path) -> None:
    """The trained policy as a plain causal LM (LoRA merged), with its tokenizer: `runs/<profile>/rlhf`. The main
    process writes it (DDP keeps every process's copy the same)."""
    if trainer.acc.is_main_process:
        model = trainer.acc.unwrap_model(trainer.policy)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        with ck.atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            trainer.tok.save_pretrained(tmp)
    trainer.acc.wait_for_everyone()


def throughput(history: list[dict]) -> float:
    """Episodes per second over the run's iterations."""
    seconds = sum(r["wall_s"] for r in history)
    return round(history[-1]["episodes"] / seconds, 3) if history and seconds else math.nan
