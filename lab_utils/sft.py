"""Stage 2: supervised fine-tuning on Alpaca records with `trl.SFTTrainer` — QLoRA by default.

QLoRA = the base weights frozen in 4-bit NF4 with double quantisation (`bitsandbytes`) + small
trainable LoRA matrices on every linear layer (`peft`). The data is prompt–completion: the prompt is
the Alpaca prompt, the completion the `output` + EOS, so the loss covers only the response and EOS (their ids split
from the prompt's where generation splits them: `tokenized_records`).

After training, the adapter is kept (`sft-adapter/`) and merged into a full-precision copy of the
base model (`sft/`), which every later stage loads like any other model.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from . import checkpoints as ck
from .config import SFTConfig
from .errors import LabError, cause
from .modeling import check_model_folder, give_distinct_pad, pickled_only, quiet_unless, require_eos, use_bf16
from .tokenizer import chat_template_for, prompt_response_ids, render_alpaca

METHODS = ("qlora", "lora", "full")


def to_prompt_completion(records: list[dict]) -> Dataset:
    """Alpaca records → TRL's prompt–completion format (EOS is appended by the trainer)."""
    return Dataset.from_list([{"prompt": render_alpaca(r["instruction"], r.get("input", "")),
                               "completion": r["output"]} for r in records])


def tokenized_records(records: list[dict], tokenizer) -> Dataset:
    """Alpaca records → `input_ids` and `completion_mask` as the trainer reads them: the prompt (BOS included), then
    the response + EOS, split where generation splits them (`tokenizer.prompt_response_ids`).

    TRL tokenises the prompt–completion text as one string and starts the completion where the prompt's own ids stop
    matching. A byte-level BPE that joins a newline with the spaces after it (GPT-2's, SmolLM2's) then merges the
    prompt's last "\\n" into the response's first token when the response starts with two spaces (indented code):
    the model would learn a first token ("\\n  ") it never gets to sample, since at inference the prompt's "\\n" is
    already there. Where nothing merges these are TRL's ids; the lab's tokenizer keeps "\\n" a token of its own, so on
    it they always are."""
    pairs = prompt_response_ids(tokenizer, [render_alpaca(r["instruction"], r.get("input", "")) for r in records],
                                [r["output"] for r in records])
    eos = [tokenizer.eos_token_id]
    return Dataset.from_list([{"input_ids": p + r + eos, "completion_mask": [0] * len(p) + [1] * (len(r) + 1)}
                              for p, r in pairs])


def nf4_config(compute_dtype=torch.float32) -> BitsAndBytesConfig:
    """4-bit NormalFloat weights, quantisation constants quantised again (double quant).

    Weights are dequantised to `compute_dtype` for each matmul: fp32 on a CPU, bf16 on a GPU (full).
    """
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_for_method(model_path: str, method: str, compute_dtype=torch.float32):
    """The base model as each method trains it: 4-bit + LoRA, fp32 + LoRA, or fp32 with every weight."""
    if method not in METHODS:
        raise LabError(f"unknown method {method!r}", fix=f"use one of: {', '.join(METHODS)}")
    quant = nf4_config(compute_dtype) if method == "qlora" else None
    model = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=quant, dtype=torch.float32,
                                                 use_safetensors=True)
    return model


def lora_config(cfg: SFTConfig) -> LoraConfig:
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def keep_adapters_fp32(model) -> None:
    """Undo TRL's cast of QLoRA adapters to bf16 (made for GPUs with bf16 compute).

    With fp32 compute on a CPU, bf16 adapter weights only lose precision: an Adam step of lr ≈ 5e-4 is
    about one bf16 step at the weights' scale, so updates round away as the learning rate decays.
    """
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def length_limit(cfg: SFTConfig, model) -> int:
    """Tokens a record may take: --max_length, or the model's context where that is shorter (past it the model
    would read positions it never trained on)."""
    context = getattr(model.config, "max_position_embeddings", None)
    return min(cfg.max_length, context) if context else cfg.max_length


def trl_args(cfg: SFTConfig, output_dir: str, progress: bool, max_length: int | None = None) -> TRLSFTConfig:
    """TRL's settings for `cfg`; a run shorter than `logging_steps` still logs its last loss (`final_loss`).
    `max_length`: the records' limit when it is not `cfg.max_length` (`length_limit`)."""
    log_every = min(cfg.logging_steps, cfg.max_steps) if cfg.max_steps > 0 else cfg.logging_steps
    return TRLSFTConfig(
        output_dir=output_dir, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr if cfg.method != "full" else cfg.full_lr, lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_steps, weight_decay=0.0, max_length=max_length or cfg.max_length, packing=False,
        completion_only_loss=True, logging_steps=log_every, save_strategy="no", report_to="none",
        optim="adamw_torch", bf16=use_bf16(cfg.bf16), seed=cfg.seed, disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, activation_checkpointing=False,
    )


def build_trainer(cfg: SFTConfig, model, tokenizer, records: list[dict], output_dir: str,
                  progress: bool = False) -> SFTTrainer:
    """TRL's SFTTrainer as `train_sft` runs it: LoRA attached per `cfg.method` (its A matrices drawn from torch's
    RNG: seed it first), the adapters in fp32, and only the records that still end with their EOS label within
    `length_limit` tokens."""
    peft_cfg = lora_config(cfg) if cfg.method in ("qlora", "lora") else None
    trainer = SFTTrainer(model=model, args=trl_args(cfg, output_dir, progress, length_limit(cfg, model)),
                         train_dataset=tokenized_records(records, tokenizer), processing_class=tokenizer,
                         peft_config=peft_cfg)
    quiet_unless(progress, trainer)
    keep_adapters_fp32(trainer.model)
    # TRL cuts a record longer than max_length and keeps it if any response token is left; cut, it has lost its EOS
    # and would teach the model not to stop. Keep only the records that end with their EOS label.
    eos = tokenizer.eos_token_id
    trainer.train_dataset = trainer.train_dataset.filter(lambda ex: ex["labels"][-1] == eos)
    return trainer


