"""The pipeline's stages as plain functions: each builds its artifact under `runs/<profile>/` and
returns its metrics dict. The CLI, the notebooks and the tests all call these.

    runs/<profile>/tokenizer/   tokenizer + metrics.json
    runs/<profile>/base/        pretrained model (safetensors) + tokenizer + metrics.json
    runs/<profile>/sft/, reward/, rlhf/   the later stages' models, each with its metrics.json

The run folder's layout, its report and when a finished stage is stale are in `runs`, the reward stage's pairs and
ratings in `reward_data`, the evaluation stage in `harness`; the names the notebooks and tests use from `runs` and
`harness` (`run_eval`, `load_model`, `write_report`, `stale_reason`, ...) are imported here too.

A stage's metrics.json also records its `config`, when it finished (`finished_at`) and the `finished_at` of each
upstream stage it was built from (`built_from`): `ensure` (and so `lab run`) reuses a stage, like `make`, only
while all three still hold (`runs.stale_reason`).
"""

from __future__ import annotations

import copy
import random
import shlex
import shutil
import time
import warnings
from pathlib import Path

from . import checkpoints as ck
from . import reward_data
from .config import (DPOConfig, PPOConfig, PretrainConfig, RewardConfig, SFTConfig, TokenizerConfig, WorldConfig,
                     build_world_from, resolve_profile)
from .data import load_texts, read_first
from .errors import LabError
from .evaluate import fact_accuracy
from .generation import alpaca_prompts
from .harness import load_model, run_eval, run_eval_data, training_prompts  # noqa: F401 (the notebooks' one import)
from .modeling import check_trainable
from .runs import (CONFIGS, MODEL_DIRS, STAGE_DIRS, STAGES, check_profile, dpo_metrics, finished_dir,  # noqa: F401
                   folder_stamp, folder_stamps, is_done, iso_time, run_dir, run_flags, stage_table, stale_reason,
                   stamp, upstream, upstream_stamps, world_records, write_report)


def _finish(root: Path, stage: str, metrics: dict, profile: str, built_from: dict,
            finished_at: str | None = None, data_sha: str | None = None) -> dict:
    """Write the stage's metrics.json last: its presence marks the stage finished (see `stale_reason`). `finished_at`
    keeps an earlier build's stamp for a rebuild that wrote the same files (the stages built on it stay current).
    `data_sha`: the --data file's hash taken before the stage read it (a file edited while the stage trained is then
    one it did not learn from)."""
    done = {"profile": profile, "finished_at": finished_at or iso_time(time.time()), "built_from": built_from}
    if data_sha := data_sha or ck.file_sha256(metrics.get("config", {}).get("data")):  # the same path, other contents
        done["data_sha256"] = data_sha
    if folders := folder_stamps(metrics.get("config", {})):  # the same --model folder, trained again in place
        done["folder_stamps"] = folders
    ck.write_json(root / STAGE_DIRS[stage] / "metrics.json", metrics | done)
    write_report(root)
    return metrics


def _unfinished(root: Path) -> None:
    """Rewrite the report once a stage has replaced its folder and has more to do before `_finish`: killed in
    between, report.json would go on listing the numbers of the model that folder no longer holds. With a damaged
    file elsewhere no report can be written: the old one goes, and `_finish`'s report names the file once this
    stage's metrics.json is safe."""
    try:
        write_report(root)
    except ck.DamagedFile:
        (root / "report.json").unlink(missing_ok=True)


def run_tokenizer(profile: str | None = None, out=None, **changes) -> dict:
    from .pretrain import build_tokenizer

    profile, root = resolve_profile(profile), run_dir(profile, out)
    tok_cfg = TokenizerConfig.for_profile(profile, **changes)
    data_sha, folder = ck.file_sha256(tok_cfg.data), root / "tokenizer"
    was = _tokenizer_files(folder) if is_done(root, "tokenizer") else None
    try:
        ours = was is not None and ck.read_json(folder / "metrics.json").get("profile") == profile
        was_stamp = stamp(root, "tokenizer") if ours else None
    except ck.DamagedFile:  # a cut metrics.json: this build writes it anew, with a stamp of its own
        was_stamp = None
    metrics = build_tokenizer(tok_cfg, WorldConfig.for_profile(profile), folder)
    same = was_stamp is not None and _tokenizer_files(folder) == was  # the corpus and settings are seeded: often so
    if same:
        print("[lab] tokenizer: trained again, the same files as before: the stages built on it stay current")
    return _finish(root, "tokenizer", metrics | {"config": tok_cfg.to_dict()}, profile, {},
                   finished_at=was_stamp if same else None, data_sha=data_sha)


def _tokenizer_files(folder: Path) -> dict[str, str]:
    """The tokenizer's files (all but metrics.json) and a hash of each: a rebuild that gives the same token ids."""
    return {p.name: ck.file_sha256(str(p)) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "metrics.json"}


def tokenizer_changes(cfg: PretrainConfig) -> dict:
    """The tokenizer a pretraining run of `cfg` asks for: learned from its --data, or from the world corpus."""
    return {"data": cfg.data, "data_split": cfg.data_split} if cfg.data else {}


