"""The run folder: where each stage keeps its artifact, when it finished, which task records it trained on, whether
a finished stage may be reused (`stale_reason`, like `make`), and the report that merges every stage's metrics and
every evaluation.

    runs/<profile>/tokenizer/   tokenizer + metrics.json
    runs/<profile>/base/        pretrained model (safetensors) + tokenizer + metrics.json
    runs/<profile>/eval/<m>.json  evaluation of model m (base, sft, rlhf, or another model `lab eval --model` named)
    runs/<profile>/eval/data/   `lab eval --data FILE`: the models' answers to a file's prompts
    runs/<profile>/eval/validation/<m>.json  `lab eval --split validation`: model m on the validation prompts
    runs/<profile>/report.json  everything above merged (derived, rewritten after every stage): {"profile",
                                "stages", "eval", and when there are any "eval_validation", "eval_data" and
                                "eval_stale"}
"""

from __future__ import annotations

import hashlib
import json
import shlex
import warnings
from datetime import datetime, timezone
from pathlib import Path

from . import checkpoints as ck
from . import tasks
from .config import PPOConfig, PretrainConfig, RewardConfig, SFTConfig, TokenizerConfig, resolve_profile
from .errors import LabError

STAGES = ("tokenizer", "pretrain", "sft", "reward", "ppo")  # pipeline order (`ensure` builds what a stage needs)
STAGE_DIRS = {"tokenizer": "tokenizer", "pretrain": "base", "sft": "sft", "reward": "reward", "ppo": "rlhf"}
CONFIGS = {"tokenizer": TokenizerConfig, "pretrain": PretrainConfig, "sft": SFTConfig, "reward": RewardConfig,
           "ppo": PPOConfig}
MODEL_DIRS = {"base": "base", "sft": "sft", "rlhf": "rlhf"}  # evaluated models and their folders
MODEL_STAGES = {"base": "pretrain", "sft": "sft", "rlhf": "ppo"}  # the stage that builds each model
# `lab eval --split`: the evaluation prompts every target is measured on, and the validation prompts apart from them
# that settings are chosen on (`tasks.validation_records`); where each split's evaluations are kept under the run
EVAL_SPLITS = {"test": "eval", "validation": "eval/validation"}


def run_flags(profile: str | None, out: str | Path | None) -> str:
    """The flags that name a run in a printed command: without them `lab ...` reads runs/tiny (or $LAB_PROFILE's)."""
    return (f" --profile {profile}" if profile else "") + (f" --out {shlex.quote(str(out))}" if out else "")


def builds(stage: str, flags: str) -> str:
    """The commands that build `stage` in the run that `flags` (`run_flags`) name, as fixes print them."""
    return f"`lab {stage}{flags}` (or `lab run{flags}`)"


def run_dir(profile: str | None = None, out: str | Path | None = None) -> Path:
    """The run folder: --out, or runs/<profile>."""
    root = Path(out) if out else Path("runs") / resolve_profile(profile)
    if root.exists() and not root.is_dir():
        raise LabError("is a file, not a run folder", path=str(root), fix="pass a folder with --out (new or a run's)")
    return root


def is_done(root: Path, stage: str) -> bool:
    return (root / STAGE_DIRS[stage] / "metrics.json").exists()


def finished_dir(root: Path, stage: str, what: str, profile: str | None = None) -> Path:
    """The folder of a finished upstream stage; a missing or half-written one, or one built for another `profile`
    than the stage asking for it, is a LabError that names the fix."""
    path = root / STAGE_DIRS[stage]
    if not is_done(root, stage):
        half = " (the folder has no metrics.json: its run stopped before it finished)" if path.exists() else ""
        flags = run_flags(profile or recorded_profile(root), root)  # without them: another run, in runs/tiny
        raise LabError(f"no {what}{half}", path=str(path), fix=f"run {builds(stage, flags)} first")
    built_for = ck.read_json(path / "metrics.json").get("profile") if profile else None
    if built_for and built_for != profile:
        raise LabError(f"the {what} was built for profile {built_for}, not {profile}", path=str(path),
                       fix=f"pass --profile {built_for}, or --out a run folder of profile {profile} "
                           f"(runs/{profile} by default)")
    return path