def train_sft(cfg: SFTConfig, base_dir: Path, records: list[dict], out_dir: Path | None = None,
              adapter_dir: Path | None = None, progress: bool = True) -> dict:
    """Fine-tune `base_dir` on `records` with `cfg.method`; save the merged model to `out_dir`."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn when the adapter is attached
    check_model_folder(str(base_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        require_eos(tokenizer, base_dir)  # SFT teaches the model to end its answers with it (checked before the load)
        model = load_for_method(str(base_dir), cfg.method, torch.bfloat16 if use_bf16(cfg.bf16) else torch.float32)
    except (OSError, ValueError, SafetensorError) as err:  # a mistyped folder, a torn file, an uncached hub id offline
        raise pickled_only(str(base_dir), err) or LabError(
            f"could not load the base model ({cause(err)})", path=str(base_dir),
            fix="run `lab pretrain` first, or pass --model a model folder or a hub id") from None
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # a [PAD] added and saved without resizing the model: TRL's padding would index past
        raise LabError(f"the tokenizer has {len(tokenizer)} tokens and the model {rows} embedding rows: the ids past "
                       "them have no embedding", path=str(base_dir),
                       fix="resize the model to its tokenizer (model.resize_token_embeddings(len(tokenizer))) and "
                           "save_pretrained both")
    weight_bytes = model.get_memory_footprint()
    # sizes of the unquantised base, read before LoRA layers are injected into `model`
    full = (AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
            if cfg.method == "qlora" else model)
    total_params, full_bytes = sum(p.numel() for p in full.parameters()), full.get_memory_footprint()
    del full
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, model, tokenizer, records, tmp, progress)
        n_trainable, kept = trainable_params(trainer.model), len(trainer.train_dataset)
        limit = length_limit(cfg, model)
        capped = limit == getattr(model.config, "max_position_embeddings", None)  # the context, not the flag, limits
        why = f"max_length={cfg.max_length}" + (f", the model's context {limit}" if capped else "")
        if kept == 0:
            raise LabError(f"no record fits in {limit} tokens ({why}) with its whole response", path=cfg.data or None,
                           fix="shorten the records" + (", or fine-tune a model with a longer context" if capped else
                                                        ", or raise --max_length"))
        if kept < len(records):
            warnings.warn(f"{len(records) - kept} of {len(records)} SFT records are longer than {limit} tokens "
                          f"({why}) and were left out (cut, they would lose their EOS)", stacklevel=2)
        trainer.train()
    train_s = time.perf_counter() - t0
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    metrics = {"method": cfg.method, "trainable_params": n_trainable, "total_params": total_params,
               "weight_bytes_4bit": _bytes_4bit(base_dir) if cfg.method != "qlora" else weight_bytes,
               "weight_bytes_full": weight_bytes if cfg.method != "qlora" else full_bytes,
               "n_train_records": kept, "n_dropped": len(records) - kept, "steps": cfg.max_steps, "train_s": round(train_s, 2),
               "final_loss": history[-1]["loss"] if history else None, "history": history}
    if out_dir is not None:
        save_merged(trainer.model, base_dir, tokenizer, out_dir, adapter_dir, cfg)
    metrics["wall_s"] = round(time.perf_counter() - t0, 2)
    return metrics


def _bytes_4bit(base_dir) -> int:
    return AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=nf4_config(),
                                                use_safetensors=True).get_memory_footprint()


def save_merged(model, base_dir: Path, tokenizer, out_dir: Path, adapter_dir: Path | None, cfg: SFTConfig) -> None:
    """Keep the adapter; merge it into a full-precision copy of the base and save that (safetensors). A full
    fine-tune has no adapter: an earlier run's beside `out_dir` goes, as it belongs to a model no longer there."""
    adapter_dir = adapter_dir or out_dir.with_name(out_dir.name + "-adapter")
    has_adapter = isinstance(model, PeftModel)
    # two folders are replaced one after the other: the stage counts as unfinished until both are (an interrupted
    # save must not leave the old, "finished" model beside the new adapter)
    (out_dir / "metrics.json").unlink(missing_ok=True)
    # the prompt layout the model was tuned on, for `apply_chat_template` (a hub base brings a template of its own)
    tokenizer.chat_template = chat_template_for(tokenizer)
    if has_adapter:
        with ck.atomic_dir(adapter_dir) as tmp:  # usable on its own: `lab eval --model runs/<profile>/sft-adapter`
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)  # the one it trained with (a PAD of its own comes below, for sft/ only)
            if Path(base_dir).is_dir():  # PEFT records the path as given: a relative one breaks from another folder
                config = ck.read_json(tmp / "adapter_config.json")
                ck.write_json(tmp / "adapter_config.json",
                              config | {"base_model_name_or_path": str(Path(base_dir).resolve())})
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
        model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()  # W + (alpha/r)·B·A, in fp32
    # TRL pads with EOS where the base has no PAD (most hub bases): the saved model gets a PAD of its own, as every
    # later stage needs (PPO truncates at the first EOS; the reward model reads its score at the last non-PAD token)
    give_distinct_pad(model, tokenizer)
    with ck.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        ck.write_json(tmp / "lab_config.json", {"sft": cfg.to_dict(), "base": str(base_dir)})
    if not has_adapter and (adapter_dir / "adapter_config.json").is_file():  # removed once the new model is in place
        shutil.rmtree(adapter_dir)
