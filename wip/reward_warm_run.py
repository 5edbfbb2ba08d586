"""Weight-averaged reward models (WARM, Ramé et al. 2024) on a run's reward-stage pairs (not run by `make test`;
measured in wip/README.md, "Reward model: averaged over training seeds").

    .venv/bin/python wip/reward_warm_run.py [SEED ...]        (default seeds 0 1 2; reads runs/tiny)

Trains one pairwise reward model per seed with the stage's tiny settings (`reward.train_pairwise`) on the training
pairs of runs/tiny/reward/pairs.jsonl. Every member starts from the same score head (seed 0's draw, as WARM averages
models fine-tuned from one starting point); the seed changes the order of the training pairs. Prints each member's
held-out pairwise accuracy, then that of the first k members' summed score margins (an ensemble) and of the model
whose weights are their mean, for k = 2 … the number of seeds.
"""
import json
import sys
import time
from pathlib import Path

import torch

from lab_utils import reward as R
from lab_utils.config import RewardConfig

run = Path("runs/tiny")
rows = [json.loads(line) for line in (run / "reward" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
train, held = [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] != "train"]
print("train pairs", len(train), "held out", len(held))
build = R.load_score_model


def same_head(*args, **kwargs):
    torch.manual_seed(0)  # the score head every member starts from
    return build(*args, **kwargs)


R.load_score_model = same_head
members, margins = [], []  # each member's score margins (chosen − rejected) on the held-out pairs
for seed in [int(s) for s in sys.argv[1:]] or [0, 1, 2]:
    t0 = time.perf_counter()
    model, tok, _ = R.train_pairwise(RewardConfig.for_profile("tiny", seed=seed), run / "sft", train, progress=False)
    ranked = R.pairwise_accuracy(model, tok, held)
    print("seed", seed, "held out", round(ranked["accuracy"], 4), f"train {time.perf_counter() - t0:.0f} s",
          flush=True)
    members.append(model)
    margins.append(torch.tensor(ranked["margins"]))

for k in range(2, len(members) + 1):
    ensemble = sum(margins[:k])
    average = build(run / "sft", tok.pad_token_id)
    average.load_state_dict({name: sum(m.state_dict()[name].float() for m in members[:k]) / k
                             for name in members[0].state_dict()})
    print(f"{k} members: score ensemble {(ensemble > 0).float().mean().item():.4f}, "
          f"weight average {R.pairwise_accuracy(average, tok, held)['accuracy']:.4f}")