def _say_which_text_the_tokenizer_knows(root: Path, data: str, profile: str) -> None:
    """A tokenizer learned from other text, or from an earlier version of this --data file, is kept (every later stage
    was built on it), but said: byte-level BPE encodes any text, yet packs text unlike its own poorly."""
    learned = ck.read_json(root / "tokenizer" / "metrics.json")
    learned_from = learned.get("config", {}).get("data") or ""
    how = (f"`lab tokenizer{run_flags(profile, root)}{' --data ' + shlex.quote(data) if data else ''}` learns one "
           "from this text, then pretrain again")
    data_sha = ck.file_sha256(data)  # None for the world corpus, a hub id or a folder: then the names are compared
    if learned_from != data and not (data_sha and learned.get("data_sha256") == data_sha):
        print(f"[lab] the tokenizer in {root / 'tokenizer'} was learned from {learned_from or 'the world corpus'}, "
              f"not from {data or 'the world corpus'}; {how}")
    elif data and learned.get("data_sha256") and learned["data_sha256"] != data_sha:
        print(f"[lab] the tokenizer in {root / 'tokenizer'} was learned from an earlier version of {data} (the file "
              f"changed since); {how}")


def run_pretrain(profile: str | None = None, out=None, resume: bool | str = False, progress: bool = True,
                 **changes) -> dict:
    """Pretrain the base model (training the tokenizer first when it is missing), then probe its facts. `resume`: see
    `pretrain.pretrain` ("auto" continues an interrupted run of the same settings: `lab run`, `ensure`)."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .pretrain import pretrain

    profile, root = resolve_profile(profile), run_dir(profile, out)
    cfg, world_cfg = PretrainConfig.for_profile(profile, **changes), WorldConfig.for_profile(profile)
    data_sha = ck.file_sha256(cfg.data)
    read_first(load_texts, cfg.data, cfg.data_split)  # before a tokenizer is trained on it, or advice printed about it
    if cfg.model:
        refuse_unused(cfg, profile, SHAPE, f"they shape a fresh Llama, and --model {cfg.model} brings its own",
                      "drop FLAGS, or pass --model '' to pretrain a fresh Llama of that shape")
        check_trainable(cfg.model)
    else:  # the run's tokenizer, if finished, is this profile's (a forgotten --profile would train on it)
        check_profile(root, profile, ("tokenizer",))
    cpu = not torch.cuda.is_available()  # on a CPU, PartialState(cpu=True) makes torchrun's processes one group
    trained_tokenizer = False
    # under `accelerate launch` or torchrun, one process trains the tokenizer
    with PartialState(cpu=cpu).main_process_first():
        if not cfg.model and not is_done(root, "tokenizer"):
            print(f"[lab] no tokenizer in {root / 'tokenizer'}: training it first"
                  + (f", on {cfg.data}" if cfg.data else ""))
            run_tokenizer(profile, root, **tokenizer_changes(cfg))
            trained_tokenizer = True
        elif not cfg.model and PartialState(cpu=cpu).is_main_process:
            _say_which_text_the_tokenizer_knows(root, cfg.data, profile)
    built_from = upstream_stamps(root, "pretrain", cfg)
    try:
        metrics = pretrain(cfg, root / "tokenizer", root / "base", world_cfg, resume=resume, progress=progress)
    except LabError:
        if trained_tokenizer and cfg.data:
            _drop_unused_tokenizer(root)
        raise
    metrics["config"] = cfg.to_dict()
    if not PartialState(cpu=cpu).is_main_process:  # the main process probes the model and writes the report
        return metrics | {"fact_accuracy": None, "main_process": False}
    if cfg.data:  # facts of the synthetic world say nothing about a model trained on other text
        metrics |= {"fact_accuracy": None, "fact_accuracy_en": None, "fact_accuracy_zh": None}
        return _finish(root, "pretrain", metrics, profile, built_from, data_sha=data_sha)
    _unfinished(root)  # base/ holds the new model now, not yet probed
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(root / "base", use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(root / "base")
    facts = fact_accuracy(model, tokenizer, build_world_from(world_cfg))
    metrics |= {k: facts[k] for k in ("fact_accuracy", "fact_accuracy_en", "fact_accuracy_zh")}
    metrics |= {"fact_samples": facts["samples"], "wall_s": round(metrics["wall_s"] + time.perf_counter() - t0, 2)}
    return _finish(root, "pretrain", metrics, profile, built_from, data_sha=data_sha)


def run_sft(profile: str | None = None, out=None, progress: bool = True, **changes) -> dict:
    """Fine-tune the base model on Alpaca records (the world's tasks, or --data) with cfg.method."""
    from .data import load_alpaca
    from .sft import train_sft

    profile, root = resolve_profile(profile), run_dir(profile, out)
    cfg = SFTConfig.for_profile(profile, **changes)
    data_sha = ck.file_sha256(cfg.data)
    if cfg.method == "full":
        refuse_unused(cfg, profile, ("lr", "lora_r", "lora_alpha", "lora_dropout"), "they set the LoRA adapter and "
                      "its learning rate, and --method full trains every weight at --full_lr",
                      "drop FLAGS, or use --method qlora or lora")
    else:
        refuse_unused(cfg, profile, ("full_lr",), f"it is --method full's learning rate; --method {cfg.method} "
                      "trains at --lr", "drop --full_lr, or use --lr")
    if cfg.data:
        refuse_unused(cfg, profile, ("n_records",), f"it counts the world's generated records, and --data {cfg.data} "
                      "brings its own", f"drop FLAGS; --data_limit {cfg.n_records} keeps the first {cfg.n_records} "
                      "records of the file")
    world = build_world_from(WorldConfig.for_profile(profile))
    read_first(lambda spec, split: load_alpaca(spec, split, limit=cfg.data_limit or None), cfg.data, cfg.data_split)
    check_trainable(cfg.model)
    base = Path(cfg.model) if cfg.model else finished_dir(root, "pretrain", "base model", profile)
    records = load_alpaca(cfg.data, cfg.data_split, limit=cfg.data_limit or None,
                          special_tokens=_special_tokens(base)) if cfg.data else world_records("sft", world, cfg)
    built_from = upstream_stamps(root, "sft", cfg)
    metrics = train_sft(cfg, base, records, root / "sft", progress=progress)
    return _finish(root, "sft", metrics | {"config": cfg.to_dict(), "data": cfg.data or "world"}, profile, built_from,
                   data_sha=data_sha)


def _special_tokens(model_dir: Path) -> list[str]:
    """The special tokens of a model's tokenizer, which text someone brings must not spell out; none when it cannot
    be loaded (the model's own load then says why, with the fix)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir).all_special_tokens
    except Exception:  # a missing folder, an uncached hub id: reported by `train_sft`'s load
        return []


def run_reward(profile: str | None = None, out=None, progress: bool = True, pairs: list[dict] | None = None,
               **changes) -> dict:
    """Collect preferences (SFT samples labelled by the annotator, or --data) and train both reward models.

    With --data naming the arena's vote store, its 1–5 ratings train the ratings model (every rated answer, ties and
    both-bad votes included). With --mix_previous the previous round's ratings (`reward/ratings.jsonl`) come first,
    keeping their held-out prompts. Other sources hold pairs only: without previous ratings there is then no ratings
    model.

    `pairs` (Python only) replaces both with ready pairs whose prompts are already rendered, e.g. a previous
    round's `reward/pairs.jsonl` plus newly exported votes (notebook 06). Their `chosen_ended`/`rejected_ended`
    are used, and a pair's `split` ("train"/"eval") is kept for its prompt, so earlier held-out prompts stay
    held out; prompts without one are split as usual."""
    from . import reward as R
    from .modeling import inference_device, load_causal_lm

    profile, root = resolve_profile(profile), run_dir(profile, out)
    cfg = RewardConfig.for_profile(profile, **changes)
    data_sha = ck.file_sha256(cfg.data)
    reward_data.check_inputs(cfg, pairs, root / "reward" / "pairs.jsonl", RewardConfig.for_profile(profile))
    _lora_rank_only_with_lora(cfg, profile)
    world = build_world_from(WorldConfig.for_profile(profile))
    if pairs is None:
        from .preferences import load_pairs
        read_first(load_pairs, cfg.data, cfg.data_split)
    check_trainable(cfg.model)
    sft_dir = Path(cfg.model) if cfg.model else finished_dir(root, "sft", "SFT model to start the reward model from",
                                                             profile)
    built_from = upstream_stamps(root, "reward", cfg)
    t0 = time.perf_counter()
    policy, tokenizer = load_causal_lm(str(sft_dir), device=inference_device())  # it only samples
    given = pairs is not None or bool(cfg.data)
    if given:  # pairs someone brought: ratings only from a vote store, no off-topic pairs, no task record to judge by
        pairs, ratings, samples, held, n_too_long, source = reward_data.given_pairs(cfg, root, pairs, policy,
                                                                                    tokenizer, progress)
        n_off_topic, asked = 0, None
    else:
        pairs, ratings, samples, held, n_off_topic, n_too_long = reward_data.sampled_pairs(cfg, world, policy,
                                                                                           tokenizer, progress)
        source = "sft samples"
        asked = {s["prompt"]: s["rec"] for s in samples}  # the records the annotator judged against
    sample_s = time.perf_counter() - t0
    del policy  # sampled: on a GPU its memory goes to the reward models' training
    train_pairs, eval_pairs = reward_data.split_pairs(cfg, pairs, held, given, n_too_long)
    train_r = [r for r in ratings if r["prompt"] not in held]  # the ratings model's, on the pairs' training prompts
    if ratings and not train_r:
        warnings.warn(f"all {len(ratings)} ratings are of answers to held-out prompts: no ratings model is trained",
                      stacklevel=2)
    if not train_r:
        refuse_unused(cfg, profile, reward_data.RATINGS_FLAGS, "they set the ratings model's training, and no rating "
                      "is of an answer to a training prompt", "drop FLAGS")

    # 1. the pairwise model, normalised on SFT samples, saved with the pairs and their split
    model, _, history = R.train_pairwise(cfg, sft_dir, train_pairs, progress)
    # the normalisation is fitted at the trainer's precision (bf16 autocast under --bf16, left wrapped around the
    # model's forward; a --lora model comes merged, without it), the one PPO scores in; the held-out accuracy is the
    # saved float32 model's, the one `lab eval`, the apps and the notebooks read
    mean, std = R.fit_normalisation(model, tokenizer, samples)
    model = R.as_saved(model)
    accuracy = R.pairwise_accuracy(model, tokenizer, eval_pairs)
    R.RewardModel(model, tokenizer, mean, std).save(root / "reward")
    ck.write_jsonl(root / "reward" / "pairs.jsonl",
                   [p | {"split": "eval" if p["prompt"] in held else "train"} for p in pairs])
    if ratings:  # what a later --mix_previous trains the next ratings model on, with these pairs
        ck.write_jsonl(root / "reward" / reward_data.RATINGS_FILE,
                       [r | {"split": "eval" if r["prompt"] in held else "train"} for r in ratings])
    _unfinished(root)  # reward/ is this run's now, and the ratings model trains next

    def by_term(acc: dict) -> dict | None:  # which rubric term decided the pairs each model gets wrong
        return R.accuracy_by_term(world, asked, eval_pairs, acc["margins"]) if asked else None

    metrics = {"pairwise_accuracy": accuracy["accuracy"], "pairwise_accuracy_per_task": accuracy["per_task"],
               "pairwise_accuracy_by_term": by_term(accuracy),
               "n_train_pairs": len(train_pairs), "n_eval_pairs": len(eval_pairs), "n_too_long": n_too_long,
               "n_off_topic_pairs": n_off_topic,
               "norm_mean": round(mean, 4),
               "norm_std": round(std, 4), "sample_s": round(sample_s, 2), "history": history}
    # 2. the ratings model, on the same held-out pairs
    if train_r:
        rmodel, _, r_history = R.train_ratings(cfg, sft_dir, train_r, progress)
        rmodel = R.as_saved(rmodel)
        r_accuracy = R.pairwise_accuracy(rmodel, tokenizer, eval_pairs)
        R.RewardModel(rmodel, tokenizer).save(root / "reward-ratings")
        metrics |= {"ratings_model_pairwise_accuracy": r_accuracy["accuracy"],
                    "ratings_model_per_task": r_accuracy["per_task"], "n_train_ratings": len(train_r),
                    "ratings_model_by_term": by_term(r_accuracy),
                    "ratings_history": r_history}
    else:  # no ratings, no ratings model: an earlier run's must not sit beside this reward model as if it were its peer
        shutil.rmtree(root / "reward-ratings", ignore_errors=True)
        metrics |= {"ratings_model_pairwise_accuracy": None, "n_train_ratings": 0}
    metrics |= {"wall_s": round(time.perf_counter() - t0, 2), "data": source,
                "config": cfg.to_dict()}
    return _finish(root, "reward", metrics, profile, built_from, data_sha=data_sha)


def refuse_unused(cfg, profile: str, names, why: str, fix: str) -> None:
    """One error for flags that would be ignored: each of `names` whose value differs from the profile's default
    (so a flag given at its default passes, as elsewhere). `why` follows the flags ("--lora_r ... would be ignored:"
    + why); FLAGS in `fix` becomes them."""
    defaults = type(cfg).for_profile(profile)
    given = [f"--{'no_' if getattr(cfg, n) is False else ''}{n}"  # a switch turned off was given as --no_X
             for n in names if getattr(cfg, n) != getattr(defaults, n)]
    if given:
        flags = " ".join(given)
        raise LabError(f"{flags} would be ignored: {why}", fix=fix.replace("FLAGS", flags))


def _lora_rank_only_with_lora(cfg, profile: str) -> None:
    """Reward, DPO and PPO: the adapter's rank means nothing without --lora."""
    if not cfg.lora:
        refuse_unused(cfg, profile, ("lora_r",), "it is the LoRA rank, and --lora is off", "add --lora, or drop FLAGS")

