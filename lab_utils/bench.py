"""`lab bench`: how fast is this machine, and how much of it do pretraining and PPO use?

Peak: the best of several timed fp32 and bf16 (and, with --mixed_precision fp16, fp16) square matmuls.
Achieved: training FLOPs per token ≈ 6·N (forward + backward through N parameters, an untied input embedding
left out: it is a lookup) + 12·L·T·D (attention scores), as in the PaLM / nanoGPT MFU estimate, times measured
tokens per second.
"""

from __future__ import annotations

import time

import torch

from .config import PretrainConfig
from .modeling import count_params, fresh_accelerator, inference_device, llama_config, sync_device


def matmul_flops(n: int = 2048, dtype=torch.float32, repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of an (n, n) @ (n, n) matmul, on the device the training step uses."""
    device = inference_device()  # where the training step runs too (`fresh_accelerator`'s choice, one process)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm-up
    inner = 50 if device.type == "cuda" else 1  # one GPU matmul takes microseconds: launch and sync would dominate
    best = float("inf")
    for _ in range(repeats):
        sync_device(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync_device(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * inner / best


def train_flops_per_token(n_params: int, cfg: PretrainConfig, n_layers: int | None = None,
                          d_model: int | None = None) -> float:
    return 6 * n_params + 12 * (n_layers or cfg.n_layers) * cfg.seq_len * (d_model or cfg.d_model)


def pretrain_throughput(cfg: PretrainConfig, steps: int = 20, vocab_size: int = 4096) -> dict:
    """Tokens/s of the real training step (same model, optimizer, clipping, schedule and precision) on random tokens:
    the profile's fresh Llama, or with `cfg.model` (profile `full`) that model's architecture, randomly initialised."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    from .pretrain import _make_optimizer, training_precision

    class _Tok:  # llama_config only needs the vocabulary size and the special ids
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

        def __len__(self):
            return vocab_size

    precision = training_precision(cfg.mixed_precision)  # float32 where bf16 is slow, as `lab pretrain` trains there
    accelerator = fresh_accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    if cfg.model:  # the weights do not change the speed: the architecture's config is enough (no remote code)
        config = AutoConfig.from_pretrained(cfg.model)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # as `lab pretrain` loads it: a config
        # that declares bf16 (most hub models' do) would otherwise time bf16 weights and a bf16 optimizer
        vocab_size, shape = config.vocab_size, (config.num_hidden_layers, config.hidden_size)
    else:
        model = LlamaForCausalLM(llama_config(cfg, _Tok()))
        shape = (cfg.n_layers, cfg.d_model)
    opt, schedule = _make_optimizer(model, cfg)
    model, opt = accelerator.prepare(model, opt)
    x = torch.randint(3, vocab_size, (cfg.batch_size, cfg.seq_len), device=accelerator.device)
    timings = []
    for i in range(steps + 3):
        sync_device(accelerator.device)
        t0 = time.perf_counter()
        with accelerator.autocast():
            loss = model(input_ids=x, labels=x).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        sync_device(accelerator.device)
        if i >= 3:  # the first steps warm up allocators and kernels
            timings.append(time.perf_counter() - t0)
    tokens_per_s = cfg.batch_size * cfg.seq_len / (sum(timings) / len(timings))
    model = accelerator.unwrap_model(model)
    n = count_params(model)
    return {"params": n, "tokens_per_s": tokens_per_s,
            "flops_per_s": tokens_per_s * train_flops_per_token(n - lookup_params(model), cfg, *shape),
            "mixed_precision": precision}


def lookup_params(model) -> int:
    """Parameters a token costs no FLOPs through: the input embedding, a table lookup, unless it is tied to the
    output head (the lab's models, SmolLM2), whose matmul 6·N then counts once."""
    table, head = model.get_input_embeddings(), model.get_output_embeddings()
    return 0 if head is not None and head.weight is table.weight else table.weight.numel()


def run_bench(cfg: PretrainConfig, steps: int = 20, vocab_size: int = 4096, ppo_cfg=None, tokenizer=None,
              profile: str = "tiny") -> dict:
    """Print and return the machine's matmul peaks, the pretraining step's throughput and, given a
    tokenizer, PPO's episodes/s and sampling tokens/s."""
    fp32 = matmul_flops(dtype=torch.float32)
    bf16 = matmul_flops(dtype=torch.bfloat16)
    fp16 = matmul_flops(dtype=torch.float16) if cfg.mixed_precision == "fp16" else None  # the peak fp16 trains at
    train = pretrain_throughput(cfg, steps, vocab_size)
    peak = {"bf16": bf16, "fp16": fp16}.get(train["mixed_precision"]) or fp32  # the precision it trained in
    result = {"matmul_fp32_gflops": round(fp32 / 1e9, 1), "matmul_bf16_gflops": round(bf16 / 1e9, 1),
              **({"matmul_fp16_gflops": round(fp16 / 1e9, 1)} if fp16 else {}),
              "pretrain_tokens_per_s": round(train["tokens_per_s"], 1),
              "pretrain_gflops": round(train["flops_per_s"] / 1e9, 1),
              "fraction_of_fp32_peak": round(train["flops_per_s"] / fp32, 3),
              "fraction_of_matching_peak": round(train["flops_per_s"] / peak, 3),
              "params": train["params"], "mixed_precision": train["mixed_precision"],
              "threads": torch.get_num_threads()}
    if ppo_cfg is not None and tokenizer is not None:
        result |= ppo_throughput(cfg, ppo_cfg, tokenizer, profile=profile)
    width = max(map(len, result))
    print("\n".join(f"{k:<{width}}  {v}" for k, v in result.items()))
    return result


def ppo_throughput(cfg: PretrainConfig, ppo_cfg, tokenizer, iterations: int = 3, profile: str = "tiny") -> dict:
    """PPO episodes/s and sampling tokens/s on freshly initialised models: the profile's size, or with `cfg.model`
    that model's architecture (and `tokenizer` its own).

    Policy, reference, value and reward model are separate models (as on `tiny`); the prompts are the
    world's Alpaca prompts. Random weights rarely emit EOS, so every response runs to full length: a
    worst case for the sampling step.
    """
    import copy

    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from . import tasks
    from .config import WorldConfig, build_world_from
    from .generation import alpaca_prompts, without_unsampled_ids
    from .ppo import PPOTrainer
    from .reward import RewardModel

    torch.manual_seed(cfg.seed)
    config = AutoConfig.from_pretrained(cfg.model) if cfg.model else llama_config(cfg, tokenizer)
    config.vocab_size = max(config.vocab_size, len(tokenizer))  # room for a PAD the tokenizer was given
    config.pad_token_id = tokenizer.pad_token_id
    policy = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # float32 as the stages load models
    ref_model = copy.deepcopy(policy).requires_grad_(False)
    config.num_labels = 1  # the value and reward models: one output each
    value_model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    reward_model = RewardModel(AutoModelForSequenceClassification.from_config(config, dtype=torch.float32).eval(),
                               tokenizer)
    prompts = alpaca_prompts(tasks.sft_records(build_world_from(WorldConfig.for_profile(profile)), 256, seed=5))
    trainer = PPOTrainer(ppo_cfg, policy, ref_model, value_model, reward_model, tokenizer, prompts,
                         log=lambda *_: None)
    enc = tokenizer(prompts[: ppo_cfg.rollout_batch], return_tensors="pt", padding=True, padding_side="left")

    def sample(new_tokens: int) -> None:  # as the rollout samples: under the trainer's autocast, no gradients
        with torch.no_grad(), trainer.autocast():
            policy.generate(**enc, do_sample=True, top_k=0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            pad_token_id=tokenizer.pad_token_id, **without_unsampled_ids(policy, tokenizer))

    sample(2)  # warm-up: first-call setup is not sampling speed
    t0 = time.perf_counter()
    sample(ppo_cfg.response_length)
    gen_tokens_per_s = ppo_cfg.rollout_batch * ppo_cfg.response_length / (time.perf_counter() - t0)
    trainer.step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(iterations):
        trainer.step()
    episodes_per_s = iterations * ppo_cfg.rollout_batch / (time.perf_counter() - t0)
    return {"ppo_episodes_per_s": round(episodes_per_s, 2), "generation_tokens_per_s": round(gen_tokens_per_s, 1),
            "ppo_rollout_batch": ppo_cfg.rollout_batch, "ppo_response_length": ppo_cfg.response_length}