def recorded_profile(root: Path) -> str | None:
    """The profile the run's finished stages were built for (the first that records one), None for a run with none;
    a damaged metrics.json is passed over (the error being written is about another stage)."""
    for s in (s for s in STAGES if is_done(root, s)):
        try:
            if profile := ck.read_json(root / STAGE_DIRS[s] / "metrics.json").get("profile"):
                return profile
        except ck.DamagedFile:
            continue
    return None


def check_profile(root: Path, profile: str, stages=STAGES) -> None:
    """Every finished stage in `root` (of `stages`) was built for `profile`: an evaluation there would grade its models
    on another profile's world, and a build would go on over them. Else the `LabError` of `finished_dir`."""
    for stage in STAGES:
        if stage in stages and is_done(root, stage):
            finished_dir(root, stage, f"{stage} stage", profile)


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")


def stamp(root: Path, stage: str) -> str | None:
    """When `stage` last finished: its recorded `finished_at` (for runs from before stages recorded one, the
    time metrics.json was written); None while it has not finished."""
    path = Path(root) / STAGE_DIRS[stage] / "metrics.json"
    if not path.exists():
        return None
    return ck.read_json(path).get("finished_at") or iso_time(path.stat().st_mtime)


def world_records(stage: str, world, cfg) -> list[dict]:
    """The world's task records a stage trains on: SFT's records, the reward stage's prompts (sampled and labelled
    there), PPO's prompts. One place, so that `training_prompts` sees exactly what the stages used."""
    from .reward import preference_records

    if stage == "sft":
        return tasks.sft_records(world, cfg.n_records)
    if stage == "reward":
        return preference_records(world, cfg.n_prompts, seed=cfg.seed + 1)
    return tasks.sft_records(world, cfg.n_prompts, seed=cfg.seed + 2)



def folder_stamp(spec: str) -> str | None:
    """The build of a model from outside the run (`lab eval --model`): a hash of its folder's file names, sizes and
    modification times, so that retraining it into the same folder makes its evaluation stale; None for a hub id
    (the hub's cache decides which revision loads) and for a folder that is gone."""
    path = Path(spec)
    if not spec or not path.is_dir():
        return None
    files = sorted(f for f in path.rglob("*") if f.is_file())
    if isinstance(finished := dpo_metrics(path).get("finished_at"), str):  # written whole: a copy keeps this stamp
        seen = finished + "".join(f"\n{f.relative_to(path)}:{f.stat().st_size}" for f in files)
    else:
        seen = "".join(f"{f.relative_to(path)}:{f.stat().st_size}:{f.stat().st_mtime_ns}\n" for f in files)
    return hashlib.sha256(seen.encode()).hexdigest()[:16]


def dpo_metrics(folder: Path) -> dict:
    """The metrics.json of a policy `lab dpo` wrote (it has `implicit_accuracy`), {} for any other folder. `lab dpo`
    writes its folder whole, with a new `finished_at` each time, so that and the files' names and sizes stamp it, not
    their times, which a copy of the run changes. A limit: a policy saved again into that folder by other code, with
    files of the same sizes and its metrics.json left as it was, keeps its stamp."""
    try:
        metrics = ck.read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    except (OSError, ValueError):  # not JSON: not one `lab dpo` wrote
        return {}
    return metrics if isinstance(metrics, dict) and "implicit_accuracy" in metrics else {}


