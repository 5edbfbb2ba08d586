"""What the QLoRA merge costs: the SFT adapter on the NF4 base it was trained against, next to `sft/`, the same
adapter merged into the full-precision base (what every later stage loads). See wip/README.md.

    HF_HUB_OFFLINE=1 .venv/bin/python wip/merge_gap.py [RUN_DIR]      # RUN_DIR: a finished tiny run, runs/tiny
"""

import sys
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from peft import PeftModel

from lab_utils import graders, tasks
from lab_utils.config import WorldConfig, build_world_from
from lab_utils.generation import alpaca_prompts, generate_ended
from lab_utils.modeling import load_causal_lm
from lab_utils.sft import load_for_method

warnings.filterwarnings("ignore")
run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny")
world = build_world_from(WorldConfig.for_profile("tiny"))
merged, tok = load_causal_lm(str(run / "sft"))
as_trained = PeftModel.from_pretrained(load_for_method(str(run / "base"), "qlora"), str(run / "sft-adapter"))
records = tasks.eval_records(world, 24)  # the evaluation prompts of `lab eval` on tiny
prompts = alpaca_prompts(records)

enc = tok(prompts[:32], return_tensors="pt", padding=True)
with torch.no_grad():
    a, b = merged(**enc).logits, as_trained(**enc).logits
real = enc["attention_mask"].bool()
print(f"logits on 32 prompts: max |difference| {(a - b)[real].abs().max():.3f}, "
      f"same top token at {(a.argmax(-1) == b.argmax(-1))[real].float().mean():.3f} of positions")


def accuracy(model) -> tuple[list[str], float, float]:
    """Greedy answers (64 tokens, as the harness), and task accuracy as the mean over tasks and over prompts."""
    answers = [text for text, _ in generate_ended(model, tok, prompts, 64, batch_size=64)]
    by_task = defaultdict(list)
    for rec, text in zip(records, answers):
        by_task[rec["task"]].append(graders.check(world, rec, text))
    over_tasks = sum(sum(v) / len(v) for v in by_task.values()) / len(by_task)
    return answers, over_tasks, sum(map(sum, by_task.values())) / len(records)


(a_answers, *a_acc), (b_answers, *b_acc) = accuracy(merged), accuracy(as_trained)
print(f"task accuracy, mean over tasks / over prompts: merged (sft/) {a_acc[0]:.3f} / {a_acc[1]:.3f}, "
      f"as trained (NF4 + adapter) {b_acc[0]:.3f} / {b_acc[1]:.3f}; "
      f"{sum(x == y for x, y in zip(a_answers, b_answers))} of {len(prompts)} answers the same")
