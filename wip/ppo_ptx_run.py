"""PPO with an SFT term (InstructGPT's PPO-ptx, with the SFT demonstrations instead of pretraining text), on a copy
of a run (not run by `make test`; measured in wip/README.md, "PPO with an SFT term").

    PTX=1.0 PPO_WEIGHT=1.0 SEED=0 .venv/bin/python wip/ppo_ptx_run.py RUN_COPY [lab ppo setting=value ...]

Runs `stages.run_ppo` on RUN_COPY (a copy of runs/tiny: it overwrites RUN_COPY/rlhf and its report) with one change
to our PPOTrainer: every minibatch's loss becomes PPO_WEIGHT × (policy loss + vf_coef × value loss) + PTX × the mean
next-token loss of `mini_batch` SFT records (the world's SFT records, the ones `lab sft` trains on, drawn at random,
their answers' tokens only). PPO_WEIGHT=0 is the control: the same updates with the SFT term alone, i.e. SFT
continued on the policy's full weights. Then `lab eval --out RUN_COPY --models sft,rlhf [--split validation]`.
"""
import os
import random
import sys
import time

import torch

from lab_utils import ppo, stages, tasks
from lab_utils.config import SFTConfig, WorldConfig, build_world_from
from lab_utils.reward import encode
from lab_utils.tokenizer import render_alpaca

ptx, ppo_weight = float(os.environ.get("PTX", "1.0")), float(os.environ.get("PPO_WEIGHT", "1.0"))
seed, out = int(os.environ.get("SEED", "0")), sys.argv[1]
changes = {k: (int(v) if v.isdigit() else float(v)) for k, v in (a.split("=") for a in sys.argv[2:])}
records = tasks.sft_records(build_world_from(WorldConfig.for_profile("tiny")), SFTConfig.for_profile("tiny").n_records)


class PTXTrainer(ppo.PPOTrainer):
    """Our trainer, its backward pass given the SFT term."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        prompts = [render_alpaca(r["instruction"], r.get("input", "")) for r in records]
        self.demos = [(len(self.tok(p)["input_ids"]), encode(self.tok, p, r["output"]))
                      for p, r in zip(prompts, records, strict=True)]
        self.ptx_rng = random.Random(seed + 99)
        ppo_backward = self.acc.backward

        def backward(loss):
            drawn = self.ptx_rng.sample(self.demos, self.mini_batch)
            width = max(len(ids) for _, ids in drawn)
            ids = torch.full((len(drawn), width), self.tok.pad_token_id)
            mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
            for i, (start, seq) in enumerate(drawn):
                ids[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq), 1
                labels[i, start:len(seq)] = ids[i, start:len(seq)]  # the answer and its EOS
            with self.autocast():
                logits = self.policy(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                    ignore_index=-100)
            ppo_backward(ppo_weight * loss + ptx * nll)

        self.acc.backward = backward


ppo.PPOTrainer = PTXTrainer
t0 = time.perf_counter()
m = stages.run_ppo("tiny", out=out, seed=seed, **changes)
print("ppo wall", round(time.perf_counter() - t0, 1),
      {k: m[k] for k in ("reward_start", "reward_end", "kl_end", "episodes_per_s")})