SHAPE = ("n_layers", "d_model", "n_heads", "d_ff", "context")  # a fresh Llama's; --model brings its own


def run_ppo(profile: str | None = None, out=None, resume: bool | str = False, stop_at: int | None = None,
            log=print, callback=None, reward_override=None, save_to: str = "rlhf", **changes) -> dict:
    """RLHF: optimise the SFT model against the reward model with our PPO; save runs/<profile>/rlhf.

    `reward_override` replaces the saved reward model (a `reward.RewardModel`, e.g. a deliberately flawed one; the
    `--reward_model` flag, in `changes`, names another folder instead), and
    `save_to` names the output folder: the reward-hacking experiment of notebook 05 uses both. `resume`: True
    continues from the last checkpoint (one of a run with other settings is an error); "auto" (`lab run`) continues
    one it can check is of this run, and starts afresh otherwise."""
    from . import ppo

    profile, root = resolve_profile(profile), run_dir(profile, out)
    if reward_override is not None and save_to == "rlhf":  # the stage would record the saved reward model's build
        raise LabError("a policy trained against a reward model passed in (reward_override) would be saved as the "
                       "run's RLHF stage, built from the saved reward model", path=str(root / "rlhf"),
                       fix="give it a folder of its own: save_to='rlhf-<experiment>'")
    cfg = PPOConfig.for_profile(profile, **changes)
    data_sha = ck.file_sha256(cfg.data)
    _lora_rank_only_with_lora(cfg, profile)
    if not cfg.adaptive_kl:
        refuse_unused(cfg, profile, ("kl_target", "kl_horizon", "kl_floor"), "they steer the adaptive KL "
                      "controller, which is off (beta stays at --kl_coef)", "drop FLAGS, or turn it on: --adaptive_kl")
    world = build_world_from(WorldConfig.for_profile(profile))
    from .preferences import load_prompts
    read_first(load_prompts, cfg.data, cfg.data_split)
    check_trainable(cfg.model)
    policy_dir = Path(cfg.model) if cfg.model else finished_dir(root, "sft", "SFT model for PPO", profile)
    reward_dir = (Path(cfg.reward_model) if cfg.reward_model
                  else finished_dir(root, "reward", "reward model for PPO", profile))
    built_from = upstream_stamps(root, "ppo", cfg)
    t0 = time.perf_counter()
    policy, ref_model, value_model, reward_model, tokenizer = ppo.load_models(cfg, policy_dir, reward_dir)
    reward_model = reward_override or reward_model
    prompts, n_too_long = ppo_prompts(cfg, world, tokenizer, policy.config.max_position_embeddings)
    _warn_if_prompts_differ(cfg, reward_dir)
    ckpt_root = root / f"{save_to}-checkpoints"
    trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tokenizer, prompts,
                             out_dir=ckpt_root, log=log)
    # what a resume checks it still trains with: the upstream stages' builds, and what was given by path instead
    given = {flag: mark for flag, mark in (("--model", folder_stamp(cfg.model)),
                                          ("--reward_model", folder_stamp(cfg.reward_model)),
                                          ("--data", data_sha)) if mark}
    trainer.built_from = built_from | given if reward_override is None else None  # a model passed in: none to check
    log = trainer.log = log if trainer.acc.is_main_process else (lambda *_: None)  # one process logs
    latest = ck.latest_checkpoint(ckpt_root) if resume else None
    if latest is not None and resume == "auto":
        try:
            trainer.check_resumable(latest, strict=True)
        except ck.DamagedFile:  # a file cut short or edited: its fix says how to resume, as pretraining's does
            raise
        except LabError as err:
            log(f"[lab] ppo: {latest} is not this run's to continue ({err.message}): starting afresh")
            latest = None
    if latest is not None:
        trainer.load_checkpoint(latest)
        log(f"[lab] ppo: resumed from {latest.name}")
    else:  # a fresh run: an earlier run's checkpoints must never be resumed into it; they go at its first save
        trainer.clear_earlier = True
        if resume is True:
            log(f"[lab] ppo: no checkpoint in {ckpt_root} to resume from: starting at iteration 0")
    history = trainer.train(stop_at, callback)
    if trainer.iteration < cfg.iterations:  # stopped early on purpose (tests, notebooks): no final model
        return {"iterations": trainer.iteration, "history": history}
    if trainer.clear_earlier and trainer.acc.is_main_process:  # finished without a save of its own (--save_every 0)
        shutil.rmtree(ckpt_root, ignore_errors=True)
    ppo.save_policy(trainer, root / save_to)
    if not trainer.acc.is_main_process:  # under torchrun / accelerate launch the main process reports
        return {"iterations": trainer.iteration, "main_process": False}
    first, last = history[: max(1, len(history) // 10)], history[-max(1, len(history) // 10):]
    mean = lambda rows, k: round(sum(r[k] for r in rows) / len(rows), 4)  # noqa: E731
    metrics = {"iterations": trainer.iteration, "episodes": history[-1]["episodes"], "n_prompts": len(prompts),
               "n_prompts_too_long": n_too_long, "data": cfg.data or "world",
               "episodes_per_s": ppo.throughput(history), "reward_start": mean(first, "score"),
               "reward_end": mean(last, "score"), "kl_end": mean(last, "kl"),
               "eos_rate_end": mean(last, "eos_rate"), "kl_alarm": any(r["kl_alarm"] for r in history),
               # the β each iteration used, as the KL controller set it (kl_coef throughout when it is fixed)
               "kl_coef_max": max(r["kl_coef"] for r in history), "kl_coef_end": history[-1]["kl_coef"],
               "wall_s": round(time.perf_counter() - t0, 2), "history": history, "samples": trainer.samples,
               "config": cfg.to_dict()}
    if save_to != "rlhf":  # an experiment beside the pipeline: its metrics stay with it, out of the report
        ck.write_json(root / save_to / "metrics.json", metrics)
        return metrics
    return _finish(root, "ppo", metrics, profile, built_from, data_sha=data_sha)


# ------------------------------------------------------------------ DPO: beside the pipeline

# the run's own folders and files, which `lab dpo --name` must never write over
# (the vote store's SQLite side files among them)
_RUN_FOLDERS = frozenset(STAGE_DIRS.values()) | {"sft-adapter", "reward-ratings", "eval", "round2", "report.json",
                                                 "votes.jsonl", "votes.db", "votes.db-wal", "votes.db-shm",
                                                 "votes.db-journal"}


def run_dpo(profile: str | None = None, out=None, name: str = "dpo", progress: bool = True, **changes) -> dict:
    """DPO from the SFT model on the reward stage's preference pairs (or --data's), saved to runs/<profile>/<name>
    with its metrics.json. Like notebook 05's experiments it sits beside the pipeline: `lab run` does not build it,
    the report leaves it out, and `lab eval --model runs/<profile>/<name>` evaluates it like any model."""
    from . import dpo
    from .modeling import load_causal_lm

    profile, root = resolve_profile(profile), run_dir(profile, out)
    cfg = DPOConfig.for_profile(profile, **changes)
    _check_dpo_inputs(cfg, root, name, profile)
    from .preferences import load_pairs
    read_first(load_pairs, cfg.data, cfg.data_split)
    check_trainable(cfg.model)
    sft_dir = Path(cfg.model) if cfg.model else finished_dir(root, "sft", "SFT model to start DPO from", profile)
    pairs_file = None if cfg.data else finished_dir(root, "reward", "preference pairs for DPO", profile) / "pairs.jsonl"
    # what the policy is trained from, for the report to say when it is out of date: the run's SFT model (--model may
    # name its folder too) and the reward stage's pairs, or the --model folder's own build
    own_sft = not cfg.model or Path(cfg.model).resolve() == (root / "sft").resolve()
    built_from = {up: stamp(root, up) for up, ours in (("sft", own_sft), ("reward", not cfg.data)) if ours}
    given = {} if own_sft else folder_stamps({"model": cfg.model})
    t0 = time.perf_counter()
    policy, tokenizer = load_causal_lm(str(sft_dir))
    if pairs_file is None:
        pairs, source = reward_data.rendered_pairs(cfg.data, cfg.data_split, tokenizer), cfg.data
    else:
        pairs = reward_data.run_pairs(pairs_file, fix=f"run `lab reward{run_flags(profile, root)}` again to write "
                                                        "the file anew")
        source = str(pairs_file)
    pairs, n_too_long = reward_data.fitting(pairs, tokenizer, cfg.max_length, policy.config.max_position_embeddings,
                                            cfg.data or str(pairs_file))
    held = reward_data.held_out(pairs, cfg.eval_fraction, cfg.seed)  # the reward stage's pairs: its own split
    eval_pairs = [p for p in pairs if p["prompt"] in held]
    cut_off = [p for p in pairs if p["prompt"] not in held and not dpo.both_ended(p)]
    train_pairs = [p for p in pairs if p["prompt"] not in held and dpo.both_ended(p)]
    if not train_pairs:
        causes = {"too_long": n_too_long, "held_out": len(eval_pairs), "cut_off": len(cut_off)}
        worst = max(causes, key=causes.get)
        collect = f"collect more pairs (`lab reward{run_flags(profile, root)} --n_prompts N` with more prompts)"
        fix = {"too_long": "bring shorter pairs, or raise --max_length (within the model's context)",
               "held_out": "bring pairs on more prompts (a prompt's pairs are never split), lower --eval_fraction, "
                           "or give some records \"split\": \"train\" (a record's own split is kept)"
                           if cfg.data else collect,
               "cut_off": "bring pairs whose two answers ended (DPO trains on those only: TRL ends every answer "
                          "with EOS); a pair flagged \"chosen_ended\": false or \"rejected_ended\": false was cut off"
                          if cfg.data else f"{collect}, or raise the reward stage's --max_new_tokens so that more "
                          "answers end"}[worst]
        raise LabError(f"no preference pair to train DPO on: of {len(pairs) + n_too_long}, {n_too_long} are too "
                       f"long, {len(eval_pairs)} held out and {len(cut_off)} have an answer cut off before EOS",
                       path=cfg.data or str(pairs_file), fix=fix)
    if not eval_pairs:
        warnings.warn(f"no pair of {cfg.data or pairs_file} is held out ({len({p['prompt'] for p in pairs})} "
                      f"prompt(s), --eval_fraction {cfg.eval_fraction}): the implicit reward's accuracy is not "
                      "measured; bring pairs on more prompts to measure it", stacklevel=2)
    # the frozen reference: a copy of the SFT model as loaded here (the same PAD row where one was added), or with
    # --lora the policy with its adapter disabled
    ref_model = None if cfg.lora else copy.deepcopy(policy)
    trainer, train_s, eval_loss = dpo.train(cfg, policy, ref_model, tokenizer, train_pairs, eval_pairs, progress)
    # the trainer's last use before saving: implicit_accuracy unwraps its models in place
    implicit = dpo.implicit_accuracy(trainer, tokenizer, eval_pairs, cfg.beta) if eval_pairs else None
    metrics = {"n_train_pairs": len(train_pairs), "n_eval_pairs": len(eval_pairs), "n_cut_off": len(cut_off),
               "n_too_long": n_too_long, "train_s": round(train_s, 2),
               # TRL's loss on the held-out pairs whose answers both ended (what it trains on)
               "eval_loss": eval_loss, "n_eval_loss_pairs": sum(map(dpo.both_ended, eval_pairs)),
               "implicit_accuracy": implicit["accuracy"] if implicit else None,
               "implicit_accuracy_per_task": implicit["per_task"] if implicit else None,
               "history": trainer.state.log_history, "data": source, "config": cfg.to_dict(), "profile": profile,
               "built_from": built_from} | ({"folder_stamps": given} if given else {})
    with ck.atomic_dir(root / name) as tmp:  # a folder of its own: `lab eval --model` and the compare app read it
        dpo.save(trainer, tokenizer, tmp, cfg.lora)
        metrics |= {"wall_s": round(time.perf_counter() - t0, 2), "finished_at": iso_time(time.time())}
        ck.write_json(tmp / "metrics.json", metrics)
    write_report(root)  # an evaluation of the policy this replaced is stale now, and the report says so
    return metrics


def _check_dpo_inputs(cfg: DPOConfig, root: Path, name: str, profile: str) -> None:
    """`lab dpo`'s flag errors, before any work: a --name that is not a folder name or would write over something
    that is not a DPO policy, and an --eval_fraction that has nothing to split."""
    from .harness import NAME

    fix = ("use letters, digits, '.', '_' and '-' (up to 64 characters), and a name that is not one of the run's own "
           "folders or files, e.g. --name dpo-sft")
    if not NAME.fullmatch(name) or name in _RUN_FOLDERS or name.endswith("-checkpoints"):
        raise LabError(f"{name!r} cannot name the DPO policy's folder", where="--name", fix=fix)
    if (root / name).exists() and not _is_dpo_policy(root / name):
        raise LabError("holds something other than a DPO policy, which --name would replace", path=str(root / name),
                       fix=f"{fix}, or move that folder away first")
    _lora_rank_only_with_lora(cfg, profile)
    if not cfg.data and cfg.eval_fraction != DPOConfig.for_profile(profile).eval_fraction:
        raise LabError(f"--eval_fraction {cfg.eval_fraction} splits --data's prompts, and the reward stage's pairs "
                       "keep the split they were trained and held out with", fix="drop --eval_fraction, or give --data")


def _is_dpo_policy(path: Path) -> bool:
    """A folder `lab dpo` wrote (its metrics.json has `implicit_accuracy`), or dpo/ or dpo-sft/ as notebook 05 wrote
    them before `lab dpo` existed: a model saved alone, with no metrics or config of a stage beside it."""
    if not path.is_dir():
        return False
    if (path / "metrics.json").is_file():
        return bool(dpo_metrics(path))
    return (path.name in ("dpo", "dpo-sft") and (path / "config.json").is_file()
            and not any(f.is_dir() for f in path.iterdir())
            and not any((path / f).exists() for f in ("lab_config.json", "normalization.json", "adapter_config.json")))


# ------------------------------------------------------------------ reuse, like make

def _needed(stage: str, configs: dict) -> set[str]:
    """`stage` and, recursively, the upstream stages its config builds it from."""
    return {stage}.union(*(_needed(up, configs) for up in upstream(stage, configs[stage])))


def _drop_unused_tokenizer(root: Path) -> None:
    """After a pretraining on --data failed before any checkpoint (too little text, ...): the tokenizer just learned
    from that text goes too, so the next run learns one from the text it is then given. A run folder this left with
    nothing in it goes as well (no report of no stages)."""
    if ck.latest_checkpoint(root / "base-checkpoints") is None:
        shutil.rmtree(root / "tokenizer", ignore_errors=True)
        report = write_report(root)
        if not report["stages"] and set(report) == {"profile", "stages", "eval"} and not report["eval"]:
            (root / "report.json").unlink(missing_ok=True)
            if not any(root.iterdir()):
                root.rmdir()


def ensure(stage: str, profile: str | None = None, out=None, changes: dict[str, dict] | None = None,
           force: bool = False, say_reused: bool = False) -> Path:
    """Build `stage` and the stages it needs, in order, unless finished with the same config from the same upstream
    builds (see `stale_reason`; each build says why); return the run folder. For notebooks and `lab run`.

    `changes` ({stage: {field: value}}) are the flags a stage is asked for (the rest are the profile's values);
    `force` rebuilds every stage; `say_reused` also prints a line per reused stage."""
    profile, root = resolve_profile(profile), run_dir(profile, out)
    changes = dict(changes or {})
    pre = PretrainConfig.for_profile(profile, **changes.get("pretrain", {}))
    if not pre.model:  # pretraining on --data text: the tokenizer is learned from it
        changes["tokenizer"] = tokenizer_changes(pre) | changes.get("tokenizer", {})
    configs = {s: CONFIGS[s].for_profile(profile, **changes.get(s, {})).to_dict() for s in STAGES}
    builders = {"tokenizer": run_tokenizer, "pretrain": run_pretrain, "sft": run_sft, "reward": run_reward,
                "ppo": run_ppo}
    needed, built = _needed(stage, configs), set()
    if not force:  # before anything is rebuilt over them: a forgotten --profile must not cost the run
        try:
            check_profile(root, profile, needed)
        except LabError as err:
            raise LabError(err.message, path=err.path,
                           fix=f"{err.fix}; --force rebuilds every stage there for {profile}") from None
    for s in (s for s in STAGES if s in needed):
        if not is_done(root, s):
            print(f"[lab] {s}: no finished artifact in {root / STAGE_DIRS[s]}, building it now")
        else:
            why = stale_reason(root, s, configs[s], profile) or ("--force" if force else None)
            if why is None:
                if say_reused:
                    print(f"[lab] {s}: finished earlier, reusing {root / STAGE_DIRS[s]} (--force rebuilds)")
                continue
            print(f"[lab] {s}: {why}: rebuilding")
        # an interrupted pretraining or PPO run of the same settings and upstream builds is continued, not started
        # again
        resume = {"resume": "auto"} if s in ("pretrain", "ppo") and not force else {}
        try:
            builders[s](profile, root, **resume, **changes.get(s, {}))
        except LabError:
            if s == "pretrain" and pre.data and "tokenizer" in built:
                _drop_unused_tokenizer(root)
            raise
        built.add(s)
    return root


def ppo_prompts(cfg: PPOConfig, world, tokenizer, context: int | None = None) -> tuple[list[str], int]:
    """PPO's prompts, rendered with the Alpaca template: the world's tasks, or with --data a seeded sample of
    `n_prompts` of the file's distinct prompts. Prompts over `max_prompt_length` tokens are left out, and so are those
    that leave no room for `response_length` tokens in the policy's `context` (a model with learned positions has no
    row past it); returns the prompts and how many were left out."""
    from .preferences import load_prompts
    from .tokenizer import render_alpaca

    if cfg.data:
        pairs = load_prompts(cfg.data, cfg.data_split, tokenizer.all_special_tokens)
        random.Random(cfg.seed + 2).shuffle(pairs)
        rendered = [render_alpaca(instruction, text) for instruction, text in pairs]
    else:
        rendered = alpaca_prompts(world_records("ppo", world, cfg))
    lengths = [len(ids) for ids in tokenizer(rendered)["input_ids"]]  # as the rollout encodes them
    if context is not None and context - cfg.response_length < 1:
        raise LabError(f"--response_length {cfg.response_length} leaves no room for a prompt in the model's context "
                       f"of {context} positions", fix=f"give a --response_length well under {context}")
    limit = cfg.max_prompt_length if context is None else min(cfg.max_prompt_length, context - cfg.response_length)
    limit_is = (f"max_prompt_length={cfg.max_prompt_length} tokens" if limit == cfg.max_prompt_length else
                f"{limit} tokens, which leave room for --response_length {cfg.response_length} in the model's "
                f"context of {context}")
    kept = [p for p, n in zip(rendered, lengths) if n <= limit]
    if not kept:
        raise LabError(f"every prompt is longer than {limit_is} (the shortest has {min(lengths)})",
                       path=cfg.data or None,
                       fix="raise --max_prompt_length (within the model's context) or bring shorter prompts"
                           if limit == cfg.max_prompt_length else
                           "bring shorter prompts, lower --response_length, or pick a model with a longer context")
    if len(kept) < len(rendered):
        warnings.warn(f"{len(rendered) - len(kept)} of {len(rendered)} PPO prompts are longer than {limit_is} and "
                      "were left out", stacklevel=2)
    return (kept[: cfg.n_prompts] if cfg.data else kept), len(rendered) - len(kept)


def _warn_if_prompts_differ(cfg: PPOConfig, reward_dir: Path) -> None:
    """A reward model trained on a file's pairs has never scored answers to the world's tasks, and one trained on
    the world's tasks has never scored answers to a file's questions: say so when PPO's prompts are the other kind."""
    path = Path(reward_dir) / "metrics.json"
    recorded = (ck.read_json(path).get("config") or {}) if path.exists() else None
    trained_on = recorded.get("data", "") if recorded is not None else None
    if trained_on is None or bool(trained_on) == bool(cfg.data) or recorded.get("mix_previous"):  # mixed: both kinds
        return
    trained = f"the pairs of {trained_on}" if trained_on else "the world's tasks"
    optimised = f"the prompts of {cfg.data}" if cfg.data else "the world's tasks"
    fix = f"pass --data {trained_on} to optimise on its prompts" if trained_on else "train it on pairs for them"
    warnings.warn(f"the reward model was trained on {trained}, but PPO optimises on {optimised}: its scores there "
                  f"are untested ({fix})", stacklevel=3)
