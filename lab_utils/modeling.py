"""The from-scratch model: a Llama (RMSNorm, RoPE, SwiGLU, tied embeddings) from `LlamaConfig`.

Tiny profile: 4 layers, D = 256, 4 heads of 64, MLP 640, vocabulary capped at 4,096 (the
tiny corpus's BPE stops at 2,579 tokens) → about 3.7M parameters.
Every width is a multiple of 64 so the same weights also load as 4-bit NF4 layers on CPU.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from .errors import LabError, cause


def llama_config(cfg, tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.context or cfg.seq_len, rope_theta=10_000.0, tie_word_embeddings=True,
        attention_dropout=0.0, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(cfg, tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised Llama sized by the pretraining config."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(cfg, tokenizer))


def count_params(model) -> int:
    """Unique parameters (tied embedding counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def load_error(path_or_id: str, err: Exception) -> LabError:
    """The one message for a model that does not load: no such folder or id, offline, not a model, a torn file."""
    exists = Path(path_or_id).exists()
    hub_id = not exists and re.fullmatch(r"(?:[\w.-]+/)?[\w.-]+", path_or_id) is not None
    if not exists and not hub_id:  # a path (absolute, or two folders deep): a folder not built
        return LabError(f"no such model folder ({cause(err)})", path=path_or_id,
                        fix="check the path, or build it first: runs/<profile>/<stage> folders come from `lab run` "
                            "(sft-full and sft-lora from notebook 03)")
    if hub_id:  # "runs/sft-ful" is a mistyped folder as often as an id: both are said
        return pickled_only(path_or_id, err) or LabError(
            f"could not load a model: no such folder here, and as a hub id ({cause(err)})", path=path_or_id,
            fix="check the hub id, and that it is in the cache when offline (HF_HUB_OFFLINE=1): download it once "
                "online; or, for a folder, check the path (runs/<profile>/<stage> folders come from `lab run`)")
    return pickled_only(path_or_id, err) or LabError(f"could not load a model ({cause(err)})", path=path_or_id,
                                                     fix="run the earlier stage first (lab run), or pass a model "
                                                         "folder or hub id")


def pickled_only(path_or_id: str, err: Exception) -> LabError | None:
    """The error for a model whose weights exist only as a pickle (pytorch_model.bin): every load here passes
    `use_safetensors=True`, so transformers never unpickles weights. None when `err` is another failure."""
    path = Path(path_or_id)
    pickled = path.is_dir() and any(path.glob("*.bin"))
    if "safetensors" in str(err) and ("does not appear to have a file named" in str(err)  # a hub repo without them
                                      or pickled and "no file named" in str(err)):
        return LabError(f"no safetensors weights ({cause(err)})", path=path_or_id,
                        fix="the lab loads weights only from safetensors files, never from a pickle: pick a model "
                            "(or hub revision) that ships model.safetensors, or load it once yourself and "
                            "save_pretrained it (safetensors is the default)")
    return None


_HEADS = {"causal": ("ForCausalLM", "LMHeadModel"), "reward": ("ForSequenceClassification",)}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_folder(path_or_id: str, kind: str = "causal") -> None:
    """One clear error, before anything loads, for a local path that is not the model asked for: a file (data given
    to --model), a folder without config.json or without a tokenizer, a reward model where a language model goes
    (kind "causal") or a language model where a reward model goes ("reward"). Hub ids pass: their load says why."""
    path, other = Path(path_or_id), "reward" if kind == "causal" else "causal"
    if not path.exists():
        return
    if not path.is_dir():
        raise LabError("a file, not a model folder", path=path_or_id,
                       fix="pass the folder a model was saved to (save_pretrained); data files go to --data")
    config = path / "config.json"
    adapter = (path / "adapter_config.json").is_file()  # a PEFT adapter: transformers loads its base model with it
    if not config.is_file() and not adapter:
        raise LabError("not a model folder (no config.json)", path=path_or_id,
                       fix="pass a folder written by save_pretrained (e.g. runs/<profile>/sft) or a hub id")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise LabError("the model folder has no tokenizer", path=path_or_id,
                       fix="save the tokenizer next to the model: tokenizer.save_pretrained(<the folder>)")
    if not config.is_file():
        return
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        raise LabError("config.json is not a readable JSON object", path=str(config),
                       fix="save the model again with save_pretrained") from None
    if any(str(a).endswith(_HEADS[other]) for a in architectures):
        said = "a reward model" if kind == "causal" else "a language model"
        fix = ("pass a language model (e.g. runs/<profile>/sft); reward models are read by `lab ppo --reward_model`"
               if kind == "causal" else "pass a reward model written by `lab reward` (e.g. runs/<profile>/reward)")
        raise LabError(f"{said} ({architectures[0]}), not the {'language' if kind == 'causal' else 'reward'} model "
                       "asked for", path=path_or_id, fix=fix)


def check_trainable(path_or_id: str) -> None:
    """One clear error, before a training stage starts from `--model`, for a model it cannot train and save: a PEFT
    adapter folder (transformers loads its base with it, but the adapter stays attached and unmerged), or a
    pre-quantised checkpoint (a `*-bnb-4bit` upload: QLoRA quantises the full weights itself, and the stages merge
    and save full weights). Both load for `lab eval`, and both crashed the stages after training, at the save.
    An empty `path_or_id` (no --model: the run's own upstream model) passes."""
    if not path_or_id:
        return
    check_model_folder(path_or_id)
    path = Path(path_or_id)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            raise LabError("a PEFT adapter folder, not a model's full weights", path=path_or_id,
                           fix="pass the merged model the adapter belongs to (e.g. runs/<profile>/sft, not "
                               "sft-adapter), or merge it first: PeftModel.from_pretrained(base, folder)"
                               ".merge_and_unload(), then save_pretrained it with its tokenizer")
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))  # check_model_folder read it
    else:  # a hub id: its config alone (cached, or one small download); a failure is the load's to explain
        from transformers import AutoConfig
        try:
            config = AutoConfig.from_pretrained(path_or_id).to_dict()
        except (OSError, ValueError):
            return
    quant = config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
        raise LabError(f"a pre-quantised checkpoint (quantization_config: {method}): the training stages start "
                       "from full weights", path=path_or_id,
                       fix="pass the unquantised model it was made from (`lab sft --method qlora`, the default, "
                           "quantises it to 4 bits itself)")


