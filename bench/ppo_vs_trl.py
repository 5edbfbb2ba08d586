"""Benchmark: our PPO (`lab_utils.ppo.PPOTrainer`) against trl 1.12.0's `trl.experimental.ppo.PPOTrainer`
— the last trl release that ships one — on identical models, prompts and settings.

The two stacks need different trl versions, so each side runs in its own venv as a subprocess of this
script: ours in `.venv` (trl 1.16), the peer in `.venv-trl112` (see bench/README.md to create it).
The driver (this script without `worker`) builds the shared inputs once — tokenizer, policy and reward
model folders, the prompt list, the settings — into one work folder, runs both workers one after the
other with the same torch thread count, and prints a side-by-side table (also written as JSON).

Per side: wall time of the training loop alone (models already loaded), episodes/s, the process's
peak RSS, the mean reward-model score of the first iteration and over the last quarter of the iterations,
with its standard error (the score is normalised and includes the missing-EOS penalty, as trl logs `objective/scores`),
`rlhf_reward` (score − β·KL) and the KL at the end.

    nice -n 19 .venv/bin/python bench/ppo_vs_trl.py --episodes 256          # the full comparison
    .venv/bin/python bench/ppo_vs_trl.py --profile micro --models random --episodes 16   # a smoke test

Only the standard library is imported at the top: the trl 1.12 worker runs this file with the other
venv's python, where `lab_utils` (built for trl 1.16) is not importable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("trl112", "ours")
PYTHONS = {"ours": ".venv/bin/python", "trl112": ".venv-trl112/bin/python"}
TRL_VENV_HELP = ("python3 -m venv .venv-trl112 && .venv-trl112/bin/pip install torch==2.13.0 trl==1.12.0 "
                 "transformers==5.24.0")

# The settings both trainers get; names follow our PPOConfig. Defaults: the measured peer
# (batch 8, 4 PPO epochs, 32-token responses) with our tiny profile's PPO hyper-parameters of the results in
# bench/README.md (β 0.2; the tiny profile's default has changed since, to 0.3, which does not change the speed).
SETTINGS = {
    "episodes": (256, "episodes (prompts answered) per side; a multiple of --rollout-batch"),
    "rollout_batch": (8, "prompts answered per iteration"),
    "mini_batch": (8, "episodes per optimizer step (a divisor of --rollout-batch)"),
    "ppo_epochs": (4, "passes over each rollout batch"),
    "response_length": (32, "tokens sampled per response"),
    "temperature": (0.7, "sampling temperature (log-probabilities use the same T)"),
    "lr": (3e-5, "learning rate of policy and value model, decayed linearly to zero"),
    "kl_coef": (0.2, "β of the per-token KL penalty (k1 estimator, fixed)"),
    "cliprange": (0.2, "policy ratio clip ε"),
    "cliprange_value": (0.2, "value clip"),
    "vf_coef": (0.1, "weight of the value loss"),
    "gamma": (1.0, "discount γ"),
    "lam": (0.95, "GAE λ"),
    "missing_eos_penalty": (-1.0, "added to the score of a response without EOS (≤ 0; trl gets its negation)"),
    "mixed_precision": ("bf16", "'bf16': autocast on both sides (trl: bf16=True and an explicit autocast) or 'no'"),
    "attn_implementation": ("eager", "attention kernel of all four models on both sides ('eager' or 'sdpa')"),
    "seed": (0, "seed of sampling and training"),
    "threads": (2, "torch intra-op threads in each worker (and OMP_NUM_THREADS)"),
}


# ------------------------------------------------------------------ worker: trl 1.12.0 (.venv-trl112)

def trl_config(s: dict, output_dir: str):
    """trl 1.12's PPOConfig with our settings. One trl "update" = one of our iterations:
    rollout batch = per_device_train_batch_size × gradient_accumulation_steps (× 1 process), split into
    `num_mini_batches` minibatches, one optimizer step per minibatch when gradient_accumulation_steps = 1."""
    import torch
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(
        output_dir=output_dir, per_device_train_batch_size=s["rollout_batch"], gradient_accumulation_steps=1,
        num_mini_batches=s["rollout_batch"] // s["mini_batch"], total_episodes=s["episodes"],
        num_ppo_epochs=s["ppo_epochs"], response_length=s["response_length"], stop_token="eos",
        temperature=s["temperature"], learning_rate=s["lr"], lr_scheduler_type="linear", warmup_steps=0,
        kl_coef=s["kl_coef"], kl_estimator="k1", cliprange=s["cliprange"], cliprange_value=s["cliprange_value"],
        vf_coef=s["vf_coef"], gamma=s["gamma"], lam=s["lam"], whiten_rewards=False,
        missing_eos_penalty=-s["missing_eos_penalty"],  # trl subtracts it: a positive number
        adam_epsilon=1e-5, weight_decay=0.0,  # as our AdamW
        local_rollout_forward_batch_size=s["rollout_batch"], num_sample_generations=0,
        bf16=s["mixed_precision"] == "bf16", gradient_checkpointing=False,  # trl's default True; ours never checkpoints
        use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0, seed=s["seed"],
    )


def normalised_reward_model(path: str, load_kwargs: dict):
    """The reward model with its saved normalisation folded into the score head: trl reads
    `model.score(hidden)`, our `RewardModel` returns (raw − mean) / std."""
    import torch
    from transformers import AutoModelForSequenceClassification

    class NormalisedScore(torch.nn.Module):
        def __init__(self, head, mean: float, std: float):
            super().__init__()
            self.head, self.mean, self.std = head, mean, std

        def forward(self, hidden):  # in float32 like ours, also under autocast (bf16 would round the score)
            return (self.head(hidden).float() - self.mean) / self.std

    reward_model = AutoModelForSequenceClassification.from_pretrained(path, **load_kwargs)
    norm_file = Path(path) / "normalization.json"
    norm = json.loads(norm_file.read_text()) if norm_file.exists() else {"mean": 0.0, "std": 1.0}
    reward_model.score = NormalisedScore(reward_model.score, norm["mean"], norm["std"])
    return reward_model.eval()


def run_trl112(spec: dict) -> tuple[list[dict], float, str]:
    import torch
    import trl.experimental.ppo.ppo_trainer as trl_ppo
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              PrinterCallback, TrainerCallback, set_seed)
    from trl.experimental.ppo import PPOTrainer

    s = spec["settings"]
    set_seed(s["seed"])
    tok = AutoTokenizer.from_pretrained(spec["policy"])
    tok.padding_side = "left"  # trl's collator pads the prompts; generation needs them left-padded
    attn = {"dtype": torch.float32, "attn_implementation": s["attn_implementation"], "use_safetensors": True}
    load_lm = lambda: AutoModelForCausalLM.from_pretrained(spec["policy"], **attn)  # noqa: E731
    policy, ref_model = load_lm(), load_lm().requires_grad_(False)
    value_model = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], **attn)
    data = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in spec["prompts"]]})  # BOS + prompt
    args = trl_config(s | {"mixed_precision": spec["precision"]}, str(Path(spec["work"]) / "trl112-out"))
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref_model, value_model=value_model,
                         train_dataset=data, reward_model=normalised_reward_model(spec["reward_model"], attn))
    trainer.remove_callback(PrinterCallback)  # it prints every logged dict

    every = max(1, spec["iterations"] // 8)
    ends = []  # when each update ended: its log comes right after it

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            ends.append(time.perf_counter())
            if state.global_step % every == 0 or state.global_step == 1:
                print(f"[trl112] it {state.global_step:>4}  score {logs['objective/scores']:+.3f}  "
                      f"kl {logs['objective/kl']:.3f}", flush=True)

    trainer.add_callback(Progress())
    # trl 1.12's PPOTrainer builds its own `Accelerator()` without `mixed_precision`, so `bf16=True` alone
    # leaves every forward pass in float32 (its numbers are bit-identical to bf16=False). One autocast around
    # the whole loop gives the peer bf16 matmuls everywhere, generation included (`accelerate launch
    # --mixed_precision bf16` would autocast only the policy-and-value forward). Autocast keeps the bf16 copy of
    # each weight until the outermost autocast block ends, and an optimizer step does not invalidate it: without
    # the hook below, trl's policy and value model ran on their first weights for the whole run (KL stayed near 0)
    # and never paid for a cast again. Clearing the copies after every optimizer step keeps them correct and as
    # cheap as they can be: each weight is cast once per optimizer step (4 per update here, the rollout's
    # generation and forward passes sharing the first), as ours is cast once per forward pass.
    print(f"[trl112] accelerate mixed_precision={trainer.accelerator.mixed_precision} "
          f"native_amp={trainer.accelerator.native_amp}", flush=True)
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # under accelerate's wrapper
    optimizer.register_step_post_hook(lambda *_: torch.clear_autocast_cache())
    autocast = torch.autocast(trainer.accelerator.device.type, dtype=torch.bfloat16,
                              enabled=spec["precision"] == "bf16")  # as ours trains: float32 where bf16 is slow
    if not spec["trl_gc"]:  # trl 1.12 calls gc.collect() twice per update (ppo_trainer.py), ~0.2 s each on a CPU
        trl_ppo.gc = type("NoGC", (), {"collect": staticmethod(lambda *a, **k: 0)})
    t0 = time.perf_counter()
    with autocast:
        trainer.train()
    wall = time.perf_counter() - t0
    rows = [{"episodes": h["episode"], "score": h["objective/scores"], "rlhf_reward": h["objective/rlhf_reward"],
             "kl": h["objective/kl"]} for h in trainer.state.log_history if "objective/scores" in h]
    for row, start, end in zip(rows, [t0, *ends], ends):
        row["seconds"] = end - start
    return rows, wall, spec["precision"]


# ------------------------------------------------------------------ worker: ours (.venv)

def run_ours(spec: dict) -> tuple[list[dict], float, str]:
    from lab_utils import ppo
    from lab_utils.config import PPOConfig

    s = spec["settings"]
    cfg = PPOConfig(model=spec["policy"], reward_model=spec["reward_model"], iterations=spec["iterations"],
                    rollout_batch=s["rollout_batch"], mini_batch=s["mini_batch"], grad_accum=1,
                    ppo_epochs=s["ppo_epochs"], response_length=s["response_length"], temperature=s["temperature"],
                    lr=s["lr"], kl_coef=s["kl_coef"], adaptive_kl=False, cliprange=s["cliprange"],
                    cliprange_value=s["cliprange_value"], vf_coef=s["vf_coef"], gamma=s["gamma"], lam=s["lam"],
                    missing_eos_penalty=s["missing_eos_penalty"], mixed_precision=spec["precision"],
                    attn_implementation=s["attn_implementation"], lora=False, save_every=0,
                    log_every=max(1, spec["iterations"] // 8), seed=s["seed"])
    policy, ref_model, value_model, reward_model, tok = ppo.load_models(cfg, Path(spec["policy"]),
                                                                       Path(spec["reward_model"]))
    def log(line: str) -> None:  # our log line's `score` is the bare score; the table's includes the penalty
        print(line.replace("[ppo]", "[ours]  ").replace(" score ", " score(no EOS penalty) "), flush=True)

    trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tok, spec["prompts"], out_dir=None,
                             log=log)
    ends = []
    t0 = time.perf_counter()
    history = trainer.train(callback=lambda *_: ends.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    # trl's `objective/scores` includes the missing-EOS penalty; our `score` is the bare normalised score
    pen = s["missing_eos_penalty"]
    rows = [{"episodes": r["episodes"], "score": r["score"] + pen * (1 - r["eos_rate"]),
             "rlhf_reward": r["rlhf_reward"], "kl": r["kl"], "score_no_penalty": r["score"],
             "eos_rate": r["eos_rate"], "seconds": end - start} for r, start, end in zip(history, [t0, *ends], ends)]
    return rows, wall, "bf16" if trainer.bf16 else "no"  # what it trained in


def summarise(rows: list[dict], wall: float) -> dict:
    """Throughput, peak RSS and the reward at the start (first iteration) and end (the last quarter of the
    iterations: one iteration's mean score over 8 episodes moves by ~0.5, so a shorter window is mostly noise),
    with the standard error of the end's mean over its iterations (which treats them as independent: it understates
    the spread of one drifting run). `median_iteration_s` leaves the first iteration out, and a slow spell of a busy
    host moves it less than the wall time."""
    tail = rows[-max(1, len(rows) // 4):]
    mean = lambda key, rs: round(sum(r[key] for r in rs) / len(rs), 4)  # noqa: E731
    scores = [r["score"] for r in tail]
    se = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else math.nan
    episodes = rows[-1]["episodes"]
    return {"iterations": len(rows), "episodes": episodes, "wall_s": round(wall, 2),
            "episodes_per_s": round(episodes / wall, 3),
            "median_iteration_s": round(statistics.median(r["seconds"] for r in rows[1:] or rows), 4),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),  # KiB on Linux
            "reward_start": mean("score", rows[:1]), "reward_end": mean("score", tail), "reward_end_se": round(se, 4),
            "rlhf_reward_start": mean("rlhf_reward", rows[:1]), "rlhf_reward_end": mean("rlhf_reward", tail),
            "kl_end": mean("kl", tail), "history": rows}


def worker(side: str, spec_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["settings"]["threads"])
    rows, wall, precision = (run_ours if side == "ours" else run_trl112)(spec)
    result = summarise(rows, wall) | {"precision": precision, "trl_gc": spec["trl_gc"] if side == "trl112" else None,
                                      "load_1min": round(os.getloadavg()[0], 2),  # as the run ends: a busy host?
                                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                                      "trl": __import__("trl").__version__,
                                      "transformers": __import__("transformers").__version__}
    (Path(spec["work"]) / f"{side}.json").write_text(json.dumps(result, indent=1))


# ------------------------------------------------------------------ driver (.venv): shared inputs

def tokenizer_dir(profile: str) -> Path:
    """runs/<profile>/tokenizer, trained first when it is missing."""
    path = ROOT / "runs" / profile / "tokenizer"
    if not (path / "tokenizer.json").exists():
        from lab_utils.stages import run_tokenizer
        run_tokenizer(profile, out=ROOT / "runs" / profile)
    return path


def random_models(profile: str, work: Path) -> tuple[Path, Path]:
    """A seeded, freshly initialised Llama policy and a one-output `LlamaForSequenceClassification` reward
    model of the profile's size (tiny: 4 layers, D = 256, ~3.7M parameters), saved with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM, LlamaForSequenceClassification

    from lab_utils.config import PretrainConfig
    from lab_utils.modeling import llama_config

    tok = AutoTokenizer.from_pretrained(tokenizer_dir(profile))
    config = llama_config(PretrainConfig.for_profile(profile), tok)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    config.num_labels = 1
    torch.manual_seed(1)
    reward = LlamaForSequenceClassification(config)
    for model, name in ((policy, "policy"), (reward, "reward")):
        model.save_pretrained(work / name)
        tok.save_pretrained(work / name)
    return work / "policy", work / "reward"


