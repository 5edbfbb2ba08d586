"""Profiles: one frozen dataclass per stage, its defaults are the `tiny` profile (2-core CPU, minutes).

`micro` is smaller still (unit tests, seconds); `full` names hub ids for a GPU. Each field carries its
help text once; `lab <stage> --help` turns them into flags with `HfArgumentParser`.

    >>> cfg = PretrainConfig.for_profile("micro")
    >>> cfg.n_layers, cfg.seq_len
    (2, 64)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

PROFILES = ("micro", "tiny", "full")
FULL_PREFERENCES = "HuggingFaceH4/ultrafeedback_binarized"  # the public preference set of profile `full`


def resolve_profile(profile: str | None = None) -> str:
    """`profile`, else $LAB_PROFILE, else tiny — with one clear error for a typo."""
    profile = profile or os.environ.get("LAB_PROFILE") or "tiny"
    if profile not in PROFILES:
        from .errors import LabError
        raise LabError(f"unknown profile {profile!r}", fix=f"use one of: {', '.join(PROFILES)}")
    return profile


# Every number of every config is finite and above zero, but these may also be zero (a seed, "off", "never", "all")
_ZERO_OK = {"world_seed", "seed", "max_operand", "heldout_fraction", "context", "min_lr_ratio", "warmup_steps",
            "weight_decay", "save_every", "log_every", "data_limit", "lora_dropout", "off_topic", "lm_coef",
            "kl_coef", "vf_coef", "gamma", "lam", "label_smoothing"}
_AT_MOST_ONE = {"min_lr_ratio", "gamma", "lam"}  # ... these are shares of one
# ... and these of less than one
_BELOW_ONE = {"heldout_fraction", "eval_fraction", "lora_dropout", "label_smoothing"}
_NOT_POSITIVE = {"missing_eos_penalty"}  # ... and a penalty is added, so it is zero or below
# One token predicts nothing: a sequence needs a second to be a next-token example. A byte-level BPE holds its 256
# bytes and 3 specials before any merge, so a smaller vocabulary is not one it can have.
_AT_LEAST = {"seq_len": 2, "vocab_size": 259}
# Text settings with a fixed set of values (what accelerate and transformers accept here)
_CHOICES = {"mixed_precision": ("no", "bf16", "fp16"),
            "attn_implementation": ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")}


class _Profiled:
    OVERRIDES: ClassVar[dict[str, dict]] = {}

    @classmethod
    def for_profile(cls, profile: str | None = None, **changes):
        cfg = replace(cls(), **{**cls.OVERRIDES.get(resolve_profile(profile), {}), **changes})
        cfg.check()
        return cfg

    def check(self) -> None:
        """One clear error for a number no stage can run with (a flag's typo, `--lora_r 0`), before anything
        is loaded or trained."""
        from .errors import LabError
        for name, value in asdict(self).items():
            if name in _CHOICES and value not in _CHOICES[name]:
                raise LabError(f"--{name} is {value!r}", fix=f"give one of: {', '.join(_CHOICES[name])}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                bad, fix = True, "give a finite number"
            elif name in _NOT_POSITIVE:
                bad, fix = value > 0, "give 0 or a negative number"
            elif name in _ZERO_OK:
                bad, fix = value < 0, "give 0 or a positive number"
            else:
                bad, fix = value <= 0, "give a positive number"
            if not bad and (name in _AT_MOST_ONE and value > 1 or name in _BELOW_ONE and value >= 1):
                bad, fix = True, f"give a share of {'at most' if name in _AT_MOST_ONE else 'less than'} 1"
            if not bad and value < _AT_LEAST.get(name, value):
                bad, fix = True, f"give {_AT_LEAST[name]} or more"
            if bad:
                raise LabError(f"--{name} is {value!r}", fix=fix)
        self.check_together()

    def check_together(self) -> None:
        """Settings that are each fine but do not go together (a stage's own rules)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class WorldConfig(_Profiled):
    world_seed: int = _f(0, "seed of the synthetic world; same seed, same bytes")
    n_countries: int = _f(160, "countries in the world (real ones first, then fictional)")
    heldout_fraction: float = _f(0.2, "share of countries that appear in the corpus but never in SFT data")
    max_operand: int = _f(12, "arithmetic facts cover a + b for 0 <= a, b <= max_operand")
    n_docs: int = _f(90_000, "pretraining corpus documents (~3.8M tokens on tiny, packed)")
    val_docs: int = _f(1_000, "documents held out for the validation loss")

    OVERRIDES: ClassVar[dict] = {"micro": {"n_countries": 24, "n_docs": 1_500, "val_docs": 100}}


@dataclass(frozen=True)
class TokenizerConfig(_Profiled):
    vocab_size: int = _f(4096, "byte-level BPE vocabulary size (specials included)")
    tokenizer_docs: int = _f(20_000, "corpus documents the BPE merges are learned from")
    data: str = _f("", "learn the merges from this text instead of the world corpus: .txt, .jsonl or .json with "
                       "'text', or a hub id (`lab pretrain --data` trains the tokenizer on its text when none exists)")
    data_split: str = _f("train", "split of a hub dataset given with --data")

    OVERRIDES: ClassVar[dict] = {"micro": {"vocab_size": 512, "tokenizer_docs": 1_500}}


@dataclass(frozen=True)
class PretrainConfig(_Profiled):
    model: str = _f("", "start from this model (hub id or local path) instead of a fresh Llama (any profile; full starts "
                                  "from SmolLM2-360M)")
    data: str = _f("", "train on this text instead of the world corpus: .txt, .jsonl or .json with 'text', or a "
                       "hub id")
    data_split: str = _f("train", "split of a hub dataset given with --data")
    n_layers: int = _f(4, "transformer blocks")
    d_model: int = _f(256, "model width D (keep a multiple of 64 for 4-bit layers on CPU)")
    n_heads: int = _f(4, "attention heads (head size D / n_heads)")
    d_ff: int = _f(640, "MLP width (multiple of 64)")
    seq_len: int = _f(256, "tokens per training sequence T (also the model's context)")
    context: int = _f(0, "positions the model declares it reads (max_position_embeddings; 0: seq_len); the apps "
                         "refuse longer prompts")
    batch_size: int = _f(16, "sequences per optimizer step B (global, across processes)")
    max_steps: int = _f(1000, "optimizer steps")
    lr: float = _f(2e-3, "peak learning rate")
    min_lr_ratio: float = _f(0.1, "cosine decays to lr * min_lr_ratio")
    warmup_steps: int = _f(30, "linear warmup steps")
    weight_decay: float = _f(0.1, "AdamW weight decay (matrices only)")
    grad_clip: float = _f(1.0, "max gradient norm")
    eval_every: int = _f(100, "steps between validation-loss evaluations")
    save_every: int = _f(250, "steps between resumable checkpoints (0: never)")
    eval_batches: int = _f(8, "validation batches per evaluation")
    mixed_precision: str = _f("bf16", "'bf16' autocast (fast on CPUs with AVX512-BF16 and on GPUs; float32, with a "
                                      "warning, where bf16 is slow), 'fp16' (a GPU's) or 'no'")
    seed: int = _f(0, "training seed (init, data order)")

    def check_together(self) -> None:
        """The head size must be a whole, even number (rotary embeddings turn pairs of dimensions), and the model
        must read at least the rows it trains on. Not checked with --model: its own config sets the shape."""
        from .errors import LabError
        if self.model:
            return
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise LabError(f"--d_model {self.d_model} / --n_heads {self.n_heads} is not a whole, even head size",
                           fix="give a --d_model that is a multiple of 2 × --n_heads (e.g. 256 with 4 heads)")
        if self.context and self.context < self.seq_len:
            raise LabError(f"--context {self.context} is shorter than the training rows (--seq_len {self.seq_len})",
                           fix="give a --context of at least --seq_len, or 0 (the model's context is --seq_len)")

    OVERRIDES: ClassVar[dict] = {
        # micro (unit tests only) trains on 64-token rows but declares 512 positions (rotary: nothing is learned per
        # position), or the Alpaca template alone (~100 of its tokens) would not fit
        "micro": {"n_layers": 2, "d_model": 64, "n_heads": 2, "d_ff": 128, "seq_len": 64, "context": 512,
                  "batch_size": 8, "max_steps": 20, "warmup_steps": 2, "eval_every": 10, "save_every": 10,
                  "eval_batches": 2, "mixed_precision": "no"},
        "full": {"model": "HuggingFaceTB/SmolLM2-360M", "data": "Salesforce/wikitext:wikitext-103-raw-v1",
                 "seq_len": 1024, "batch_size": 32, "max_steps": 1000, "lr": 1e-4, "warmup_steps": 50,
                 "eval_every": 200, "save_every": 200},
    }


@dataclass(frozen=True)
class EvalConfig(_Profiled):
    n_per_task: int = _f(24, "evaluation prompts per task (plus one per held-out country and language)")
    n_validation_per_task: int = _f(48, "validation prompts per task (`lab eval --split validation`)")
    eval_max_new_tokens: int = _f(64, "greedy tokens per response")
    eval_batch_size: int = _f(64, "prompts generated together")

    OVERRIDES: ClassVar[dict] = {"micro": {"n_per_task": 4, "n_validation_per_task": 4, "eval_max_new_tokens": 24}}


def build_world_from(cfg: WorldConfig):
    from .world import build_world
    return build_world(seed=cfg.world_seed, n_countries=cfg.n_countries, heldout_fraction=cfg.heldout_fraction,
                       max_operand=cfg.max_operand)


@dataclass(frozen=True)
class SFTConfig(_Profiled):
    method: str = _f("qlora", "qlora (4-bit NF4 base + LoRA), lora (fp32 base + LoRA) or full (every weight)")
    data: str = _f("", "Alpaca data instead of the world's tasks: .json array, .jsonl, or a hub id (full)")
    data_split: str = _f("train", "split of a hub dataset given with --data")
    data_limit: int = _f(0, "with --data: train on its first N records only (0: all of them)")
    model: str = _f("", "base model folder or hub id (default: runs/<profile>/base)")
    n_records: int = _f(3000, "Alpaca records generated from the world's task generators (not used with --data)")
    max_steps: int = _f(300, "optimizer steps")
    batch_size: int = _f(16, "records per step")
    lr: float = _f(1e-3, "LoRA learning rate (measured on tiny: 5e-4 learned too slowly in 300 steps, 2e-3 collapsed)")
    full_lr: float = _f(2e-4, "learning rate of --method full")
    warmup_steps: int = _f(15, "linear warmup steps")
    lora_r: int = _f(32, "LoRA rank r (measured on tiny before the corpus's last change, task accuracy as a mean over "
                         "prompts: 16 → 0.63, 32 → 0.69; 64 → 0.70 but trains a third of the model)")
    lora_alpha: int = _f(64, "LoRA scale alpha (update = alpha / r · B·A)")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    max_length: int = _f(256, "tokens per prompt + response (longer records are left out, not cut: a cut one "
                              "would lose its EOS)")
    logging_steps: int = _f(10, "steps between logged losses")
    bf16: bool = _f(False, "bf16 autocast in the trainer (float32, with a warning, where bf16 is slow)")
    seed: int = _f(0, "training seed")

    def check_together(self) -> None:
        from .errors import LabError
        if self.data_limit and not self.data:
            raise LabError("--data_limit only applies to records brought with --data (the world's SFT set has "
                           f"--n_records {self.n_records})", fix="add --data FILE_OR_HUB_ID, or drop --data_limit")

    OVERRIDES: ClassVar[dict] = {
        "micro": {"n_records": 64, "max_steps": 4, "batch_size": 8, "warmup_steps": 1, "logging_steps": 1,
                  "lora_r": 8, "lora_alpha": 16},  # micro's width is 64: rank 32 would be half of it
        "full": {"data": "tatsu-lab/alpaca",
                 "max_steps": 2000, "batch_size": 16, "lr": 2e-4, "max_length": 512, "bf16": True, "lora_r": 16},
    }


@dataclass(frozen=True)
class RewardConfig(_Profiled):
    data: str = _f("", "preference pairs instead of sampling: .json/.jsonl (TRL, ShareGPT, HH, vote export), "
                       "the arena's votes.db (whose 1-5 ratings train the ratings model), or a hub id")
    data_split: str = _f("train", "split of a hub dataset given with --data (e.g. train_prefs)")
    mix_previous: bool = _f(False, "train on --data's pairs plus the pairs the run's reward model was trained on "
                                   "(<out>/reward/pairs.jsonl, each prompt keeping its train/eval split), and its "
                                   "ratings to --data's (reward/ratings.jsonl): the next round of the loop, e.g. "
                                   "--data runs/<profile>/votes.db")
    model: str = _f("", "model the reward model starts from (default: runs/<profile>/sft)")
    n_prompts: int = _f(600, "prompts answered by the SFT model to collect preferences (with --data: to fit the "
                             "reward scale on, from --data's prompts)")
    n_samples: int = _f(4, "sampled answers per prompt (every distinct pair is labelled)")
    temperature: float = _f(1.0, "sampling temperature of the SFT answers (with --data: those of the reward scale)")
    reference_answers: str = _f("none", "add each prompt's reference answer (the SFT record's output) to the "
                                         "sampled candidates: none, train (training prompts only) or all")
    off_topic: int = _f(0, "per training prompt, pairs of one of its answers against an answer to another task's "
                           "prompt, labelled by the annotator (held-out prompts get none); measured on tiny: 2 → "
                           "held-out accuracy 0.746 → 0.780 on the same pairs, but PPO with it lost task accuracy")
    max_new_tokens: int = _f(64, "tokens per sampled answer (an answer cut off here has no EOS; with --data: the "
                                 "answers of the reward scale)")
    eval_fraction: float = _f(0.2, "share of prompts whose pairs are held out for evaluation")
    epochs: float = _f(2.0, "passes of the pairwise model over the training pairs")
    batch_size: int = _f(16, "pairs (or rated answers) per step")
    lr: float = _f(1e-4, "learning rate of the pairwise model (measured on tiny with --lm_coef 0: 1e-3 → held-out "
                         "accuracy 0.746, 1e-4 → 0.763)")
    ratings_epochs: float = _f(1.0, "passes of the ratings model over its ratings (measured on tiny: 1 at lr 2e-4 "
                                    "→ held-out accuracy 0.712 in 23 s, the same as 2 at 1e-4 in 51 s; 1 at 1e-4 → "
                                    "0.670)")
    ratings_lr: float = _f(2e-4, "learning rate of the ratings model")
    lm_coef: float = _f(1.0, "weight of the language-modelling regulariser of the pairwise model (GRM, Yang et al. "
                             "2024): the SFT model's frozen LM head must still read the chosen texts from the reward "
                             "model's hidden states; measured on tiny: PPO against it kept the annotator's win rate "
                             "and the task accuracy that it lost against a model trained without it (wip/README.md); "
                             "0 turns it off")
    lora: bool = _f(False, "train LoRA adapters (+ the score head in full) instead of every weight")
    lora_r: int = _f(16, "LoRA rank when --lora")
    max_length: int = _f(320, "tokens per prompt + answer (longer pairs are dropped)")
    logging_steps: int = _f(10, "steps between logged losses")
    bf16: bool = _f(True, "bf16 autocast in both trainers (measured on tiny: 1.5× faster, the same held-out accuracy "
                          "within noise; wip/README.md); float32, with a warning, where bf16 is slow; --no_bf16 "
                          "asks for float32")
    seed: int = _f(0, "seed of prompts, sampling and training")

    OVERRIDES: ClassVar[dict] = {
        "micro": {"n_prompts": 24, "n_samples": 3, "max_new_tokens": 16, "epochs": 1.0, "batch_size": 8,
                  "logging_steps": 1, "reference_answers": "all"},  # micro answers nothing right
        # full: V × T logits of every chosen text (V ≈ 150k) would cost gigabytes; not measured there, opt in
        "full": {"lora": True, "max_length": 1024, "lr": 5e-5, "epochs": 1.0, "lm_coef": 0.0,
                 "ratings_lr": 1e-4,  # twice the pairwise model's, as on tiny; not measured on full
                 "data": FULL_PREFERENCES, "data_split": "train_prefs"},  # human-scale pairs: no ratings model there
    }


# TRL 1.16's DPO loss types (`trl.DPOConfig.loss_type`)
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
_SMOOTHED = {"robust", "exo_pair", "aot", "aot_unpaired"}  # the losses that read --label_smoothing


@dataclass(frozen=True)
class DPOConfig(_Profiled):
    model: str = _f("", "policy to start from, and the frozen reference (default: runs/<profile>/sft)")
    data: str = _f("", "preference pairs instead of the reward stage's (runs/<profile>/reward/pairs.jsonl, each "
                       "prompt keeping its train/eval split): any file or hub id `lab reward --data` reads")
    data_split: str = _f("train", "split of a hub dataset given with --data")
    loss: str = _f("sigmoid", "TRL's loss_type, comma separated: 'sigmoid' is DPO's; 'sigmoid,sft' adds the SFT "
                              "loss on the chosen answers (notebook 05, tiny, five seeds: win rate vs SFT on the "
                              "validation prompts 0.47 → 0.67, off-task answers 0.080 → 0.015; wip/README.md)")
    label_smoothing: float = _f(0.0, "the share of preference labels taken to be flipped: 'robust' (below 0.5; "
                                     "its paper suggests 0.1; at 0 it is 'sigmoid') and 'exo_pair' (above 0; its "
                                     "paper suggests 1e-3) read it, and 'aot'/'aot_unpaired' smooth with it")
    beta: float = _f(0.1, "β of the implicit reward β·log π/π_ref (chosen on tiny with lr and epochs, among nine "
                          "settings by the annotator's win rate on the validation prompts, one seed; wip/README.md)")
    lr: float = _f(5e-5, "learning rate, decayed linearly to zero (tiny: 5e-4 collapsed the policy)")
    epochs: float = _f(2.0, "passes over the training pairs (tiny: 1 → win rate 0.64, 2 → 0.77, 3 → 0.69)")
    batch_size: int = _f(16, "pairs per step")
    max_length: int = _f(320, "tokens per prompt + answer (longer pairs are left out)")
    eval_fraction: float = _f(0.2, "share of --data's prompts whose pairs are held out (a record's own \"split\": "
                                   "\"train\" or \"eval\" is kept)")
    lora: bool = _f(False, "train LoRA adapters (merged into the saved policy); the reference is the policy with "
                           "its adapter disabled")
    lora_r: int = _f(16, "LoRA rank when --lora")
    bf16: bool = _f(True, "bf16 autocast (float32, with a warning, where bf16 is slow); --no_bf16 asks for float32")
    logging_steps: int = _f(10, "steps between logged losses")
    seed: int = _f(0, "seed of the data order and of --data's held-out split")

    def check_together(self) -> None:
        from .errors import LabError
        losses = self.loss.split(",")
        if not all(loss in DPO_LOSSES for loss in losses):
            raise LabError(f"--loss is {self.loss!r}", fix="give TRL loss types, comma separated, e.g. sigmoid or "
                                                           f"sigmoid,sft (TRL 1.16 knows {', '.join(DPO_LOSSES)})")
        if "exo_pair" in losses and self.label_smoothing == 0:  # TRL's loss takes log(ε)
            raise LabError("--loss exo_pair is EXO's loss against labels smoothed by ε, and --label_smoothing is 0",
                           fix="give --label_smoothing 1e-3 (EXO's paper), or another --loss")
        if "robust" in losses and not self.label_smoothing < 0.5:
            raise LabError(f"--label_smoothing {self.label_smoothing} is robust DPO's chance that a label is "
                           "flipped, which must be below 0.5", fix="give e.g. --label_smoothing 0.1")
        if self.label_smoothing and not set(losses) & _SMOOTHED:
            raise LabError(f"--label_smoothing {self.label_smoothing} is read by none of --loss {self.loss}",
                           fix=f"drop --label_smoothing, or use a loss that reads it: {', '.join(sorted(_SMOOTHED))}")

    OVERRIDES: ClassVar[dict] = {
        "micro": {"epochs": 1.0, "batch_size": 4, "logging_steps": 1},
        # not measured on a GPU: a LoRA policy (the reference is the same weights with the adapter off) at a
        # learning rate for LoRA, on the reward stage's pairs (on full, those of its public preference set)
        "full": {"lora": True, "lr": 5e-6, "epochs": 1.0, "max_length": 1024},
    }


@dataclass(frozen=True)
class PPOConfig(_Profiled):
    model: str = _f("", "policy to start from (default: runs/<profile>/sft)")
    reward_model: str = _f("", "reward model folder (default: runs/<profile>/reward)")
    data: str = _f("", "prompts to optimise on instead of the world's tasks: an Alpaca or TRL prompt-only "
                       ".json/.jsonl, any preference-pair file `lab reward --data` reads (its prompts), the "
                       "arena's votes.db, or a hub id")
    data_split: str = _f("train", "split of a hub dataset given with --data")
    n_prompts: int = _f(1024, "training prompts (the world's tasks on training-split entities, their own seed; "
                              "with --data a seeded sample of the file's distinct prompts)")
    max_prompt_length: int = _f(192, "prompts longer than this (tokens) are left out and counted")
    iterations: int = _f(25, "PPO iterations (rollout + optimisation); measured on tiny at β 0.2 (reward model "
                             "before 2026-12-01): 25 → mean-reward gain +0.54, win rate vs SFT 0.78 (seed 0); 40 "
                             "(against the earlier float32 reward model) → +0.56, 0.83 on seed 0 but +0.35, 0.64 on "
                             "seed 2 (wip/README.md)")
    rollout_batch: int = _f(64, "prompts answered per iteration (episodes); measured on tiny with an earlier SFT "
                                 "model, 40 iterations: 64 → mean-reward gain 0.57, win rate vs SFT 0.72; 32 → 0.35, 0.69")
    mini_batch: int = _f(8, "episodes per gradient step (like rollout_batch, global: under torchrun each process "
                            "takes an equal share)")
    grad_accum: int = _f(1, "minibatches accumulated per optimizer step")
    ppo_epochs: int = _f(4, "passes over each rollout batch")
    response_length: int = _f(48, "tokens sampled per response (a response without EOS by then is penalised)")
    temperature: float = _f(0.7, "sampling temperature (log-probabilities use the same T)")
    lr: float = _f(3e-5, "learning rate of policy and value model, decayed linearly to zero")
    kl_coef: float = _f(0.3, "β of the per-token KL penalty against the reference, and its floor under kl_floor "
                             "(chosen on tiny among 0.2, 0.25, 0.3 and 0.35, by the annotator's win rate on the "
                             "validation prompts, `lab eval --split validation`; the tables are in wip/README.md)")
    adaptive_kl: bool = _f(True, "adapt β towards kl_target (Ziegler et al. 2019); on tiny, with kl_floor, a KL "
                                 "ceiling: the validation win rate over five seeds 0.59 (fixed β 0.3: 0.51), and no "
                                 "seed exploited the reward model (wip/README.md)")
    kl_target: float = _f(1.0, "target KL (nats per response) of the adaptive controller (about the KL of fixed β 0.3 "
                               "on the seeds that did not exploit the reward model)")
    kl_horizon: float = _f(64.0, "horizon (episodes) of the adaptive controller: β moves by at most ×(1 ± 0.2 · "
                                 "rollout_batch / kl_horizon) per iteration")
    kl_floor: bool = _f(True, "the adaptive controller never sets β below kl_coef (a KL ceiling, not a target)")
    cliprange: float = _f(0.2, "policy ratio clip ε")
    cliprange_value: float = _f(0.2, "value clip")
    vf_coef: float = _f(0.1, "weight of the value loss")
    gamma: float = _f(1.0, "discount γ")
    lam: float = _f(0.95, "GAE λ")
    missing_eos_penalty: float = _f(-1.0, "added to the score of a response that never ends (≤ 0)")
    max_grad_norm: float = _f(1.0, "gradient clipping")
    mixed_precision: str = _f("bf16", "'bf16' autocast for every forward pass (weights, optimizer and the "
                                      "log-probability math stay float32; float32 throughout, with a warning, where "
                                      "bf16 is slow) or 'no'")
    attn_implementation: str = _f("eager", "attention kernel of the four models: 'eager' (measured on tiny, CPU, "
                                          "bf16: 11.7 vs 10.4 episodes/s with 'sdpa') or 'sdpa'")
    lora: bool = _f(False, "LoRA policy; the reference is the same model with the adapter disabled")
    lora_r: int = _f(16, "LoRA rank when --lora")
    save_every: int = _f(20, "iterations between resumable checkpoints (0: never)")
    log_every: int = _f(5, "iterations between log lines (0: none)")
    seed: int = _f(0, "seed of prompts, sampling and training")

    def check_together(self) -> None:
        """The flash kernels need a GPU and their package; flex attention failed to compile on this lab's CPU
        machines (a traceback deep inside torch)."""
        import torch

        from .errors import LabError
        if self.attn_implementation.startswith("flash") and self.mixed_precision == "no":  # float32 q, k, v
            raise LabError(f"--attn_implementation {self.attn_implementation} computes in bf16 or fp16 only, and "
                           "--mixed_precision no keeps the four models in float32",
                           fix="use --mixed_precision bf16, or --attn_implementation sdpa")
        if self.attn_implementation.startswith(("flash", "flex")) and not torch.cuda.is_available():
            raise LabError(f"--attn_implementation {self.attn_implementation} runs only on a GPU here",
                           fix="use 'eager' (the default) or 'sdpa' on a CPU")
        if self.adaptive_kl and self.kl_coef <= 0:  # the controller multiplies β: from 0 it never moves
            raise LabError("--adaptive_kl with --kl_coef 0: the controller scales β, so it would stay 0",
                           fix="give --kl_coef the starting β (e.g. 0.1), or --no_adaptive_kl for no KL penalty")
        if self.adaptive_kl and 0.2 * self.rollout_batch >= self.kl_horizon:
            # one update multiplies β by 1 − 0.2 · rollout_batch / kl_horizon at worst: at 0 or below, β hits 0 (or
            # kl_floor) after one rollout under target and, without the floor, never rises again
            raise LabError(f"--kl_horizon {self.kl_horizon:g} with --rollout_batch {self.rollout_batch}: one rollout "
                           "under kl_target would set β to 0 (the controller moves β by up to ×(1 ± 0.2 · "
                           "rollout_batch / kl_horizon))",
                           fix=f"raise --kl_horizon above {0.2 * self.rollout_batch:g} (e.g. {self.rollout_batch:g})")

    OVERRIDES: ClassVar[dict] = {
        "micro": {"n_prompts": 32, "iterations": 2, "rollout_batch": 8, "mini_batch": 4, "ppo_epochs": 2,
                  "response_length": 12, "save_every": 1, "log_every": 1,
                  "max_prompt_length": 512},  # micro's 512-token vocabulary spends ~100 tokens on the template
        "full": {"lora": True, "iterations": 200, "rollout_batch": 64, "mini_batch": 16, "response_length": 128,
                 "max_prompt_length": 512, "lr": 1e-5, "attn_implementation": "sdpa",
                 "adaptive_kl": False,  # a real model's KL per 128-token response is not tiny's: kl_target unmeasured
                 "data": FULL_PREFERENCES, "data_split": "train_prefs"},  # the prompts the reward model was trained for
    }
