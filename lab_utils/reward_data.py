"""The preference data of the reward stage and of `lab dpo`: the SFT model's sampled answers labelled by the
annotator, or pairs someone brings (--data: a file, a hub dataset, the arena's vote store; with --mix_previous the
run's previous pairs and ratings too), kept where they fit the model's context, and split into training and held-out
prompts (a prompt's pairs are never split).

`stages.run_reward` calls these in order: `check_inputs` before any work, `sampled_pairs` or `given_pairs`, then
`split_pairs`; `lab dpo` reads the same pairs (`run_pairs`, `fitting`, `rendered_pairs`) and split (`held_out`).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from .config import RewardConfig
from .errors import LabError
from .runs import world_records


REFERENCE_MODES = {"none": (), "train": (False,), "all": (False, True)}  # held-out? → gets the reference answer
# settings of the SFT model's own pairs and of the ratings model: with given pairs there is neither, unless they come
# from the arena's vote store (its ratings) or with --mix_previous (the previous round's ratings)
SAMPLED_ONLY = {"n_samples": "how many answers the SFT model samples per prompt for its own pairs",
                "reference_answers": "whether the SFT records' answers join the sampled ones",
                "ratings_epochs": "the ratings model's training, and given pairs carry no ratings (only a vote store "
                                  "with rated answers does)",
                "ratings_lr": "the ratings model's training, and given pairs carry no ratings (only a vote store with "
                              "rated answers does)"}
RATINGS_FLAGS = ("ratings_epochs", "ratings_lr")
RATINGS_FILE = "ratings.jsonl"  # reward/ratings.jsonl: the ratings the ratings model beside it was trained on


def check_inputs(cfg: RewardConfig, pairs: list[dict] | None, previous: Path,
                 defaults: RewardConfig | None = None) -> None:
    """The reward stage's flag errors, before any work: among them a flag that would be ignored."""
    if pairs is not None and cfg.data:
        raise LabError("both pairs and --data were given", path=cfg.data, fix="pass one of them")
    if pairs is not None and (i := next((i for i, p in enumerate(pairs) if p.get("input")), None)) is not None:
        raise LabError(f"pair {i + 1} has an 'input' (an Alpaca-style pair from `load_pairs`), and given pairs' "
                       "prompts are used as they are", fix="render it into the prompt first: "
                       "render_alpaca(pair['prompt'], pair['input']), as `lab reward --data` does")
    if cfg.mix_previous and not cfg.data:
        raise LabError("--mix_previous adds --data's pairs to the previous ones, and no --data was given",
                       fix="give the new pairs with --data (e.g. --data runs/<profile>/votes.db)")
    if cfg.mix_previous and not previous.is_file():
        raise LabError("no previous preference pairs to mix --data's with", path=str(previous),
                       fix="run `lab reward` once without --mix_previous first, or drop --mix_previous")
    if cfg.mix_previous and not (previous.parent / "metrics.json").is_file():  # written last: the stage finished
        raise LabError("these pairs are not a finished round's: the reward stage that wrote them did not finish "
                       "(interrupted?), so they may hold its --data's pairs beside the previous round's",
                       path=str(previous), fix="put back the previous round's reward folder (from a copy of the run) "
                       "and run again, or drop --mix_previous")
    if (pairs is not None or cfg.data) and cfg.off_topic:
        raise LabError("--off_topic pairs the SFT model's own sampled answers, and given pairs have none",
                       path=cfg.data or None, fix="drop --off_topic, or drop --data to sample from the SFT model")
    if cfg.reference_answers not in REFERENCE_MODES:
        raise LabError(f"unknown --reference_answers {cfg.reference_answers!r}", fix="use none, train or all")
    given = pairs is not None or bool(cfg.data)
    for name, what in SAMPLED_ONLY.items() if given and defaults is not None else ():
        if getattr(cfg, name) != getattr(defaults, name) and not (name in RATINGS_FLAGS
                                                                  and _brings_ratings(cfg, previous)):
            raise LabError(f"--{name} sets {what}; with given pairs it would be ignored", path=cfg.data or None,
                           fix=f"drop --{name}, or drop --data to sample pairs from the SFT model")