def prompts_for(profile: str, n: int, seed: int) -> list[str]:
    """The world's Alpaca prompts, drawn as `lab ppo` draws its training prompts."""
    from lab_utils import tasks
    from lab_utils.config import WorldConfig, build_world_from
    from lab_utils.generation import alpaca_prompts

    return alpaca_prompts(tasks.sft_records(build_world_from(WorldConfig.for_profile(profile)), n, seed=seed + 2))


def real_models(profile: str) -> tuple[Path, Path] | None:
    sft, reward = ROOT / "runs" / profile / "sft", ROOT / "runs" / profile / "reward"
    return (sft, reward) if (sft / "config.json").exists() and (reward / "config.json").exists() else None


def build_spec(args, work: Path) -> dict:
    settings = {k: getattr(args, k) for k in SETTINGS}
    if settings["episodes"] % settings["rollout_batch"] or settings["rollout_batch"] % settings["mini_batch"]:
        sys.exit("--episodes must be a multiple of --rollout-batch, and --rollout-batch of --mini-batch")
    models = args.models or ("real" if real_models(args.profile) else "random")
    if models == "real" and real_models(args.profile) is None:
        sys.exit(f"--models real needs runs/{args.profile}/sft and runs/{args.profile}/reward: run `lab reward` "
                 f"first, or use --models random")
    policy, reward = real_models(args.profile) if models == "real" else random_models(args.profile, work)
    from lab_utils.modeling import count_params
    from lab_utils.pretrain import training_precision
    from transformers import AutoModelForCausalLM
    n_params = count_params(AutoModelForCausalLM.from_pretrained(policy, use_safetensors=True))
    # the precision both sides train in: ours falls back to float32 where bf16 is slow, and trl must then too
    precision = training_precision(settings["mixed_precision"])
    if precision != settings["mixed_precision"]:
        print("[bench] this CPU has no fast bf16: both sides train in float32", flush=True)
    return {"work": str(work), "profile": args.profile, "models": models, "policy": str(policy),
            "precision": precision, "trl_gc": not args.trl_no_gc,
            "reward_model": str(reward), "policy_params": n_params, "settings": settings,
            "iterations": settings["episodes"] // settings["rollout_batch"],
            "prompts": prompts_for(args.profile, args.n_prompts, settings["seed"])}