def sync_device(device: torch.device) -> None:
    """GPU kernels run asynchronously: a timer must wait for them to finish (a CPU has nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_is_fast(device_type: str) -> bool:
    """Whether bf16 matmuls run at least as fast as float32 here: on a GPU that supports bf16, and on a CPU whose oneDNN
    has bf16 kernels (AVX512 or AMX). On an AVX2-only CPU (measured: a 2-core AMD EPYC) a bf16 matmul took 65 times
    as long as the float32 one, and one tiny pretraining step 32 s instead of 1 s. $LAB_BF16_FAST=1 skips the check
    (the unit tests set it, so that they run the bf16 paths on every CPU)."""
    if os.environ.get("LAB_BF16_FAST") == "1":
        return True
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


def quiet_unless(progress: bool, trainer):
    """`trainer` as given; without `progress` it also prints nothing per logging step. With tqdm off, transformers
    swaps its progress bar for a `PrinterCallback` that prints every logged dict; `trainer.state.log_history` keeps
    them either way."""
    if not progress:
        from transformers import PrinterCallback
        trainer.remove_callback(PrinterCallback)
    return trainer


def use_bf16(requested: bool, device_type: str | None = None) -> bool:
    """bf16 autocast when it is asked for and `bf16_is_fast`; otherwise float32, with a warning when it was asked for.
    The course's numbers were measured under bf16: in float32 they differ (README, "A CPU without bf16 kernels")."""
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if not requested or bf16_is_fast(device_type):
        return requested
    warnings.warn(f"bf16 was asked for, but this {device_type.upper()} has no native bf16 "
                  f"({torch.backends.cpu.get_cpu_capability() if device_type == 'cpu' else device_type}): its bf16 "
                  "matmuls run dozens of times slower than float32, so this stage trains in float32 (its numbers "
                  "will differ a little from the course's, measured under bf16). --mixed_precision no or --no_bf16 "
                  "asks for float32 and silences this", stacklevel=2)
    return False