def _brings_ratings(cfg: RewardConfig, previous: Path) -> bool:
    """Whether --data brings ratings for the ratings model: a vote store with rated answers, or with --mix_previous
    the previous round's `reward/ratings.jsonl` (`previous` is its `pairs.jsonl`)."""
    from . import votes
    from .preferences import is_vote_store

    return bool(cfg.data) and (is_vote_store(cfg.data) and bool(votes.ratings(cfg.data))
                               or cfg.mix_previous and previous.with_name(RATINGS_FILE).is_file())


def sampled_pairs(cfg: RewardConfig, world, policy, tokenizer, progress: bool):
    """(pairs, ratings, samples, held-out prompts, n off-topic pairs, n too long): the SFT model answers the world's
    reward prompts n_samples times, the annotator labels every pair and rates every answer. Pairs longer than
    --max_length are left out and counted here (RewardTrainer would drop them unseen while n_train_pairs counted
    them)."""
    from . import reward as R

    records = world_records("reward", world, cfg)
    samples = R.sample_responses(policy, tokenizer, records, cfg.n_samples, cfg.temperature,
                                 cfg.max_new_tokens, seed=cfg.seed, progress=progress)
    held = R.held_out_prompts([s["prompt"] for s in samples], cfg.eval_fraction, cfg.seed)
    with_reference = REFERENCE_MODES[cfg.reference_answers]
    candidates = [s | {"responses": s["responses"] + [(s["rec"]["output"], True)]}
                  if (s["prompt"] in held) in with_reference else s for s in samples]
    pairs, ratings = R.label_pairs(world, candidates, cfg.seed)
    off_topic = R.off_topic_pairs(world, [s for s in candidates if s["prompt"] not in held], cfg.off_topic,
                                  cfg.seed)  # only sampled answers get off-topic pairs, and training prompts only
    kept, n_too_long = fitting(pairs + off_topic, tokenizer, cfg.max_length, policy.config.max_position_embeddings,
                               None, stacklevel=4, fix="lower --max_new_tokens")
    off = {id(p) for p in off_topic}  # the kept pairs are the same objects
    return kept, ratings, samples, held, sum(id(p) in off for p in kept), n_too_long


def given_pairs(cfg: RewardConfig, root: Path, pairs: list[dict] | None, policy, tokenizer, progress: bool):
    """(pairs, ratings, samples, held-out prompts, n too long, source) for pairs someone brought (`pairs`, or --data
    and with --mix_previous the run's previous pairs too): the ones that fit the context, the ratings that came with
    them (a vote store's; with --mix_previous the previous round's too), and the SFT model's answers to a seeded
    sample of their prompts, which the reward scale is measured on."""
    from .generation import generate_ended

    source, ratings, held_before = cfg.data or "", [], set()
    if pairs is None:
        pairs = rendered_pairs(cfg.data, cfg.data_split, tokenizer)
        ratings = _rendered_ratings(cfg.data, tokenizer)
        if cfg.mix_previous:
            n_previous, pairs = _with_previous(root / "reward" / "pairs.jsonl", pairs)
            ratings, held_before = _with_previous_ratings(root / "reward" / RATINGS_FILE, ratings)
            source += f" + {n_previous} previous pairs"
    else:  # a null `chosen_ended`/`rejected_ended` means unknown: ended, as the loaders read it; drop it, so that
        # `p.get(flag, True)` below and the saved pairs.jsonl read it so too
        pairs = [{k: v for k, v in p.items() if v is not None or k not in ("chosen_ended", "rejected_ended")}
                 for p in pairs]
    context = policy.config.max_position_embeddings  # past it the model reads positions it never trained on
    pairs, n_too_long = fitting(pairs, tokenizer, cfg.max_length, context, cfg.data or None, stacklevel=4)
    ratings = _fitting_ratings(ratings, tokenizer, min(cfg.max_length, context))
    distinct = sorted({p["prompt"] for p in pairs})
    room = [p for p, ids in zip(distinct, tokenizer(distinct)["input_ids"]) if len(ids) + cfg.max_new_tokens <= context]
    if not room:
        raise LabError(f"no prompt of the pairs leaves room for a {cfg.max_new_tokens}-token answer in the "
                       f"model's context ({context} tokens), so the reward scale cannot be measured",
                       path=cfg.data or None, fix="lower --max_new_tokens or bring shorter prompts")
    prompts = sorted(random.Random(cfg.seed).sample(room, min(cfg.n_prompts, len(room))))
    outs = generate_ended(policy, tokenizer, prompts, cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
                          seed=cfg.seed, desc="SFT answers for the reward scale" if progress else "")
    samples = [{"prompt": p, "responses": [o]} for p, o in zip(prompts, outs)]
    # a prompt held out before stays held out, also one that only ratings had (its answers all tied when sampled)
    held = held_out(pairs, cfg.eval_fraction, cfg.seed) | held_before
    return pairs, ratings, samples, held, n_too_long, source or f"{len(pairs)} given pairs"


