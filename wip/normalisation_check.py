"""Does the saved reward model give its SFT samples mean 0 and std 1? The reward stage fits the normalisation on every
answer it sampled, repeats counted; notebook 04 can only check it on `reward/ratings.jsonl`, which keeps each distinct
answer to a prompt once. This re-samples the answers with the stage's seed and scores both sets with the saved model.
See wip/README.md.

    HF_HUB_OFFLINE=1 .venv/bin/python wip/normalisation_check.py [RUN_DIR]   # RUN_DIR: a finished tiny run, runs/tiny

About 6 minutes on the 2-core float32 host (the sampling is most of it).
"""

import sys
from pathlib import Path

from lab_utils import reward as R
from lab_utils import reward_data
from lab_utils.config import RewardConfig, WorldConfig, build_world_from
from lab_utils.modeling import load_causal_lm


def main(run: Path) -> None:
    cfg = RewardConfig.for_profile("tiny")
    world = build_world_from(WorldConfig.for_profile("tiny"))
    policy, tokenizer = load_causal_lm(str(run / "sft"), device="cpu")
    _, ratings, samples, *_ = reward_data.sampled_pairs(cfg, world, policy, tokenizer, False)
    print(f"{sum(len(s['responses']) for s in samples)} sampled answers, {len(ratings)} rated (distinct) answers")
    saved = R.RewardModel.load(run / "reward")
    mean, std = R.fit_normalisation(saved.model, saved.tokenizer, samples)
    print(f"saved normalisation: mean {saved.mean!r}, std {saved.std!r}")
    print(f"fitted again on the re-sampled answers with the saved model: mean {mean!r}, std {std!r}")
    seqs = [R.encode(saved.tokenizer, r["prompt"], r["response"], r["ended"]) for r in ratings]
    z = saved.normalise(R.raw_scores(saved.model, saved.tokenizer, seqs))
    print(f"normalised scores of the distinct answers (what notebook 04 checks): mean {z.mean():+.4f}, "
          f"std {z.std():.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny"))