# ------------------------------------------------------------------ driver: run the workers, report

def run_side(side: str, spec_path: Path, threads: int) -> dict:
    python = ROOT / PYTHONS[side]
    if not python.exists():
        sys.exit(f"no {python}: create the venv first ({TRL_VENV_HELP})" if side == "trl112" else f"no {python}")
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    print(f"\n=== {side}: {python.relative_to(ROOT)} ===", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([str(python), __file__, "worker", side, str(spec_path)], cwd=ROOT, env=env)
    if done.returncode:
        sys.exit(f"{side} worker failed (exit {done.returncode})")
    result = json.loads((spec_path.parent / f"{side}.json").read_text())
    return result | {"process_s": round(time.perf_counter() - t0, 2)}


ROWS = ("episodes", "wall_s", "episodes_per_s", "median_iteration_s", "peak_rss_gb", "reward_start", "reward_end",
        "reward_end_se", "rlhf_reward_start", "rlhf_reward_end", "kl_end", "process_s", "precision", "trl_gc",
        "load_1min", "trl", "torch", "threads")


def table(results: dict) -> str:
    sides = [s for s in SIDES if s in results]
    lines = [f"{'':<18}" + "".join(f"{s:>14}" for s in sides)]
    lines += [f"{k:<18}" + "".join(f"{results[s][k]!s:>14}" for s in sides) for k in ROWS]
    if len(sides) == 2:
        ours, peer = results["ours"], results["trl112"]
        lines.append(f"\nspeed-up ours / trl 1.12: {ours['episodes_per_s'] / peer['episodes_per_s']:.2f}x "
                     f"(median iteration: {peer['median_iteration_s'] / ours['median_iteration_s']:.2f}x)   "
                     f"reward_end ours − trl 1.12: {ours['reward_end'] - peer['reward_end']:+.3f}   "
                     f"peak RSS ours / trl 1.12: {ours['peak_rss_gb'] / peer['peak_rss_gb']:.2f}")
        if ours["precision"] != peer["precision"]:
            lines.append(f"NOT COMPARABLE: ours trained in {ours['precision']}, trl 1.12 in {peer['precision']}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--profile", default="tiny", choices=("micro", "tiny"), help="model size, tokenizer and world")
    p.add_argument("--models", choices=("real", "random"), default=None,
                   help="real: runs/<profile>/sft and runs/<profile>/reward (default when both exist); "
                        "random: seeded fresh Llamas of the profile's size")
    p.add_argument("--sides", default=",".join(SIDES), help="which workers to run, in order")
    p.add_argument("--n-prompts", type=int, default=1024, help="size of the prompt pool both sides draw from")
    p.add_argument("--work", default=None, help="folder for the shared inputs (default: a temporary one)")
    p.add_argument("--trl-no-gc", action="store_true",
                   help="stub out the two gc.collect() calls trl 1.12's PPOTrainer makes per update (~0.2 s each "
                        "on a 2-core CPU): what its PPO itself costs, apart from that housekeeping")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "ppo_vs_trl.json"), help="JSON report")
    for name, (default, help_) in SETTINGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=help_)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars too
    with tempfile.TemporaryDirectory(prefix="ppo_vs_trl-") as tmp:
        work = Path(args.work or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        spec = build_spec(args, work)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        print(f"[bench] {spec['models']} {args.profile} models ({spec['policy_params']:,} policy parameters), "
              f"{spec['iterations']} iterations × {args.rollout_batch} episodes, {len(spec['prompts'])} prompts, "
              f"{args.threads} threads", flush=True)
        results = {side: run_side(side, spec_path, args.threads) for side in args.sides.split(",")}
    print("\n" + table(results))
    report = {"settings": spec["settings"], "profile": args.profile, "models": spec["models"],
              "policy": spec["policy"], "reward_model": spec["reward_model"],
              "policy_params": spec["policy_params"], "results": results}
    from lab_utils import checkpoints as ck  # the driver runs in .venv (the workers may not)

    ck.write_json(args.out, report)  # temporary file, then rename: an interrupted run leaves the old report whole
    print(f"[bench] wrote {args.out}")
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