def fitting(pairs: list[dict], tokenizer, max_length: int, context: int, path: str | None,
            stacklevel: int = 3, fix: str = "bring shorter pairs") -> tuple[list[dict], int]:
    """(the pairs whose prompt and longer answer fit in --max_length and the model's context, how many did not);
    a warning counts the ones left out (`stacklevel`: at the stage's caller), and an error says what to do when none
    is left."""
    from .reward import within_length

    limit = min(max_length, context)
    kept = within_length(tokenizer, pairs, limit)
    why = f"longer than {limit} tokens (--max_length {max_length}, the model's context {context})"
    if not kept:
        raise LabError(f"all {len(pairs)} preference pairs are {why}", path=path,
                       fix=f"{fix}, or raise --max_length if the model's context allows it")
    if len(kept) < len(pairs):
        warnings.warn(f"{len(pairs) - len(kept)} of {len(pairs)} preference pairs are {why} and were left out",
                      stacklevel=stacklevel)
    return kept, len(pairs) - len(kept)


def _fitting_ratings(ratings: list[dict], tokenizer, limit: int) -> list[dict]:
    """The ratings whose prompt and answer fit in `limit` tokens, as `fitting` keeps pairs; a warning counts the
    others."""
    from .reward import encode

    kept = [r for r in ratings if len(encode(tokenizer, r["prompt"], r["response"], r["ended"])) <= limit]
    if len(kept) < len(ratings):
        warnings.warn(f"{len(ratings) - len(kept)} of {len(ratings)} ratings are longer than {limit} tokens and were "
                      "left out", stacklevel=4)
    return kept


def held_out(pairs: list[dict], eval_fraction: float, seed: int) -> set[str]:
    """The prompts whose pairs are held out: a prompt keeps the split it was given (an earlier round's, a record's
    own; the first one given wins: --mix_previous puts the previous round's pairs first), and a seeded share
    `eval_fraction` of the other prompts is held out."""
    from .reward import held_out_prompts

    fixed = {}
    for p in pairs:
        if p.get("split") in ("train", "eval"):
            fixed.setdefault(p["prompt"], p["split"])
    fresh = [p["prompt"] for p in pairs if p["prompt"] not in fixed]
    return {q for q, split in fixed.items() if split == "eval"} | held_out_prompts(fresh, eval_fraction, seed)


def split_pairs(cfg: RewardConfig, pairs: list[dict], held: set[str], given: bool, n_too_long: int):
    """(training pairs, held-out pairs), or one error that says how to get both."""
    train_pairs, eval_pairs = ([p for p in pairs if (p["prompt"] in held) == e] for e in (False, True))
    if not train_pairs or not eval_pairs:
        n_prompts = len({p["prompt"] for p in pairs})
        why = (f"{len(pairs)} preference pair(s) on {n_prompts} prompt(s) leave no "
               f"{'training' if not train_pairs else 'held-out'} prompt"
               + (f" ({n_too_long} more were too long and left out)" if n_too_long else ""))
        if given and n_prompts < 2:  # no fraction and no record's "split" divides one prompt's pairs
            fix = ("bring pairs on at least two prompts: a prompt's pairs are never split between training and "
                   "held out" + (", or raise --max_length" if n_too_long else ""))
        elif given:
            fix = ("bring pairs on more prompts (a prompt's pairs are never split), "
                   f"{'lower' if not train_pairs else 'raise'} --eval_fraction (now {cfg.eval_fraction}), or give "
                   "some pairs \"split\": \"train\" / \"eval\"")
        else:
            fix = "collect more pairs (--n_prompts)" + (", or raise --max_length" if n_too_long else "")
        raise LabError(why, path=cfg.data or None, fix=fix)
    return train_pairs, eval_pairs