def trained_from_earlier(root: Path, res: dict, name: str | None = None) -> str | None:
    """Why the model an evaluation `res` answered with is itself out of date (None if it is not): for the run's own
    model `name`, an upstream stage its stage was built from was rebuilt since (`lab run` would build it again; one
    whose folder is not in this run, as notebook 06's linked SFT model, is not compared); for `lab dpo`'s policy, the
    SFT model or the reward stage's pairs it was trained from were rebuilt, or the --model folder it started from was
    trained again or is gone. Evaluating it again would not bring it up to date."""
    if name in MODEL_STAGES:
        why, _ = _outdated(Path(root), MODEL_STAGES[name])
        return f"the {name} model was {why}" if why else None
    if not res.get("model_in_run"):
        return None
    metrics = dpo_metrics(Path(root) / res["model_in_run"])
    built_from, given = (m if isinstance(m := metrics.get(k), dict) else {} for k in ("built_from", "folder_stamps"))
    for up, then in built_from.items():
        if up in STAGE_DIRS and then != stamp(root, up):
            return ("its policy was trained from an earlier SFT model" if up == "sft" else
                    f"its policy was trained on an earlier {up} stage's pairs")
    config = metrics["config"] if isinstance(metrics.get("config"), dict) else {}
    for flag, then in given.items():
        if then != folder_stamp(str(config.get(flag) or "")):
            return f"its policy started from {config.get(flag)}, trained again or gone since"
    return None


def _outdated(root: Path, stage: str) -> tuple[str | None, bool]:
    """(why the run's `stage` is out of date, whether only `lab run` brings it up to date); (None, False) if it is
    not. Out of date: a stage it was built from was rebuilt since (running `stage` again is enough), or is itself out
    of date (`lab run` builds them all again). A stage whose folder is not in the run (notebook 06's round 2 links
    round 1's SFT model, not its base) is not compared."""
    try:
        metrics = ck.read_json(root / STAGE_DIRS[stage] / "metrics.json")
    except (OSError, ValueError):  # no stage, or a damaged file: other checks say so
        return None, False
    built_from = metrics.get("built_from") if isinstance(metrics.get("built_from"), dict) else {}
    for up, then in built_from.items():
        if up not in STAGE_DIRS or not (root / STAGE_DIRS[up]).exists():
            continue
        if then != stamp(root, up):
            return _BUILT_FROM.get(up, f"built from an earlier {up} stage"), False
        if (why := _outdated(root, up)[0]) is not None:
            return f"built on the {up} stage, which was {why}", True
    return None, False


# what a model of the run was built from, by the upstream stage: for `trained_from_earlier`'s reason
_BUILT_FROM = {"tokenizer": "built on an earlier tokenizer", "pretrain": "trained from an earlier base model",
               "sft": "trained from an earlier SFT model", "reward": "trained against an earlier reward model"}


def answers_sha256(res: dict) -> str:
    """A fingerprint of an evaluation's answers (and which of them ended): what a head-to-head against SFT records of
    the SFT answers it judged."""
    return hashlib.sha256(json.dumps([res.get("responses"), res.get("ended")], ensure_ascii=False).encode()).hexdigest()


def seen_sha256(seen: set[tuple]) -> str:
    """A fingerprint of the training prompts' `tasks.seen_keys` an evaluation's unseen-prompt numbers left out."""
    keys = sorted(json.dumps(k, ensure_ascii=False) for k in seen)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def in_run(root: Path, spec: str | None) -> dict:
    """{"model_in_run": its path relative to the run folder} for a model folder inside the run (`lab dpo`'s policy),
    {} for any other: stored beside the absolute path, it makes a copy of the run folder (README: copy runs/tiny to
    keep round 1) stamp and name its own copy of the model, not the folder it was copied from."""
    if not spec or not Path(spec).is_dir():
        return {}
    try:
        return {"model_in_run": Path(spec).resolve().relative_to(Path(root).resolve()).as_posix()}
    except ValueError:  # outside the run
        return {}


def model_spec(root: Path, res: dict) -> str:
    """The folder or hub id an evaluation of a model from outside the run's stages answered with."""
    return str(Path(root) / res["model_in_run"]) if res.get("model_in_run") else res.get("model", "")


