"""The evaluation stage. `run_eval` puts the run's models (base, SFT, RLHF), or any other model, through the task
harness (`evaluate.evaluate_tasks`), scores every answer with the run's reward model, and has the annotator judge
RLHF (and any other model) head to head against SFT. `run_eval_data` asks the models a file's prompts instead:
no grader knows the right answers there, so the reward model scores them.

    runs/<profile>/eval/<name>.json        the harness on one model (merged into report.json)
    runs/<profile>/eval/validation/<name>.json   the same on the validation prompts (`--split validation`)
    runs/<profile>/eval/data/<file>-<hash>.json   every model's answers to a file's prompts, with their rewards
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from pathlib import Path

from . import checkpoints as ck
from . import graders, tasks
from .config import EvalConfig, WorldConfig, build_world_from, resolve_profile
from .errors import LabError
from .evaluate import evaluate_tasks, grade
from .generation import alpaca_prompts, generate_ended
from .runs import (CONFIGS, EVAL_SPLITS, MODEL_DIRS, MODEL_STAGES, STAGE_DIRS, answers_sha256, builds,
                   check_profile, evaluations, finished_dir, folder_stamp, in_run, is_done, model_spec,
                   recorded_profile, run_dir, run_flags, seen_sha256, stamp, world_records, write_report)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # another model's name: a file name in eval/, never a path


def _file_safe(text: str) -> str:
    """`text` with every character but letters, digits, '.', '_' and '-' made '-'."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def load_model(root: Path, name: str):
    """(model, tokenizer) of a finished stage: `name` is base, sft or rlhf."""
    from .modeling import inference_device, load_causal_lm

    path, build = root / MODEL_DIRS[name], builds(MODEL_STAGES[name], run_flags(recorded_profile(root), root))
    if not (path / "config.json").exists():
        raise LabError(f"no {name} model", path=str(path), fix=f"run {build} first")
    if not is_done(root, MODEL_STAGES[name]):  # saved, but its stage stopped before it finished (metrics.json last)
        raise LabError(f"the {name} model's stage did not finish (no metrics.json)", path=str(path),
                       fix=f"run {build} again to finish it")
    return load_causal_lm(str(path), device=inference_device())


def other_model(spec: str, name: str | None = None) -> tuple[str, str]:
    """(name, spec) of a model from outside the run (`lab eval --model`): a local folder, stored by its absolute path,
    or a hub id. The name defaults to the folder's or the id's last part ("runs/tiny/sft-full" -> "sft-full")."""
    path = Path(spec)
    if path.exists():
        from .modeling import check_model_folder

        check_model_folder(spec)  # a language model's folder, with its tokenizer
        spec = str(path.resolve())
    given = bool(name)
    name = name or default_name(spec)
    if not NAME.fullmatch(name or ""):
        said = f"{name!r} cannot name a model" if given else f"no usable name comes from {Path(spec).name!r}"
        raise LabError(said, where="--name" if given else "--model",
                       fix="use letters, digits, '.', '_' and '-', up to 64 characters (e.g. --name my-model)")
    if name.casefold() in MODEL_DIRS:  # casefold: on a case-insensitive disk SFT.json is sft.json
        raise LabError(f"{name!r} is the name of the run's own {name.casefold()} model", where="--name",
                       fix=f"name it otherwise (--name my-{name}), or evaluate the run's model with --models "
                           f"{name.casefold()}")
    return name, spec


def default_name(spec: str) -> str:
    """The name `lab eval --model` gives a model without --name: its folder's (resolved) or hub id's last part,
    made file-safe."""
    path = Path(spec)
    return _file_safe((path.resolve() if path.exists() else path).name).lstrip("-._")[:64]


def _warn_if_renamed(root: Path, folder: Path, name: str, spec: str) -> None:
    """Say so when <folder>/<name>.json (eval/ or eval/validation/) held another model's evaluation, which this one
    replaces."""
    path = folder / f"{name}.json"
    try:
        stored = ck.read_json(path) if path.exists() else {}
        before = str(Path(model_spec(root, stored)).resolve()) if stored.get("model_in_run") else stored.get("model")
    except (OSError, ValueError, AttributeError):
        before = None
    if before and before != spec:
        warnings.warn(f"{path} held the evaluation of {before}; it is replaced by {spec}'s (--name keeps both)",
                      stacklevel=3)


