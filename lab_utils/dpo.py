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
from .reward import _ranking, response_loglik


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


def _lora(cfg: DPOConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig
    return LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules="all-linear", task_type="CAUSAL_LM")


def train(cfg: DPOConfig, policy, ref_model, tokenizer, pairs: list[dict], eval_pairs: list[dict] = (),
          progress: bool = False):
    """(trainer, seconds, held-out loss): TRL's `DPOTrainer` on `pairs` from `policy`, its loss `cfg.loss` (comma
    separated `loss_type`s). `ref_model` is the frozen reference, a model apart from `policy`; None with --lora,
    where the reference is the policy with its adapter disabled. The loss is TRL's `evaluate` on the `eval_pairs`
    whose answers both ended (None without any)."""
    from transformers import PrinterCallback
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    with tempfile.TemporaryDirectory(prefix="lab-dpo-") as scratch:  # save_strategy "no": TRL writes nothing here
        args = TRLDPOConfig(output_dir=scratch, beta=cfg.beta, learning_rate=cfg.lr, loss_type=cfg.loss.split(","),
                            num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
                            max_length=cfg.max_length, logging_steps=cfg.logging_steps, report_to="none",
                            save_strategy="no", use_cpu=not torch.cuda.is_available(), bf16=cfg.bf16,
                            activation_checkpointing=False, disable_tqdm=not progress, seed=cfg.seed)
        trainer = DPOTrainer(model=policy, ref_model=ref_model, processing_class=tokenizer,
                             train_dataset=as_dataset(pairs), args=args, peft_config=_lora(cfg))
        trainer.remove_callback(PrinterCallback)  # with tqdm off it would print every log dict; log_history keeps them
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