def inference_device() -> torch.device:
    """Where a model that only answers or scores runs (`lab eval`, the apps, the reward stage's sampling): this
    process's GPU when there is one (LOCAL_RANK's under `accelerate launch` or torchrun), else the CPU. Training
    stages leave placement to accelerate instead."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def load_causal_lm(path_or_id: str, dtype=torch.float32, device: str | torch.device | None = None):
    """A causal LM and its tokenizer from a folder or hub id; never runs remote code. On `device` when given (else
    the CPU, where from_pretrained puts it: a trainer then places it)."""
    tok = load_tokenizer(path_or_id)
    try:
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, SafetensorError) as err:  # no such folder or id, offline, not a model, a torn file
        raise load_error(path_or_id, err) from None
    give_distinct_pad(model, tok)
    # the lab's sampling settings, and only them: a hub model's generation_config.json (Qwen2.5-Instruct's
    # repetition_penalty 1.1, say) would otherwise fill every setting a `generate` call leaves out, so that PPO would
    # sample from another distribution than the one it scores, and greedy decoding would not be greedy
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id, use_cache=True)
    tok.padding_side = "left"
    return (model.to(device) if device is not None else model), tok


def load_tokenizer(path_or_id: str):
    """The tokenizer of a causal LM's folder or hub id, as saved (`load_causal_lm` then gives it a PAD and the model a
    row for it); one clear error when the folder is not one or the id cannot be had."""
    check_model_folder(path_or_id)
    try:
        tok = AutoTokenizer.from_pretrained(path_or_id)
    except (OSError, ValueError) as err:
        raise load_error(path_or_id, err) from None
    require_eos(tok, path_or_id)
    return tok


def require_eos(tok, path_or_id) -> None:
    """One clear error for a tokenizer without EOS: every stage ends a text with it (pretraining's documents, SFT's
    answers), generation stops at it and PPO cuts answers after it."""
    if tok.eos_token_id is None:
        raise LabError("the model's tokenizer has no EOS token, which ends every document and answer the lab trains "
                       "on and every answer it generates", path=str(path_or_id),
                       fix="pick a model whose tokenizer names one (eos_token in tokenizer_config.json), or set "
                           "tokenizer.eos_token and save the tokenizer with the model")


def give_distinct_pad(model, tok) -> None:
    """`with_distinct_pad`, with the model made to match: a row for the new PAD when the embeddings have none to spare
    (never shrunk: a hub model's spare rows stay, and its GPU-friendly size with them), and PAD in its configs."""
    if with_distinct_pad(tok):
        model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    # also for a tokenizer saved with tokens its model has no row for ([PAD] added without resizing): an id past the
    # embeddings is an IndexError at the first forward
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))


def with_distinct_pad(tok) -> bool:
    """Give `tok` a PAD of its own ("<|pad|>") when it has none or reuses EOS; True when one was added (the model's
    embeddings then need `resize_token_embeddings(len(tok))`). Many hub models ship no PAD, or reuse EOS as PAD; PAD
    must differ from EOS: PPO truncates after the first EOS, and the reward model reads its score at the last token
    that is not PAD."""
    if tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id:
        return False
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    return True


# what `fresh_accelerator` refuses: each one shards the weights, and pretrain.py and ppo.py save the main process's
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)


def fresh_accelerator(**kwargs) -> Accelerator:
    """An `Accelerator` with exactly these settings. accelerate keeps one state per process, and an earlier trainer
    in the same process (a reward model trained under bf16, say) would otherwise decide this one's mixed precision,
    or make asking for another one an error. transformers' `TrainingArguments` resets the state the same way."""
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(**kwargs)
    if accelerator.distributed_type in SHARDED:
        raise LabError(f"accelerate is set up for {accelerator.distributed_type.value}, and the lab's own training "
                       "loops (pretraining, PPO) run one process per device or DDP only: they save the main "
                       "process's copy of the weights, which FSDP and DeepSpeed shard",
                       fix="choose multi-GPU (DDP) in `accelerate config`, or launch without --use_fsdp / "
                           "--use_deepspeed")
    return accelerator