def run_eval(profile: str | None = None, out=None, models: tuple[str, ...] | None = None, model: str = "",
             name: str = "", split: str = "test", **changes) -> dict:
    """Evaluate every model of the run that exists (or `models`) on the held-out task prompts (`split` "test", the
    prompts every target is measured on; "validation", the prompts apart from them that settings are chosen on);
    with `model` (a folder or hub id, saved as `name`) and no `models`, that model alone, and SFT again when its
    stored evaluation no longer fits the head-to-head."""
    if split not in EVAL_SPLITS:
        raise LabError(f"unknown split {split!r}", fix=f"pick one of {', '.join(EVAL_SPLITS)}")
    unknown = [m for m in models or () if m not in MODEL_DIRS]
    if unknown:
        raise LabError(f"unknown model {', '.join(map(repr, unknown))}",
                       fix=f"pick from {', '.join(MODEL_DIRS)}, comma-separated (e.g. --models base,sft)")
    profile, root = resolve_profile(profile), run_dir(profile, out)
    cfg = EvalConfig.for_profile(profile, **changes)
    folder = root / EVAL_SPLITS[split]
    other = _other(root, folder, model, name)
    world = build_world_from(WorldConfig.for_profile(profile))
    records = (tasks.eval_records(world, cfg.n_per_task) if split == "test" else
               tasks.validation_records(world, cfg.n_validation_per_task, cfg.n_per_task))
    prompts = alpaca_prompts(records)
    prompts_sha = hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()
    names = models or (() if other else _existing(root))
    if not models and not other:  # a folder a stage left before it finished: said, not skipped
        for m in (m for m in MODEL_DIRS if m not in names and (root / MODEL_DIRS[m]).exists()):
            print(f"[lab] eval: {m} left out: {root / MODEL_DIRS[m]} is not finished (its {MODEL_STAGES[m]} stage "
                  f"stopped before it did); {builds(MODEL_STAGES[m], run_flags(profile, out))} builds it")
    if not names and not other:
        raise LabError("no model to evaluate", path=str(root), fix=f"run {builds('pretrain', run_flags(profile, out))} "
                       "first")
    sft_file = folder / "sft.json"
    reuse_sft = _same_eval(sft_file, prompts_sha, cfg, stamp(root, "sft"))
    if ("rlhf" in names or other) and "sft" not in names and not reuse_sft and is_done(root, "sft"):
        print(f"[lab] eval: {sft_file} is missing, from other prompts or settings, or older than the SFT model: "
              "evaluating sft again for the head-to-head")
        names = tuple(m for m in MODEL_DIRS if m in names or m == "sft")
    check_profile(root, profile)  # before anything is written over the run's own evaluations
    results = {}
    reward_model, seen = _reward_model(root, profile), training_prompts(root, profile, world)
    seen_sha = seen_sha256(seen)
    for label, spec in [(n, None) for n in names] + list(other.items()):
        t0 = time.perf_counter()
        lm, tokenizer = _load(root, label, spec)
        res = evaluate_tasks(lm, tokenizer, world, records, cfg.eval_max_new_tokens, cfg.eval_batch_size, seen=seen)
        res |= _scored(reward_model, prompts, res, stamp(root, "reward"))
        built = stamp(root, MODEL_STAGES[label]) if spec is None else folder_stamp(spec)
        results[label] = res | {"wall_s": round(time.perf_counter() - t0, 2), "profile": profile,
                                "split": split, "prompts_sha256": prompts_sha, "seen_sha256": seen_sha,
                                "model_finished_at": built,
                                "config": cfg.to_dict(),
                                **({"model": spec, **in_run(root, spec)} if spec else {})}
    sft = results.get("sft") or (ck.read_json(sft_file) if reuse_sft else None)
    if "sft" not in results and sft is not None:  # SFT's stored answers, brought up to date where they are stale
        graded = _graded_again(world, records, sft, seen, seen_sha)  # today's graders and training prompts
        rescore = reward_model is not None and (sft.get("reward_finished_at") != stamp(root, "reward")
                                                or "rewards" not in sft)  # or stored before rewards were
        if rescore or graded:
            # the head-to-heads below compare with these: today's reward model on both sides of the gain
            sft = results["sft"] = sft | graded | (_scored(reward_model, prompts, sft, stamp(root, "reward"))
                                                   if rescore else {})
    # every other stored evaluation of these prompts graded again where the graders or the training prompts changed
    # (SFT's too when it was not reused: `--eval_max_new_tokens` of another length): `lab ppo --n_prompts N` evaluates
    # sft and rlhf again, and base's unseen-prompt numbers must count the same prompts as theirs (its answers,
    # rewards and head-to-head stay as they were)
    regraded = {label: stored | graded for label, stored in evaluations(root, split).items()
                if label not in results and stored.get("prompts_sha256") == prompts_sha
                and "responses" in stored and (graded := _graded_again(world, records, stored, seen, seen_sha))}
    for label in results:
        if label not in ("base", "sft") and sft is not None:  # the annotator's head-to-head, answer i against answer i
            results[label] |= _head_to_head(world, records, results[label], sft)
    for label, res in (regraded | results).items():
        ck.write_json(folder / f"{label}.json", res)
    write_report(root)
    return results