def _run_records(path: Path, what: str, valid, fix: str) -> list[dict]:
    """The records of a JSONL file the reward stage wrote (`pairs.jsonl`, `ratings.jsonl`); a line that is not JSON,
    or whose record `valid` refuses, names itself, `what` it should be, and `fix`."""
    from .data import read_jsonl

    def broken(line) -> LabError:
        return LabError(f"not {what} written by `lab reward`", path=f"{path}:{line}", fix=fix)

    try:
        records = read_jsonl(path)
    except LabError as err:
        if err.where:  # malformed JSON: read_jsonl names the line
            raise broken(err.where.removeprefix("line ")) from None
        # the file as a whole (missing, empty, not UTF-8 text): its own message, with the fix for the run's file
        raise LabError(err.message, path=str(path), fix=fix) from None
    for row in records:
        line = row.pop("_line")
        if not valid(row):
            raise broken(line)
    return records


def run_pairs(path: Path, fix: str) -> list[dict]:
    """The preference pairs the run's reward model was trained and evaluated on (`reward/pairs.jsonl`: rendered
    prompts, each pair with its split); a line that is not one names itself and `fix`."""
    return _run_records(path, "a preference pair", lambda row: all(isinstance(row.get(k), str)
                                                                    for k in ("prompt", "chosen", "rejected")), fix)


def _is_rating(row: dict) -> bool:
    """A line of `reward/ratings.jsonl`: rendered prompt, answer, whether it ended, a whole 1–5 rating."""
    return (isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str)
            and isinstance(row.get("ended"), bool) and type(row.get("rating")) is int and 1 <= row["rating"] <= 5)


def _with_previous_ratings(path: Path, new: list[dict]) -> tuple[list[dict], set[str]]:
    """(ratings, held-out prompts): the ratings of the run's last reward stage (`reward/ratings.jsonl`; none when it
    had none) followed by the `new` ones not among them already, and the prompts they were held out on; a line that is
    not one names itself."""
    if not path.is_file():
        print(f"[lab] reward: no previous ratings ({path} is absent: the last reward stage had none, or predates the "
              f"file) + {len(new)} from --data")
        return new, set()
    previous = _run_records(path, "a rating", _is_rating,
                            fix="run `lab reward` again without --mix_previous to write the file anew")
    # the split is the prompt's: one held out before stays held out
    held = {r["prompt"] for r in previous if r.pop("split", None) == "eval"}
    key = lambda r: (r["prompt"], r["response"], r["ended"], r.get("vote_id"))  # noqa: E731
    seen = {key(r) for r in previous}
    fresh = [r for r in new if key(r) not in seen]
    print(f"[lab] reward: {len(previous)} previous ratings ({path}) + {len(fresh)} from --data")
    return previous + fresh, held


def _with_previous(path: Path, new: list[dict]) -> tuple[int, list[dict]]:
    """(n, pairs): the n pairs of the run's last reward model (`path`, rendered prompts with their split) followed by
    the `new` ones not among them already (a second run with the same votes adds nothing twice)."""
    previous = run_pairs(path, fix="run `lab reward` again without --mix_previous to write the file anew")
    key = lambda p: (p["prompt"], p["chosen"], p["rejected"])  # noqa: E731
    seen = {key(p) for p in previous}
    fresh = [p for p in new if key(p) not in seen]
    n_old = len(new) - len(fresh)
    print(f"[lab] reward: {len(previous)} previous pairs ({path}) + {len(fresh)} from --data"
          + (f" ({n_old} more {'was' if n_old == 1 else 'were'} among the previous ones already)" if n_old else ""))
    return len(previous), previous + fresh


def _rendered_ratings(spec: str, tokenizer) -> list[dict]:
    """--data's 1–5 ratings (a vote store's; none from other sources), prompts rendered as `rendered_pairs` renders
    them; an answer whose ending the store does not know counts as ended, as a pair's does."""
    from .preferences import load_ratings
    from .tokenizer import render_alpaca

    return [r | {"prompt": render_alpaca(r["prompt"], ""), "ended": r["ended"] is not False}
            for r in load_ratings(spec, special_tokens=tokenizer.all_special_tokens)]


def rendered_pairs(spec: str, split: str, tokenizer) -> list[dict]:
    """--data's preference pairs, their prompts rendered with the Alpaca template like the reward stage's (with the
    "### Input:" part for an Alpaca-style pair's `input`)."""
    from .preferences import load_pairs
    from .tokenizer import render_alpaca

    return [{k: v for k, v in p.items() if k != "input"} | {"prompt": render_alpaca(p["prompt"], p.get("input", ""))}
            for p in load_pairs(spec, split, special_tokens=tokenizer.all_special_tokens)]
