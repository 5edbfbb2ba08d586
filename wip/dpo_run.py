"""DPO on a run's reward-stage pairs, from its SFT model, as in notebook 05's section 9 (not run by `make test`).

    SEED=0 LOSS=sigmoid,sft .venv/bin/python wip/dpo_run.py runs/tiny BETA LR EPOCHS [bf16] [SAVE_DIR]

Trains with TRL's `DPOTrainer` on the training pairs whose answers both ended (LOSS: TRL's `loss_type`, comma
separated; `sigmoid` is plain DPO, `sigmoid,sft` adds the SFT term), prints the training time and the share of the
held-out pairs its implicit reward ranks right (`reward.response_loglik`, as notebook 05 computes it), and saves
the policy to SAVE_DIR for `lab eval --out COPY_OF_RUN --model SAVE_DIR --name NAME [--split validation]`. The
sweeps in wip/README.md ("DPO on the reward stage's pairs") were run with it.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from lab_utils import reward as R

run, beta, lr, epochs = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
bf16 = len(sys.argv) > 5 and sys.argv[5] == "bf16"
seed = int(os.environ.get("SEED", "0"))
torch.manual_seed(seed)
tok = AutoTokenizer.from_pretrained(run / "sft")
pairs = [json.loads(line) for line in (run / "reward" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
train = [p for p in pairs if p["split"] == "train" and p["chosen_ended"] and p["rejected_ended"]]
held = [p for p in pairs if p["split"] != "train"]
print("train pairs", len(train), "held out", len(held))
args = DPOConfig(output_dir=tempfile.mkdtemp(), beta=beta, learning_rate=lr, num_train_epochs=epochs,
                 per_device_train_batch_size=16, max_length=256, report_to="none", save_strategy="no",
                 logging_steps=10, use_cpu=True, bf16=bf16, disable_tqdm=True, seed=seed, lr_scheduler_type="linear",
                 warmup_steps=0, gradient_checkpointing=False,
                 loss_type=os.environ.get("LOSS", "sigmoid").split(","))
trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(run / "sft", use_safetensors=True), args=args,
                     processing_class=tok,
                     train_dataset=Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")}
                                                      for p in train]))
t0 = time.perf_counter()
trainer.train()
print("train_s", round(time.perf_counter() - t0, 1))
for h in trainer.state.log_history[-3:]:
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in h.items()})
policy, ref = trainer.model.eval(), AutoModelForCausalLM.from_pretrained(run / "sft", use_safetensors=True).eval()


def implicit(side):
    """β-free implicit reward log π − log π_SFT of each held-out pair's `side` answer, on the reward stage's token
    layout (BOS, prompt, answer, EOS when it ended), which is also the layout TRL's DPOTrainer trains on."""
    args = [p["prompt"] for p in held], [p[side] for p in held], [p[f"{side}_ended"] for p in held]
    return R.response_loglik(policy, tok, *args) - R.response_loglik(ref, tok, *args)


by_task = {}
for p, ok in zip(held, (implicit("chosen") > implicit("rejected")).tolist(), strict=True):
    by_task.setdefault(p["task"], []).append(ok)
right = [ok for oks in by_task.values() for ok in oks]
print("heldout implicit-reward accuracy", round(sum(right) / len(right), 4),
      {t: round(sum(v) / len(v), 2) for t, v in by_task.items()})
if len(sys.argv) > 6:
    from lab_utils import checkpoints as ck

    with ck.atomic_dir(Path(sys.argv[6])) as tmp:  # the old model stays until the new one is whole
        trainer.model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