def _graded_again(world, records: list[dict], stored: dict, seen: set[tuple], seen_sha: str) -> dict:
    """`grade` of a stored evaluation's answers with today's graders and training prompts: the keys that changed
    (with `seen_sha256`), {} when none did."""
    graded = grade(world, records, stored["responses"], stored["ended"], seen) | {"seen_sha256": seen_sha}
    return graded if any(stored.get(k) != v for k, v in graded.items()) else {}


def _existing(root: Path) -> tuple[str, ...]:
    """The run's models whose stage finished: a model saved by a stage interrupted before its metrics.json (pretraining
    saves base/ before its fact probe) is not one to evaluate."""
    return tuple(m for m in MODEL_DIRS if (root / MODEL_DIRS[m] / "config.json").exists()
                 and is_done(root, MODEL_STAGES[m]))


def _other(root: Path, folder: Path, model: str, name: str, warn_renamed: bool = True) -> dict[str, str]:
    """{name: spec} of `--model` ({} without it); `--name` alone is a mistake worth saying. `warn_renamed`: say when
    folder/<name>.json, about to be written, holds another model's evaluation."""
    if not model:
        if name:
            raise LabError(f"--name {name} without --model", fix="--name names the model given with --model")
        return {}
    label, spec = other_model(model, name or None)
    if warn_renamed:
        _warn_if_renamed(root, folder, label, spec)
    return {label: spec}


def _load(root: Path, name: str, spec: str | None):
    """The run's model `name`, or the model at `spec` (a folder or hub id)."""
    from .modeling import inference_device, load_causal_lm
    return load_model(root, name) if spec is None else load_causal_lm(spec, device=inference_device())


def _head_to_head(world, records: list[dict], res: dict, sft: dict) -> dict:
    """The annotator's verdicts on a model's answers against SFT's to the same prompts, and the reward gain."""
    from .annotator import win_rate
    duel = win_rate(world, records, res["responses"], sft["responses"], res["ended"], sft["ended"])
    out = {"win_rate_vs_sft": duel["win_rate"], "win_rate_vs_sft_task_mean": duel["task_mean"],
           "head_to_head_vs_sft": duel, "sft_finished_at": sft.get("model_finished_at"),
           "sft_answers_sha256": answers_sha256(sft)}
    return out | (_reward_gain(records, res, sft) if "rewards" in res and "rewards" in sft else {})


def training_prompts(root: Path, profile: str, world) -> set[tuple]:
    """`tasks.seen_keys` of every prompt the world's generators gave SFT, the reward stage and PPO ((instruction,
    input), the operands of a sum, and a capital question's country), with the settings each finished stage recorded
    (the profile's where a stage has not run). A stage trained on a --data file adds none of the world's prompts;
    a reward model trained with --mix_previous counts the world's (its previous pairs were sampled on them, unless
    that round too was --data's: then this over-counts, the safe side for "seen")."""
    records = []
    for stage in ("sft", "reward", "ppo"):
        path = root / STAGE_DIRS[stage] / "metrics.json"
        recorded = ck.read_json(path).get("config", {}) if path.exists() else {}
        cfg = CONFIGS[stage].for_profile(profile, **{k: v for k, v in recorded.items()
                                                     if k in ("n_records", "n_prompts", "seed", "data")})
        mixed = recorded.get("mix_previous", False)
        records += [] if getattr(cfg, "data", "") and not mixed else world_records(stage, world, cfg)
    return set().union(*map(tasks.seen_keys, records))