def eval_stale_reason(root: Path, name: str, res: dict, sft_answers: str | None = None) -> str | None:
    """Why a stored evaluation no longer describes the run (None if it still does): its model was rebuilt since, its
    mean reward came from an earlier reward model, or its head-to-head was against an earlier SFT model or against
    other answers than the split's stored SFT evaluation holds now (`sft_answers`, their `answers_sha256`). An
    evaluation from before these were recorded is taken as it is."""
    model_now = stamp(root, MODEL_STAGES[name]) if name in MODEL_STAGES else folder_stamp(model_spec(root, res))
    reward_now, sft_now = stamp(root, "reward"), stamp(root, "sft")
    if res.get("model_finished_at", model_now) != model_now:
        if name in MODEL_STAGES and model_now is None:
            return (f"since this evaluation, the {MODEL_STAGES[name]} stage was left unfinished (run again and "
                    "stopped, or its metrics.json removed)")
        if name in MODEL_STAGES:
            return f"the {name} model was rebuilt after this evaluation"
        return f"its model folder {model_spec(root, res)} changed or is gone since this evaluation"
    if why := trained_from_earlier(root, res, name):
        return why
    if res.get("mean_reward") is not None and res.get("reward_finished_at", reward_now) != reward_now:
        return "its mean_reward is from an earlier reward model"
    if "head_to_head_vs_sft" in res and res.get("sft_finished_at", sft_now) != sft_now:
        return "its head-to-head was against an earlier SFT model"
    if "head_to_head_vs_sft" in res and sft_answers and res.get("sft_answers_sha256", sft_answers) != sft_answers:
        return "its head-to-head was against other SFT answers than SFT's stored evaluation holds now (SFT was " \
               "evaluated again)"
    return None


def _other_prompts(res: dict, pivot_name: str | None, pivot: dict) -> str | None:
    """Why an evaluation cannot stand beside the SFT model's (else the first one's) in one table: it answered other
    prompts (`lab run --n_per_task 8`, then a stage rebuilt at the profile's 24: base would be ranked against sft
    and rlhf on another test), with another answer length (`--eval_max_new_tokens`), or its unseen-prompt numbers
    left out other training prompts (a stage rebuilt with other prompts since). Evaluations that record none of
    these are taken as they are."""
    def differ(get) -> bool:
        mine, theirs = get(res), get(pivot)
        return mine is not None and theirs is not None and mine != theirs

    if differ(lambda r: r.get("prompts_sha256")):
        return (f"it answered other evaluation prompts than the {pivot_name} model's evaluation (another --n_per_task "
                "or profile)")
    if differ(lambda r: r.get("config", {}).get("eval_max_new_tokens")):
        return f"it answered with another --eval_max_new_tokens than the {pivot_name} model's evaluation"
    if differ(lambda r: r.get("seen_sha256")):
        return (f"its unseen-prompt numbers left out other training prompts than the {pivot_name} model's evaluation "
                "(a training stage was rebuilt with other prompts since)")
    return None


# ------------------------------------------------------------------ report

def _scalars(d: dict) -> dict:
    """The report keeps numbers and short values; curves and samples stay in each stage's metrics.json."""
    skip = ("history", "ratings_history", "samples", "fact_samples", "config", "responses", "ended", "rewards",
            "built_from", "prompts", "prompts_sha256", "model_finished_at", "reward_finished_at", "sft_finished_at",
            "sft_answers_sha256", "seen_sha256")
    return {k: v for k, v in d.items() if k not in skip}


HARNESS_KEYS = ("task_accuracy", "per_task")  # what every evaluation the harness writes has
DATA_KEYS = ("data", "n_prompts", "models")  # ... and every `lab eval --data` file


def _readable(path: Path, keys: tuple[str, ...]) -> dict | None:
    """A JSON object of eval/ with `keys`; None, with a warning, for any other file found there (notes, a copy from
    elsewhere), which must never stop a stage that rewrites the report."""
    try:
        res = ck.read_json(path)
    except (OSError, ValueError):
        res = None
    if isinstance(res, dict) and all(k in res for k in keys):
        return res
    warnings.warn(f"{path} is not an evaluation this lab wrote (no {', '.join(keys)}): left out of the report",
                  stacklevel=3)
    return None


