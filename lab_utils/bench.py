"""`lab bench`: how fast is this machine, and how much of it does pretraining use?

Peak: the best of several timed fp32 (and bf16) square matmuls. Achieved: training FLOPs per token
≈ 6·N (forward + backward through N parameters) + 12·L·T·D (attention scores), as in the
PaLM / nanoGPT MFU estimate, times measured tokens per second.
"""

from __future__ import annotations

import time

import torch

from .config import PretrainConfig
from .modeling import count_params, llama_config


def matmul_flops(n: int = 2048, dtype=torch.float32, repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of an (n, n) @ (n, n) matmul."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_flops_per_token(n_params: int, cfg: PretrainConfig) -> float:
    return 6 * n_params + 12 * cfg.n_layers * cfg.seq_len * cfg.d_model


def pretrain_throughput(cfg: PretrainConfig, steps: int = 20, vocab_size: int = 4096) -> dict:
    """Tokens/s of the real training step (same model, optimizer, precision) on random tokens."""
    from accelerate import Accelerator
    from transformers import LlamaForCausalLM

    class _Tok:  # llama_config only needs the vocabulary size and the special ids
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

        def __len__(self):
            return vocab_size

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    model = LlamaForCausalLM(llama_config(cfg, _Tok()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, opt = accelerator.prepare(model, opt)
    x = torch.randint(3, vocab_size, (cfg.batch_size, cfg.seq_len), device=accelerator.device)
    timings = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        with accelerator.autocast():
            loss = model(input_ids=x, labels=x).loss
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:  # the first steps warm up allocators and kernels
            timings.append(time.perf_counter() - t0)
    tokens_per_s = cfg.batch_size * cfg.seq_len / (sum(timings) / len(timings))
    n = count_params(accelerator.unwrap_model(model))
    return {"params": n, "tokens_per_s": tokens_per_s, "flops_per_s": tokens_per_s * train_flops_per_token(n, cfg),
            "mixed_precision": cfg.mixed_precision}


def run_bench(cfg: PretrainConfig, steps: int = 20, vocab_size: int = 4096) -> dict:
    """Print and return the machine's matmul peaks and the pretraining step's throughput."""
    fp32 = matmul_flops(dtype=torch.float32)
    bf16 = matmul_flops(dtype=torch.bfloat16)
    train = pretrain_throughput(cfg, steps, vocab_size)
    peak = bf16 if cfg.mixed_precision == "bf16" else fp32
    result = {"matmul_fp32_gflops": round(fp32 / 1e9, 1), "matmul_bf16_gflops": round(bf16 / 1e9, 1),
              "pretrain_tokens_per_s": round(train["tokens_per_s"], 1),
              "pretrain_gflops": round(train["flops_per_s"] / 1e9, 1),
              "fraction_of_fp32_peak": round(train["flops_per_s"] / fp32, 3),
              "fraction_of_matching_peak": round(train["flops_per_s"] / peak, 3),
              "params": train["params"], "mixed_precision": cfg.mixed_precision,
              "threads": torch.get_num_threads()}
    width = max(map(len, result))
    print("\n".join(f"{k:<{width}}  {v}" for k, v in result.items()))
    return result