def _same_eval(path: Path, prompts_sha: str, cfg: EvalConfig, model_stamp: str | None) -> bool:
    """Whether a stored evaluation answered these prompts, with these settings, by the model finished now."""
    if not path.exists() or model_stamp is None:
        return False
    try:
        old = ck.read_json(path)
    except ck.DamagedFile:  # a copy to reuse, no more: it is answered again
        return False
    return (old.get("prompts_sha256") == prompts_sha and old.get("model_finished_at") == model_stamp
            and old.get("config", {}).get("eval_max_new_tokens") == cfg.eval_max_new_tokens and "responses" in old)


def _scored(reward_model, prompts: list[str], res: dict, reward_stamp: str | None) -> dict:
    """`mean_reward` of an evaluation's answers in the reward model's normalised units, and which reward model gave
    it (`reward_finished_at`); without a reward model (before stage 3) neither."""
    if reward_model is None:
        return {}
    rewards = reward_model.score(prompts, res["responses"], res["ended"])
    return {"mean_reward": round(rewards.mean().item(), 4), "rewards": [round(r, 4) for r in rewards.tolist()],
            "reward_finished_at": reward_stamp}


def _reward_gain(records: list[dict], rlhf: dict, sft: dict) -> dict:
    """RLHF's mean-reward gain over SFT on all prompts, and on the prompts where neither answer is off-task
    (`graders.off_task`): the part of the gain that does not come from answering another task's question."""
    pairs = list(zip(records, rlhf["responses"], sft["responses"], rlhf["rewards"], sft["rewards"], strict=True))
    kept = [(a, b) for rec, ra, rb, a, b in pairs if not graders.off_task(rec, ra) and not graders.off_task(rec, rb)]
    gain = lambda xs: round(sum(a - b for a, b in xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"reward_gain_vs_sft": gain([(a, b) for *_, a, b in pairs]), "reward_gain_vs_sft_on_task": gain(kept),
            "n_off_task_pairs": len(pairs) - len(kept)}


def _reward_model(root: Path, profile: str | None = None):
    """The run's reward model to score answers with, from stage 3 on; a half-finished stage is a LabError."""
    from .modeling import inference_device
    from .reward import RewardModel
    if not (root / "reward").exists():
        return None
    return RewardModel.load(finished_dir(root, "reward", "finished reward model to score the answers with", profile),
                            device=inference_device())


# ------------------------------------------------------------------ your own prompts

def run_eval_data(data: str, profile: str | None = None, out=None, models: tuple[str, ...] | None = None,
                  model: str = "", name: str = "", data_split: str = "train", data_limit: int = 200,
                  **changes) -> dict:
    """Every model of the run (or `models`; with `model` alone, that model and SFT) answers the first `data_limit`
    distinct prompts of `data` that fit every model's context (any file or hub dataset `lab ppo --data` reads),
    greedily; the run's reward model scores each answer.

    Writes and returns {"data", "n_prompts", "n_left_out", "prompts", "models": {name: {"mean_reward",
    "ended_rate", "mean_chars", "reward_win_rate_vs_sft", "responses", "ended", "rewards", ...}}}.
    `reward_win_rate_vs_sft` is the share of prompts whose answer the reward model scores above SFT's (ties left out):
    the reward model's verdict, not the annotator's, who knows only the world's tasks."""
    profile, root = resolve_profile(profile), run_dir(profile, out)
    cfg = EvalConfig.for_profile(profile, **changes)
    if data_limit < 1:
        raise LabError(f"--data_limit {data_limit}", fix="ask for at least one prompt (the default is 200)")
    from .data import read_first
    from .preferences import load_prompts

    read_first(load_prompts, data, data_split)  # a mistyped path or a bad record is said before a missing model
    missing = [m for m in models or () if m not in _existing(root)]
    if missing:
        raise LabError(f"no {', '.join(missing)} model in {root}", fix=f"pick from {', '.join(_existing(root))} "
                       "(comma-separated), or run the stage that builds it")
    check_profile(root, profile)
    other = _other(root, root / "eval", model, name, warn_renamed=False)  # answers go to eval/data/, not eval/NAME.json
    chosen = models or (("sft",) if other and "sft" in _existing(root) else () if other else _existing(root))
    specs = {n: str(root / MODEL_DIRS[n]) for n in chosen} | other  # with --model alone, SFT for the comparison
    if not specs:
        raise LabError("no model to evaluate", path=str(root),
                       fix=f"run {builds('pretrain', run_flags(profile, out))} first, or pass --model")
    reward_model = _reward_model(root, profile)
    if reward_model is None:
        raise LabError("no reward model to score the answers with", path=str(root / "reward"),
                       fix=f"run `lab reward{run_flags(profile, root)}` first: without a grader for your prompts, "
                           "the reward model scores them")
    prompts, n_left_out = _data_prompts(data, data_split, data_limit, specs, reward_model, cfg.eval_max_new_tokens)
    _warn_if_reward_trained_elsewhere(root, data)
    result = {"data": data, "data_path": str(Path(data).resolve()) if Path(data).is_file() else None,
              "data_split": data_split, "data_sha256": ck.file_sha256(data), "n_prompts": len(prompts),
              "n_left_out": n_left_out, "prompts": prompts, "reward_finished_at": stamp(root, "reward"),
              "config": cfg.to_dict() | {"data_limit": data_limit}, "models": {}}
    # (prompt, answer, ended) -> reward, across models: an answer two models give alike is scored once, so it gets one
    # reward and ties in the head-to-head (scored in batches of other lengths, it would differ in the 7th digit and
    # count as a win or a loss)
    path = data_eval_path(root, data, data_split)
    kept = _earlier_answers(path, result, specs)  # other models' answers to these prompts, by this reward model
    result["kept"] = list(kept)
    scored: dict[tuple[int, str, bool], float] = {(i, text, end): r for m in kept.values()
                                                  for i, (text, end, r) in enumerate(zip(m["responses"], m["ended"],
                                                                                         m["rewards"]))}
    for label, spec in specs.items():
        t0 = time.perf_counter()
        lm, tokenizer = _load(root, label, None if label in MODEL_DIRS else spec)
        outs = generate_ended(lm, tokenizer, prompts, cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size)
        responses, ended = [t for t, _ in outs], [e for _, e in outs]
        keys = [(i, text, end) for i, (text, end) in enumerate(zip(responses, ended))]
        # in prompt order: the first model's batches are as before
        new = [k for k in dict.fromkeys(keys) if k not in scored]
        if new:
            scored |= zip(new, reward_model.score([prompts[i] for i, _, _ in new], [t for _, t, _ in new],
                                                  [e for _, _, e in new]).tolist())
        rewards = [scored[k] for k in keys]
        built = stamp(root, MODEL_STAGES[label]) if label in MODEL_DIRS else folder_stamp(spec)
        result["models"][label] = {
            "mean_reward": round(sum(rewards) / len(rewards), 4), "ended_rate": round(sum(ended) / len(ended), 4),
            "mean_chars": round(sum(map(len, responses)) / len(responses), 1),
            "responses": responses, "ended": ended, "rewards": [round(r, 4) for r in rewards],
            "model_finished_at": built, "wall_s": round(time.perf_counter() - t0, 2),
            **({} if label in MODEL_DIRS else {"model": spec, **in_run(root, spec)})}
    result["models"] = kept | result["models"]
    sft = result["models"].get("sft")
    sft = sft if sft and sft.get("model_finished_at") == stamp(root, "sft") else None  # kept, of an earlier build
    for label, res in result["models"].items():
        if sft is not None and label != "sft":
            wins = sum(a > b for a, b in zip(res["rewards"], sft["rewards"]))
            losses = sum(a < b for a, b in zip(res["rewards"], sft["rewards"]))
            res["reward_win_rate_vs_sft"] = round(wins / (wins + losses), 4) if wins + losses else None
            res["sft_finished_at"] = sft["model_finished_at"]
    ck.write_json(path, result)
    write_report(root)
    return result


def _earlier_answers(path: Path, result: dict, specs: dict) -> dict:
    """The models of an earlier `lab eval --data` of the same file, split, prompts, settings and reward model (kept
    beside this run's, as eval/<name>.json keeps every model of the harness); {} when any of these differ, and then
    the models whose answers this call replaces are said."""
    try:
        old = ck.read_json(path) if path.exists() else {}
    except (OSError, ValueError):  # damaged: answered again
        return {}
    n = len(result["prompts"])
    earlier = {k: m for k, m in (old.get("models") if isinstance(old.get("models"), dict) else {}).items()
               if k not in specs and isinstance(m, dict)
               and all(isinstance(m.get(f), list) and len(m[f]) == n for f in ("responses", "ended", "rewards"))}
    differ = [k for k in ("data_sha256", "prompts", "reward_finished_at", "config") if old.get(k) != result[k]]
    if differ and earlier:
        print(f"[lab] eval: {path} held {', '.join(earlier)}'s answers to other prompts, settings or reward model "
              f"({', '.join(differ)} differ): replaced by this evaluation's; evaluate them again to have them beside")
        return {}
    return earlier


def data_eval_path(root: Path, data: str, split: str = "train") -> Path:
    """eval/data/<name>-<hash>.json: the file's (or hub id's) last part, made file-safe, never a path; the hash of
    the path (resolved, for a file) and split keeps two files of one name, or two splits of one dataset, apart."""
    source = str(Path(data).resolve()) if Path(data).exists() else data
    stem = _file_safe(Path(data).stem).strip("-.")[:64] or "data"
    tag = hashlib.sha256(f"{source}\0{split}".encode()).hexdigest()[:8]
    return Path(root) / "eval" / "data" / f"{stem}-{tag}.json"


def _data_prompts(data: str, split: str, limit: int, specs: dict[str, str], reward_model, max_new_tokens: int):
    """The first `limit` distinct prompts of `data`, rendered with the Alpaca template, that every model and the
    reward model can read whole with `max_new_tokens` answer tokens; and how many were left out for their length."""
    from transformers import AutoConfig, AutoTokenizer

    from .modeling import load_error
    from .preferences import load_prompts
    from .tokenizer import render_alpaca

    def reader(spec: str):
        adapter = Path(spec) / "adapter_config.json"  # a PEFT adapter: the context is its base model's
        config = (ck.read_json(adapter).get("base_model_name_or_path") or spec
                  if adapter.is_file() and not (Path(spec) / "config.json").is_file() else spec)
        try:
            return AutoTokenizer.from_pretrained(spec), AutoConfig.from_pretrained(config)
        except (OSError, ValueError) as err:
            raise load_error(spec, err) from None

    readers = [reader(s) for s in specs.values()] + [(reward_model.tokenizer, reward_model.model.config)]
    special = sorted({t for tok, _ in readers for t in tok.all_special_tokens})
    rendered = [render_alpaca(i, x) for i, x in load_prompts(data, split, special)]

    def fits(prompt: str) -> bool:
        return all(len(tok(prompt)["input_ids"]) + max_new_tokens + 1 <= getattr(conf, "max_position_embeddings", 1e9)
                   for tok, conf in readers)

    kept, seen = [], 0
    for prompt in rendered:  # in file order, until `limit` fit: a 52k-record dataset is not tokenised whole
        if len(kept) == limit:
            break
        seen += 1
        if fits(prompt):
            kept.append(prompt)
    if not kept:
        raise LabError(f"every prompt is too long for the models' context with {max_new_tokens} answer tokens",
                       path=data, fix="bring shorter prompts, or lower --eval_max_new_tokens")
    if len(kept) < seen:
        warnings.warn(f"{seen - len(kept)} of the first {seen} prompts of {data} do not fit the models' context with "
                      f"{max_new_tokens} answer tokens and were left out", stacklevel=3)
    return kept, seen - len(kept)


def _warn_if_reward_trained_elsewhere(root: Path, data: str) -> None:
    """A reward model trained on the world's tasks has never scored answers to a file's questions: say so."""
    path = root / STAGE_DIRS["reward"] / "metrics.json"
    trained_on = (ck.read_json(path).get("config") or {}).get("data", "") if path.exists() else ""
    same = lambda a, b: a == b or (Path(a).exists() and Path(b).exists() and Path(a).samefile(b))  # noqa: E731
    if not (trained_on and same(trained_on, data)):
        trained = f"the pairs of {trained_on}" if trained_on else "the world's tasks"
        warnings.warn(f"the reward model was trained on {trained}: its scores of answers to {data} are untested "
                      f"(`lab reward --data` trains one on pairs for them)", stacklevel=3)