def evaluations(root: Path, split: str = "test") -> dict[str, dict]:
    """The evaluations of a split (eval/ or eval/validation/): the run's own models in pipeline order, then the
    others (`lab eval --model`, their files recording the model they came from) by name."""
    folder = Path(root) / EVAL_SPLITS[split]
    found = {m: folder / f"{m}.json" for m in MODEL_DIRS}
    found |= {p.stem: p for p in sorted(folder.glob("*.json")) if p.stem not in MODEL_DIRS}
    out = {}
    for name, path in found.items():
        res = _readable(path, HARNESS_KEYS + (() if name in MODEL_DIRS else ("model",))) if path.exists() else None
        if res is not None:
            out[name] = res
    return out


def _data_summary(root: Path, res: dict) -> tuple[dict | None, str | None]:
    """The report's entry for a `lab eval --data` file: each model's scalars while its build and the reward model are
    the ones that answered and scored, `reward_win_rate_vs_sft` while the SFT model is too; and why the whole entry
    (the prompt file changed since) or some of its models are stale."""
    now = ck.file_sha256(res.get("data_path") or res["data"])  # resolved when written: any working folder reads it
    if res.get("data_sha256") and now and now != res["data_sha256"]:
        return None, f"{res['data']} changed since these answers were scored"
    current, stale = {}, {}
    for name, r in res["models"].items():
        if why := eval_stale_reason(root, name, r | {"reward_finished_at": res.get("reward_finished_at")}):
            stale[name] = why
            continue
        current[name] = _scalars(r)
        if r.get("sft_finished_at", stamp(root, "sft")) != stamp(root, "sft"):
            current[name].pop("reward_win_rate_vs_sft", None)  # against an earlier SFT model's answers
    why = "; ".join(f"{name} left out: {why}" for name, why in stale.items()) or None  # said, not dropped silently
    if any(trained_from_earlier(root, res["models"][name], name) for name in stale):  # evaluating again won't do
        why += " (build the models it names again first)"
    return ({"n_prompts": res["n_prompts"], **current} if current else None), why


