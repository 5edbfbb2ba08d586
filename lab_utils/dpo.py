"""DPO (Rafailov et al. 2023): the policy fine-tuned directly on preference pairs, no reward model and no sampling.
TRL maintains it (`DPOTrainer`); this module gives it the lab's data, settings and saved layout, and reads the
trained policy as a reward model: its implicit reward β·log π(y | x) / π_ref(y | x) ranks held-out pairs.

Notebook 05 (section 9) writes the loss by hand and checks it against TRL's; `lab dpo` and `stages.run_dpo` train
with this module.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset

from .config import DPOConfig
from .modeling import quiet_unless, use_bf16
from .reward import _ranking, response_loglik
from .tokenizer import prompt_response_ids


def ended(pair: dict, side: str) -> bool:
    """Whether the pair's `side` answer ended with EOS (pairs someone brought carry no flag: they ended)."""
    return pair.get(f"{side}_ended") is not False


def both_ended(pair: dict) -> bool:
    """TRL appends EOS to every answer, so a pair with an answer cut off at the token limit would teach the
    policy to end where the answer never did: DPO trains on the pairs whose two answers ended."""
    return ended(pair, "chosen") and ended(pair, "rejected")


def as_dataset(pairs: list[dict]) -> Dataset:
    """TRL's preference format: the rendered prompt and the two answers as plain text."""
    return Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])


def tokenized_pairs(pairs, tokenizer, max_length: int | None) -> Dataset:
    """`prompt_ids`, `chosen_ids` and `rejected_ids` as TRL's preference collator reads them: each answer's ids split
    from the prompt's where generation splits them (`tokenizer.prompt_response_ids`, as SFT and the reward model
    split them), then EOS; a pair whose prompt alone fills `max_length` is left out, as TRL leaves it out.

    TRL tokenises prompt + answer as one string and cuts both answers at the shorter common prefix: with a GPT-2-style
    tokenizer an indented answer merges the prompt's last "\\n" into its first token, and the other answer then loses
    the prompt's "\\n" too. The lab's tokenizer keeps "\\n" a token of its own; where nothing merges these are TRL's
    ids."""
    pairs = list(pairs)
    prompts = [p["prompt"] for p in pairs]
    chosen = prompt_response_ids(tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected = prompt_response_ids(tokenizer, prompts, [p["rejected"] for p in pairs])
    eos = [tokenizer.eos_token_id]
    rows = [{"prompt_ids": p, "chosen_ids": c + eos, "rejected_ids": r + eos}
            for (p, c), (_, r) in zip(chosen, rejected)]
    return Dataset.from_list([r for r in rows if max_length is None or len(r["prompt_ids"]) < max_length])


def _dpo_trainer_class():
    """TRL's `DPOTrainer` with the lab's split of prompt and answer ids (`tokenized_pairs`) for its train and eval
    data, in place of TRL's own tokenisation."""
    from trl import DPOTrainer

    class LabDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return tokenized_pairs(dataset, processing_class, args.max_length)

    return LabDPOTrainer


def _lora(cfg: DPOConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig
    return LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules="all-linear", task_type="CAUSAL_LM")


def trl_args(cfg: DPOConfig, output_dir: str, progress: bool = False):
    """TRL's settings for `cfg`."""
    from trl import DPOConfig as TRLDPOConfig
    return TRLDPOConfig(output_dir=output_dir, beta=cfg.beta, learning_rate=cfg.lr, loss_type=cfg.loss.split(","),
                        label_smoothing=cfg.label_smoothing,
                        num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
                        max_length=cfg.max_length, logging_steps=cfg.logging_steps, report_to="none",
                        save_strategy="no", use_cpu=not torch.cuda.is_available(), bf16=use_bf16(cfg.bf16),
                        activation_checkpointing=False, disable_tqdm=not progress, seed=cfg.seed)


def train(cfg: DPOConfig, policy, ref_model, tokenizer, pairs: list[dict], eval_pairs: list[dict] = (),
          progress: bool = False):
    """(trainer, seconds, held-out loss): TRL's `DPOTrainer` on `pairs` from `policy`, its loss `cfg.loss` (comma
    separated `loss_type`s). `ref_model` is the frozen reference, a model apart from `policy`; None with --lora,
    where the reference is the policy with its adapter disabled. The loss is TRL's `evaluate` on the `eval_pairs`
    whose answers both ended (None without any)."""
    with tempfile.TemporaryDirectory(prefix="lab-dpo-") as scratch:  # save_strategy "no": TRL writes nothing here
        trainer = _dpo_trainer_class()(model=policy, ref_model=ref_model, processing_class=tokenizer,
                                       train_dataset=as_dataset(pairs), args=trl_args(cfg, scratch, progress),
                                       peft_config=_lora(cfg))
        quiet_unless(progress, trainer)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        ended_pairs = [p for p in eval_pairs if both_ended(p)]
        return trainer, seconds, trainer.evaluate(as_dataset(ended_pairs))["eval_loss"] if ended_pairs else None


def implicit_accuracy(trainer, tokenizer, pairs: list[dict], beta: float) -> dict:
    """The trained policy read as a reward model: each pair ranked by β·[log π/π_ref of the chosen answer − of the
    rejected one] (`reward.response_loglik`, EOS included where an answer ended), π_ref the trainer's reference
    (with LoRA, the policy with its adapter disabled). Same keys as `reward.pairwise_accuracy`; the margins are the
    implicit rewards' differences. In float32, like the saved weights: the trainer's models are unwrapped from the
    bf16 autocast accelerate wraps their forward in (which moves log-probabilities by ~0.1 nats on tiny). The
    unwrapping is in place and also undoes TRL's fused LM head, so the trainer must not train or evaluate after it;
    saving (`save`) is unaffected."""
    def unwrapped(model):
        return trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    policy = unwrapped(trainer.model)
    ref_model = unwrapped(trainer.ref_model) if trainer.ref_model is not None else None

    def loglik(side):
        args = [p["prompt"] for p in pairs], [p[side] for p in pairs], [ended(p, side) for p in pairs]
        if ref_model is not None:
            return response_loglik(policy, tokenizer, *args) - response_loglik(ref_model, tokenizer, *args)
        mine = response_loglik(policy, tokenizer, *args)
        with policy.disable_adapter():
            return mine - response_loglik(policy, tokenizer, *args)
    return _ranking(pairs, beta * loglik("chosen"), beta * loglik("rejected"))


def save(trainer, tokenizer, folder: Path, lora: bool) -> None:
    """The policy as a plain causal LM (with --lora its adapter merged in), with its tokenizer, written in `folder`."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model = model.merge_and_unload() if lora else model
    model.config.use_cache = True  # TRL turns the KV cache off for training; a saved policy generates with it
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