def write_report(root: Path) -> dict:
    """Rebuild runs/<profile>/report.json from the stage metrics and the evaluations on disk."""
    root = Path(root)
    report = {"profile": None, "stages": {}, "eval": {}}
    for stage, folder in STAGE_DIRS.items():
        if (root / folder / "metrics.json").exists():
            metrics = ck.read_json(root / folder / "metrics.json")
            report["profile"] = metrics.pop("profile", report["profile"])
            report["stages"][stage] = _scalars(metrics)
    this_run = run_flags(report["profile"], root)  # what the fixes below name
    for split, key, prefix, flag in (("test", "eval", "", ""),
                                     ("validation", "eval_validation", "validation/", " --split validation")):
        found = evaluations(root, split)
        sft_answers = answers_sha256(found["sft"]) if "sft" in found else None  # what head-to-heads were judged against
        stale = {name: eval_stale_reason(root, name, res, sft_answers) for name, res in found.items()}
        pivot = next((m for m in ("sft", "rlhf", *found) if m in found and not stale[m]), None)  # the others' reference
        for name, res in found.items():
            why = stale[name] or _other_prompts(res, pivot, found.get(pivot, {}))
            if why:  # numbers of another build: left out of the report until `lab eval` measures them again
                # plain `lab eval` measures the run's own models only; another is named again (`lab dpo`'s policy)
                again = "" if name in MODEL_DIRS else f" --model {shlex.quote(model_spec(root, res))} --name {name}"
                fix = f"run `lab eval{this_run}{again}{flag}`"
                rebuilt = trained_from_earlier(root, res, name)
                if rebuilt and name in MODEL_STAGES:  # its stage first, or all of them
                    rebuild = (f"`lab run{this_run}`" if _outdated(root, MODEL_STAGES[name])[1]
                               else builds(MODEL_STAGES[name], this_run))
                    fix = f"run {rebuild}, then `lab eval{this_run}{flag}`"
                elif rebuilt:  # `lab dpo`'s policy first, with the flags it was trained with
                    fix = (f"run `lab dpo{this_run} --name {shlex.quote(res['model_in_run'])}` again (with the other "
                           f"flags of its {model_spec(root, res)}/metrics.json config), then "
                           f"`lab eval{this_run}{again}{flag}`")
                if name in MODEL_STAGES and not is_done(root, MODEL_STAGES[name]):  # no model for `lab eval` yet
                    fix = f"run {builds(MODEL_STAGES[name], this_run)}, then `lab eval{this_run}{flag}`"
                report.setdefault("eval_stale", {})[prefix + name] = f"{why}: {fix}"
                continue
            report.setdefault(key, {})[name] = _scalars(res)
            report["profile"] = report[key][name].pop("profile", report["profile"])
    for path in sorted((root / "eval" / "data").glob("*.json")):  # `lab eval --data FILE`
        res = _readable(path, DATA_KEYS)
        summary, why = _data_summary(root, res) if res is not None else (None, None)
        if why:
            again = res.get("data_path") or res["data"]  # resolved when written: right from any working folder
            split = res.get("data_split", "train")
            split = f" --data_split {shlex.quote(split)}" if split != "train" else ""
            others = any(name not in MODEL_DIRS for name in res["models"])  # `lab eval --model` ones are named again
            report.setdefault("eval_stale", {})[path.name] = (
                f"{why}: run `lab eval{this_run} --data {shlex.quote(again)}{split}` again"
                + (" (with --model and --name for a model from outside the run's stages)" if others else ""))
        if summary:  # one entry per file and split: two splits of a dataset, or two files given by one name
            key = res["data"] if res.get("data_split", "train") == "train" else f"{res['data']} ({res['data_split']})"
            report.setdefault("eval_data", {})[key if key not in report.get("eval_data", {}) else path.stem] = summary
    ck.write_json(root / "report.json", report)
    return report


def stage_table(report: dict) -> str:
    """A fixed-width table of the report: one line per stage, per evaluated model, and per model evaluated on the
    validation prompts ("valid. <model>"); then a line for each evaluation left out as stale, with its fix."""
    keys = {"tokenizer": ("vocab_size", "chars_per_token_en", "chars_per_token_zh"),
            "pretrain": ("params", "val_loss", "fact_accuracy", "tokens_per_s"),
            "sft": ("method", "trainable_params", "final_loss"),
            "reward": ("pairwise_accuracy", "ratings_model_pairwise_accuracy", "n_train_pairs"),
            "ppo": ("reward_start", "reward_end", "kl_end", "episodes_per_s")}
    evals = [(f"eval {n}", m) for n, m in report["eval"].items()] + [
        (f"eval valid. {n}", m) for n, m in report.get("eval_validation", {}).items()]
    width = max([16] + [len(label) + 1 for label, _ in evals])  # a long model name widens the first column
    lines = [f"{'stage':<{width}}{'wall_s':>9}  metrics", "-" * (width + 60)]
    for stage, m in report["stages"].items():
        shown = "  ".join(f"{k}={m[k]}" for k in keys.get(stage, m) if k in m and k != "wall_s")
        lines.append(f"{stage:<{width}}{m.get('wall_s', 0):>9.1f}  {shown}")
    for label, m in evals:
        per = " ".join(f"{t}={v:.2f}" for t, v in m["per_task"].items())
        extra = "".join(f"  {k}={m[k]}" for k in ("mean_reward", "win_rate_vs_sft") if m.get(k) is not None)
        accuracy = f"task_accuracy={m['task_accuracy']:.3f}"
        lines.append(f"{label:<{width}}{m.get('wall_s', 0):>9.1f}  {accuracy}  {per}{extra}")
    lines += [f"left out, stale: {name}: {why}" for name, why in report.get("eval_stale", {}).items()]
    return "\n".join(lines)


# ------------------------------------------------------------------ reuse, like make

def upstream(stage: str, config: dict) -> tuple[str, ...]:
    """The stages whose artifacts `stage` is built from; a given --model (or --reward_model) replaces one."""
    if stage == "ppo":  # policy and reference from the SFT model, reward and value model from the reward model
        return tuple(s for s, given in (("sft", config["model"]), ("reward", config["reward_model"])) if not given)
    before = {"pretrain": "tokenizer", "sft": "pretrain", "reward": "sft"}.get(stage)
    return (before,) if before and not config.get("model") else ()


def upstream_stamps(root: Path, stage: str, cfg) -> dict:
    """{upstream stage: its finished_at}, read before `stage` loads it: what `stale_reason` compares later."""
    return {up: stamp(root, up) for up in upstream(stage, cfg.to_dict())}


FOLDER_SETTINGS = ("model", "reward_model")  # settings that name a model folder from outside the run

NOT_BUILD_SETTINGS = {"save_every"}  # how often a stage checkpoints: its model and its results are the same


def folder_stamps(config: dict) -> dict:
    """{setting: `folder_stamp`} of the local model folders a stage was given (`--model`, `--reward_model`)."""
    stamps = {k: folder_stamp(config[k]) for k in FOLDER_SETTINGS if config.get(k)}
    return {k: v for k, v in stamps.items() if v}  # a hub id has none


def _changes(old: dict, new: dict, defaults: dict | None = None) -> list[str]:
    """'max_steps 300 -> 50' for every field that differs (a field only one side has shows as unset). A field the
    old build did not record yet (added to the config since) counts as unchanged while it keeps its default."""
    unset = object()
    show = lambda d, k: repr(d[k]) if k in d else "unset"  # noqa: E731
    added = {k for k in new if k not in old and (defaults or {}).get(k, unset) == new[k]}
    return [f"{k} {show(old, k)} -> {show(new, k)}" for k in {**old, **new}
            if k not in added | NOT_BUILD_SETTINGS and old.get(k, unset) != new.get(k, unset)]


def stale_reason(root: Path, stage: str, config: dict, profile: str) -> str | None:
    """None when the finished `stage` in `root` can be reused for `config`; else why it must be (re)built.

    Like `make`: reused only if its metrics.json exists, its recorded profile and config equal the requested ones,
    and every upstream stage is still the build it was made from. Each stage records the `finished_at` of its
    upstream stages (`built_from`), so copying a run folder (new mtimes) changes nothing; a run from before that
    record falls back to comparing the mtimes of the metrics files."""
    path = Path(root) / STAGE_DIRS[stage] / "metrics.json"
    if not path.exists():
        return f"no finished artifact in {path.parent}"
    metrics = ck.read_json(path)
    if metrics.get("profile") != profile:
        return f"built for profile {metrics.get('profile')}, not {profile}"
    if "config" not in metrics:
        return "no config recorded with it"
    data_now = ck.file_sha256(config.get("data"))
    recorded = ck.data_as_named_now(metrics["config"], metrics.get("data_sha256"), data_now, config.get("data"))
    changed = _changes(recorded, config, CONFIGS[stage].for_profile(profile).to_dict())
    if changed:
        return f"config changed ({', '.join(changed)})"
    if metrics.get("data_sha256") and data_now and data_now != metrics["data_sha256"]:
        return f"its --data file {config['data']} changed since"
    for k, was in metrics.get("folder_stamps", {}).items():
        if config.get(k) and folder_stamp(config[k]) != was:
            return f"its --{k} folder {config[k]} changed or is gone since"
    built_from = metrics.get("built_from")
    for up in upstream(stage, config):
        now = stamp(root, up)
        if now is None:
            return f"upstream {up} is not finished"
        if built_from is not None:
            rebuilt = built_from.get(up) != now
        else:  # a run from before `built_from` was recorded
            rebuilt = (Path(root) / STAGE_DIRS[up] / "metrics.json").stat().st_mtime > path.stat().st_mtime
        if rebuilt:
            return f"upstream {up} was rebuilt after it"
    return None
