"""`lab` — the command line. Each stage's flags come from its config dataclass (HfArgumentParser),
with the chosen profile's values as defaults:

    lab run [--profile tiny] [--out runs/tiny] [--force]      every stage in order (tokenizer, pretrain, sft,
                                                               reward, ppo, eval), reusing finished ones whose
                                                               config and upstream stages are unchanged
    lab tokenizer [--vocab_size N] [--data FILE_OR_HUB_ID]    the byte-level BPE (pretrain learns it if missing)
    lab pretrain [--resume] [--data FILE_OR_HUB_ID] [--model PATH_OR_HUB_ID] [--max_steps N] ...
    lab sft [--method qlora|lora|full] [--data ALPACA_JSON_OR_HUB_ID]  supervised fine-tuning
    lab reward [--data PAIRS_FILE_OR_HUB_ID [--mix_previous]] pairwise + ratings reward models; --mix_previous:
                                                               --data's pairs (e.g. votes.db) added to the last
                                                               reward model's, the loop's next round
    lab ppo [--resume] [--data PROMPTS_FILE_OR_HUB_ID] [--kl_coef B] [--no_adaptive_kl] [--iterations N]
                                                               RLHF with our PPO, then the harness
    lab dpo [--data PAIRS_FILE_OR_HUB_ID] [--loss sigmoid,sft] [--name dpo-sft]
                                                               DPO on the reward stage's pairs (no reward model),
                                                               saved beside the pipeline, then the harness
    lab eval [--models base,sft] [--model PATH_OR_HUB_ID [--name N]] [--split validation]
             [--data PROMPTS_FILE_OR_HUB_ID]
                                                               the harness on every model that exists (or on
                                                               another model); --split validation: on the
                                                               prompts settings are chosen on; with --data,
                                                               answers to your prompts scored by the reward model
    lab bench [--mixed_precision bf16|no] [--model M]          matmul peak, pretraining and PPO throughput
    lab app compare|arena [--host 127.0.0.1] [--port N] [--auth user:pass] [--share] [--models sft,rlhf]
                                                               Gradio apps: the checkpoints side by side,
                                                               or anonymous battles that collect votes
    lab votes export [--to FILE] | count                       the arena's votes as preference pairs (JSONL)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

from .config import (PROFILES, DPOConfig, EvalConfig, PPOConfig, PretrainConfig, RewardConfig, SFTConfig,
                     TokenizerConfig, resolve_profile)
from .errors import DISK_FULL, LabError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after a flag's help, unless the help already says its default, there is none to show
    (None or "": the help says what leaving the flag out does), or the flag is a --no_X switch (--X shows it)."""

    def _get_help_string(self, action):
        if ("default" in (action.help or "") or action.default is None or action.default == ""
                or any(s.startswith("--no_") for s in action.option_strings)):
            return action.help
        return super()._get_help_string(action)


def _parse(cmd: str, argv: list[str], configs: tuple = (), extra=None, doc: str = "", hide: tuple = ()):
    """Two passes: read --profile, then parse every flag with that profile's values as defaults. `hide`: config
    fields the command refuses, left out of --help (still parsed, so that the command can say why it refuses them)."""
    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--profile")
    profile = resolve_profile(pre.parse_known_args(argv)[0].profile)
    parser = HfArgumentParser(list(configs), prog=f"lab {cmd}", description=doc, formatter_class=_HelpFormatter)
    parser.add_argument("--profile", default=profile, choices=PROFILES,
                        help="tiny (2-core CPU), micro (smaller still: the unit tests') or full (hub models, for "
                             "a GPU); the defaults shown are the chosen profile's (default: $LAB_PROFILE if set, "
                             "else tiny)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<profile>)")
    for extra_arg in extra or []:
        parser.add_argument(*extra_arg[0], **extra_arg[1])
    flags = {a for action in parser._actions for a in action.option_strings}
    for cfg in configs:  # --no_X for every switch: HfArgumentParser adds it only where the field's default is True,
        for f in dataclasses.fields(cfg):  # but a profile may turn a switch on (bf16 on full)
            if f.type in (bool, "bool") and f"--no_{f.name}" not in flags:
                parser.add_argument(f"--no_{f.name}", action="store_false", dest=f.name)
    for action in parser._actions:  # HfArgumentParser gives its own --no_X the help of --X
        if action.option_strings and action.option_strings[0] == f"--no_{action.dest}":
            action.help = f"turn --{action.dest} off (the same as --{action.dest} false)"
        elif action.dest in hide:
            action.help = argparse.SUPPRESS
    for cfg in configs:
        parser.set_defaults(**cfg.for_profile(profile).to_dict())
    args = parser.parse_args(argv)
    if hasattr(args, "data_split") and cmd != "bench":  # given on the command line, in any spelling argparse takes?
        unset = object()
        parser.set_defaults(data_split=unset)
        given = parser.parse_args(argv).data_split is not unset
        _split_of_a_hub_dataset_only(args, given, without_data=cmd != "eval")  # lab eval says it with --data_limit
    changes = [{f.name: getattr(args, f.name) for f in dataclasses.fields(c)} for c in configs]
    return args, changes


def _split_of_a_hub_dataset_only(args, given: bool, without_data: bool = True) -> None:
    """--data_split picks a split of a hub dataset; a local file is read whole, so a split given with one, or with no
    --data at all, would otherwise be ignored without a word. `given`: whether the command line set it (in any
    spelling argparse takes: --data_split, --data-split, an abbreviation)."""
    from .data import _exists

    data = getattr(args, "data", None) or ""
    if not given:
        return
    if not data and without_data:
        raise LabError(f"--data_split {args.data_split} picks a split of the hub dataset given with --data, and no "
                       "--data was given", fix="drop --data_split, or give the dataset with --data OWNER/NAME")
    if not data:
        return
    if Path(data).suffix.lower() in (".txt", ".json", ".jsonl") or _exists(data):
        raise LabError(f"--data_split {args.data_split} picks a split of a hub dataset, but {data} is a local file, "
                       "which is read whole", fix="drop --data_split, or keep each split in a file of its own "
                       "(`lab reward --data` also reads a record's own \"split\": \"train\" or \"eval\")")


RESUME = (("--resume",), {"action": "store_true", "help": "continue from the last checkpoint"})


def cmd_tokenizer(argv):
    from .stages import run_tokenizer
    args, (tok,) = _parse("tokenizer", argv, (TokenizerConfig,), doc="train the byte-level BPE")
    m = run_tokenizer(args.profile, args.out, **tok)
    print(f"[lab] tokenizer: vocab_size={m['vocab_size']} chars_per_token_en={m['chars_per_token_en']} "
          f"chars_per_token_zh={m['chars_per_token_zh']} wall_s={m['wall_s']}")


def cmd_pretrain(argv):
    from .stages import run_pretrain
    args, (cfg,) = _parse("pretrain", argv, (PretrainConfig,), doc="pretrain the base model", extra=[RESUME])
    m = run_pretrain(args.profile, args.out, resume=args.resume, **cfg)
    if m.get("main_process", True):  # under torchrun / accelerate launch, one line from the main process
        print(f"[lab] pretrain: val_loss={m['val_loss']} fact_accuracy={m['fact_accuracy']} "
              f"tokens_per_s={m['tokens_per_s']} wall_s={m['wall_s']}")


def cmd_sft(argv):
    from .stages import run_eval, run_sft
    args, (cfg,) = _parse("sft", argv, (SFTConfig,), doc="supervised fine-tuning (QLoRA by default)")
    m = run_sft(args.profile, args.out, **cfg)
    print(f"[lab] sft ({m['method']}): trainable_params={m['trainable_params']} final_loss={m['final_loss']} "
          f"wall_s={m['wall_s']}")
    if not cfg["data"]:  # the task harness grades the world's tasks; user data has no checkers
        # from another --model, the run's own base model is not the one this SFT model started from
        other = _started_elsewhere(args, cfg["model"], "base")
        _print_eval(run_eval(args.profile, args.out, models=("sft",) if other else ("base", "sft")))
        if other:
            print(f"[lab] sft: started from {cfg['model']}; `{_eval_beside(args, cfg['model'])}` evaluates it beside "
                  "sft")


def cmd_reward(argv):
    from .stages import run_reward
    args, (cfg,) = _parse("reward", argv, (RewardConfig,), doc="train the pairwise and the ratings reward model")
    m = run_reward(args.profile, args.out, **cfg)
    print(f"[lab] reward: pairwise_accuracy={m['pairwise_accuracy']} "
          f"ratings_model_pairwise_accuracy={m['ratings_model_pairwise_accuracy']} "
          f"n_train_pairs={m['n_train_pairs']} n_eval_pairs={m['n_eval_pairs']} wall_s={m['wall_s']}")


def cmd_ppo(argv):
    from .stages import run_eval, run_ppo
    args, (cfg,) = _parse("ppo", argv, (PPOConfig,), doc="RLHF: optimise the SFT model against the reward model",
                          extra=[RESUME])
    m = run_ppo(args.profile, args.out, resume=args.resume, **cfg)
    if not m.get("main_process", True):  # under torchrun / accelerate launch the main process evaluates and reports
        return
    print(f"[lab] ppo: {m['n_prompts']} prompts ({m['data']})  reward {m['reward_start']} -> {m['reward_end']}  "
          f"kl_end={m['kl_end']}  episodes_per_s={m['episodes_per_s']}  wall_s={m['wall_s']}")
    if _started_elsewhere(args, cfg["model"], "sft"):  # the run's SFT model is no baseline to report it against
        _print_eval(run_eval(args.profile, args.out, models=("rlhf",)))
        print(f"[lab] ppo: started from {cfg['model']}, not this run's SFT model: `{_eval_beside(args, cfg['model'])}` "
              "evaluates it beside rlhf (the report's win_rate_vs_sft is against the run's SFT model)")
        return
    r = run_eval(args.profile, args.out, models=("sft", "rlhf"))
    _print_eval(r)
    print(f"[lab] rlhf vs sft (annotator, ties excluded): win_rate={r['rlhf'].get('win_rate_vs_sft')}")


def cmd_dpo(argv):
    from . import checkpoints as ck
    from .stages import is_done, run_dir, run_dpo, run_eval
    args, (cfg,) = _parse("dpo", argv, (DPOConfig,), doc="DPO: fine-tune the SFT model on preference pairs directly, "
                                                          "without a reward model (TRL's DPOTrainer)", extra=[
        (("--name",), {"default": "dpo", "help": "the policy's folder in the run, and its name in the evaluation"})])
    m = run_dpo(args.profile, args.out, name=args.name, **cfg)
    root = run_dir(args.profile, args.out)
    print(f"[lab] dpo: {m['n_train_pairs']} training pairs ({m['data']}), train_s={m['train_s']}; held out: "
          f"implicit_accuracy={m['implicit_accuracy']} on {m['n_eval_pairs']} pairs, eval_loss="
          f"{m['eval_loss'] and round(m['eval_loss'], 4)} on the {m['n_eval_loss_pairs']} whose answers both ended "
          f"-> {root / args.name}")
    reward_cfg = {} if cfg["data"] else ck.read_json(root / "reward" / "metrics.json").get("config") or {}
    # a file's pairs (a reward stage that mixed a file's pairs into the world's counts as the world's)
    pairs_from = cfg["data"] or ("" if reward_cfg.get("mix_previous") else reward_cfg.get("data"))
    if pairs_from:  # the harness grades the world's tasks, which say little about a policy trained on a file's pairs
        split = cfg["data_split"] if cfg["data"] else reward_cfg.get("data_split", "train")
        data = f" --data {_q(pairs_from)}" + (f" --data_split {_q(split)}" if split != "train" else "")
        evaluate = f"lab eval{_same_run(args)} --model {_q(root / args.name)}{data}"
        if not is_done(root, "reward"):  # `lab eval --data` scores the answers with the run's reward model
            start = f" --model {_q(cfg['model'])}" if cfg["model"] else ""
            print(f"[lab] evaluate it on your prompts: `lab reward{_same_run(args)}{start}{data}` trains the reward "
                  f"model that scores the answers, then `{evaluate}`")
        else:
            print(f"[lab] evaluate it on your prompts: {evaluate}")
        return
    r = run_eval(args.profile, args.out, model=str(root / args.name), name=args.name)
    _print_eval(r)
    if _started_elsewhere(args, cfg["model"], "sft"):  # the run's SFT model is no baseline to report it against
        print(f"[lab] dpo: started from {cfg['model']}, not this run's SFT model: `{_eval_beside(args, cfg['model'])}` "
              f"evaluates it beside {args.name} (the report's win_rate_vs_sft is against the run's SFT model)")
        return
    print(f"[lab] {args.name} vs sft (annotator, ties excluded): win_rate={r[args.name].get('win_rate_vs_sft')}")


def _same_run(args, root: Path | None = None) -> str:
    """The flags that name this run again, for a command printed as the next step: without them it would read
    runs/tiny (or $LAB_PROFILE's folder), another run. With `root` (`lab votes`, which checks no profile), the profile
    its SFT model was built for and always the folder: runs/tiny may hold a run built with --profile micro."""
    profile = resolve_profile(args.profile)
    if root is not None and (root / "sft" / "metrics.json").is_file():
        from . import checkpoints as ck
        profile = ck.read_json(root / "sft" / "metrics.json").get("profile") or profile
    from .runs import run_flags
    return run_flags(profile, args.out or root)


def _started_elsewhere(args, model: str, own: str) -> bool:
    """Whether --model names a model other than the run's own `own` folder (base for SFT, sft for PPO and DPO)."""
    from .stages import run_dir
    return bool(model) and Path(model).resolve() != (run_dir(args.profile, args.out) / own).resolve()


def _eval_beside(args, model: str) -> str:
    """The `lab eval` that evaluates the model a stage started from beside the run's: named `start-<folder>` when its
    folder's name is one of the run's own models' (runs/other/sft), which `lab eval --model` refuses as a name."""
    from .harness import default_name
    from .runs import MODEL_DIRS
    name = default_name(model).casefold()
    return f"lab eval{_same_run(args)} --model {_q(model)}" + (f" --name start-{name}" if name in MODEL_DIRS else "")


def _q(path) -> str:
    """A path as a shell reads it back in a printed command (spaces quoted)."""
    return shlex.quote(str(path))


def _print_eval(results: dict) -> None:
    for name, r in results.items():
        print(f"[lab] eval {name}: task_accuracy={r['task_accuracy']} heldout_entity_accuracy="
              f"{r['heldout_entity_accuracy']} language_match={r['language_match']}")


def cmd_eval(argv):
    from .runs import EVAL_SPLITS
    from .stages import refuse_unused, run_dir, run_eval, run_eval_data, stage_table, write_report
    args, (cfg,) = _parse("eval", argv, (EvalConfig,), doc="evaluate every model that exists, or another one", extra=[
        (("--models",), {"default": None, "help": "comma-separated subset of the run's models: base,sft,rlhf "
                                                  "(default: every one that exists; none with --model)"}),
        (("--model",), {"default": "", "help": "another model to evaluate: a folder written by save_pretrained or a "
                                              "hub id (only it, unless --models names the run's too)"}),
        (("--name",), {"default": "", "help": "the report's name for --model; empty: its folder's name"}),
        (("--split",), {"default": "test", "choices": tuple(EVAL_SPLITS),
                        "help": "test: the evaluation prompts every target is measured on; validation: prompts "
                                "apart from them, to choose settings on (eval/validation/)"}),
        (("--data",), {"default": "", "help": "your prompts instead of the world's tasks (any file `lab ppo --data` "
                                             "reads): the reward model scores the answers"}),
        (("--data_split",), {"default": None, "help": "split of a hub dataset given with --data (default: train)"}),
        (("--data_limit",), {"type": int, "default": None, "help": "with --data: its first N distinct prompts "
                                                                    "(default: 200)"})])
    data_flags = {k: v for k, v in (("data_split", args.data_split), ("data_limit", args.data_limit)) if v is not None}
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    if args.data and args.split != "test":
        raise LabError("--split chooses among the world's task prompts, and --data brings prompts of its own",
                       fix="drop --split validation, or --data")
    eval_cfg = EvalConfig.for_profile(args.profile, **cfg)
    if args.split != "validation" and not args.data:
        refuse_unused(eval_cfg, args.profile, ("n_validation_per_task",),
                      "it sizes the validation prompts, and this evaluation is on the test prompts",
                      "add --split validation, or drop FLAGS")
    if args.data:
        refuse_unused(eval_cfg, args.profile, ("n_per_task", "n_validation_per_task"),
                      "they count the world's task prompts, and --data brings prompts of its own",
                      "drop FLAGS (--data_limit keeps the first N of --data's prompts)")
    if data_flags and not args.data:
        given = " and ".join(f"--{k}" for k in data_flags)
        raise LabError(f"{given} only apply to prompts brought with --data",
                       fix=f"add --data FILE_OR_HUB_ID, or drop {given}")
    if not args.data:
        run_eval(args.profile, args.out, models, model=args.model, name=args.name, split=args.split, **cfg)
        print(stage_table(write_report(run_dir(args.profile, args.out))))
        return
    r = run_eval_data(args.data, args.profile, args.out, models, model=args.model, name=args.name,
                      **data_flags, **cfg)
    print(f"[lab] eval on {r['n_prompts']} prompts of {r['data']}, scored by the reward model "
          f"({r['n_left_out']} left out on the way as too long for the models)")
    for name, m in r["models"].items():
        vs = f"  reward_win_rate_vs_sft={m['reward_win_rate_vs_sft']}" if "reward_win_rate_vs_sft" in m else ""
        kept = " (answered by an earlier lab eval --data)" if name in r.get("kept", ()) else ""
        print(f"[lab] eval {name}: mean_reward={m['mean_reward']} ended_rate={m['ended_rate']} "
              f"mean_chars={m['mean_chars']}{vs}{kept}")
    from .harness import data_eval_path
    split = {"split": args.data_split} if args.data_split else {}
    print(f"[lab] every answer and its reward: {data_eval_path(run_dir(args.profile, args.out), args.data, **split)}")


def cmd_run(argv):
    from . import stages as S
    args, (cfg, ev) = _parse("run", argv, (PretrainConfig, EvalConfig), doc="run every stage in order",
                             extra=[(("--force",), {"action": "store_true", "help": "rebuild finished stages"})],
                             hide=("n_validation_per_task",))  # refused below
    S.refuse_unused(EvalConfig.for_profile(args.profile, **ev), args.profile, ("n_validation_per_task",),
                    "lab run evaluates on the test prompts",
                    "drop FLAGS, and run `lab eval --split validation --n_validation_per_task N` after it")
    root, t0 = S.run_dir(args.profile, args.out), time.perf_counter()
    # like make: a finished stage is reused only with the same config and upstream builds (a hub --model brings
    # its own tokenizer, so then none is trained); the pretraining flags go to pretrain, the others keep the profile
    S.ensure("ppo", args.profile, root, changes={"pretrain": cfg}, force=args.force, say_reused=True)
    S.run_eval(args.profile, root, **ev)
    print(S.stage_table(S.write_report(root)))
    print(f"[lab] done in {time.perf_counter() - t0:.0f}s; report: {root / 'report.json'}")


def cmd_bench(argv):
    from transformers import AutoTokenizer

    from .bench import run_bench
    from .modeling import load_tokenizer, with_distinct_pad
    from .stages import SHAPE, refuse_unused
    args, (cfg,) = _parse("bench", argv, (PretrainConfig,), doc="measure matmul peak, training and PPO throughput",
                          extra=[(("--bench_steps",), {"type": int, "default": 20, "help": "timed training steps"})],
                          hide=("data", "data_split", "eval_every", "eval_batches", "save_every", "max_steps",
                                "lr", "min_lr_ratio", "warmup_steps"))  # refused below
    from .stages import run_dir

    if args.bench_steps < 1:
        raise LabError(f"--bench_steps is {args.bench_steps}", fix="give 1 or more timed steps")
    if cfg["data"] != PretrainConfig.for_profile(args.profile).data:  # the step is timed on random tokens: --data
        # would change nothing, and saying so beats ignoring it (profile full names a dataset by default: not asked)
        raise LabError("lab bench times the training step on random tokens: --data is not used",
                       fix="leave --data out (--model, or the size flags without it, do apply)")
    bench_cfg = PretrainConfig.for_profile(args.profile, **cfg)
    refuse_unused(bench_cfg, args.profile, ("data_split", "eval_every", "eval_batches", "save_every"),
                  f"lab bench times {args.bench_steps} training steps on random tokens, with no evaluation or "
                  "checkpoint",
                  "drop FLAGS")
    refuse_unused(bench_cfg, args.profile, ("max_steps", "lr", "min_lr_ratio", "warmup_steps"),
                  "a step's speed does not depend on the run's length or its learning rate",
                  "drop FLAGS (--bench_steps sets how many steps are timed)")
    if cfg["model"]:
        refuse_unused(bench_cfg, args.profile, SHAPE, f"they shape a fresh Llama, and --model {cfg['model']} brings "
                      "its own", "drop FLAGS, or pass --model '' to time a fresh Llama of that shape")
        tokenizer = load_tokenizer(cfg["model"])  # with a PAD of its own, as `lab ppo` gives it
        with_distinct_pad(tokenizer)
        vocab = len(tokenizer)
    else:
        tok_dir = run_dir(args.profile, args.out) / "tokenizer"  # the real vocabulary when it exists
        tokenizer = AutoTokenizer.from_pretrained(tok_dir) if (tok_dir / "tokenizer.json").exists() else None
        vocab = len(tokenizer) if tokenizer else TokenizerConfig.for_profile(args.profile).vocab_size
        if tokenizer is None:
            print(f"[lab] no tokenizer in {tok_dir}: PPO throughput is measured once "
                  f"`lab tokenizer{_same_run(args)}` has run")
    ppo = PPOConfig.for_profile(args.profile, mixed_precision=cfg["mixed_precision"])  # one precision for both
    if cfg["mixed_precision"] == "fp16" and tokenizer is not None:  # said now, not after minutes of timing
        print("[lab] PPO trains in bf16 or float32, not fp16: its throughput is measured with --mixed_precision bf16 "
              "or no")
        ppo = None
    run_bench(bench_cfg, args.bench_steps, vocab, ppo, tokenizer, profile=resolve_profile(args.profile))



def cmd_app(argv):
    args, _ = _parse("app", argv, doc="serve a Gradio app over the models of the run folder", extra=[
        (("app",), {"choices": ("compare", "arena"),
                    "help": "compare: every checkpoint side by side; arena: anonymous battles that collect votes"}),
        (("--host",), {"default": "127.0.0.1", "help": "address to listen on (0.0.0.0 opens the app to the network)"}),
        (("--port",), {"type": int, "default": None, "help": "port; when not given, the first free one from 7860"}),
        (("--auth",), {"default": None, "help": "user:password[,user2:password2]; or set $LAB_APP_AUTH, "
                                                 "which other users cannot read with `ps` (default: no login)"}),
        (("--share",), {"action": "store_true", "help": "also open a public gradio.live link (off by default)"}),
        (("--models",), {"default": None, "help": "arena: the models that fight, comma-separated (default: sft,rlhf "
                                                  "when both exist, else every fine-tuned model)"})])
    from .stages import run_dir

    root = run_dir(args.profile, args.out)
    if args.port is not None and not 1 <= args.port <= 65535:
        raise LabError(f"--port {args.port} is not a port", fix="pass a number from 1 to 65535 (or leave it out)")
    if args.app == "compare" and args.models:
        raise LabError("--models picks the arena's contestants", where="lab app compare",
                       fix="leave it out: the compare app offers every finished model, ticked on its page")
    if args.app == "compare":
        from apps import compare
        compare.main(root, args.host, args.port, args.auth, args.share)
    else:
        from apps import arena
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        arena.main(root, args.profile, args.host, args.port, args.auth, args.share, models)


def cmd_votes(argv):
    from . import votes
    from .stages import _special_tokens, is_done, run_dir

    args, _ = _parse("votes", argv, doc="the arena's votes: export them as preference pairs, or count them", extra=[
        (("action",), {"choices": ("export", "count")}),
        (("--to",), {"default": None, "help": "JSONL file to write (default: <run folder>/votes.jsonl)"})])
    db = votes.db_path(run_dir(args.profile, args.out))
    if args.action == "count" and args.to:
        raise LabError("--to names the file `lab votes export` writes", where="lab votes count",
                       fix="drop --to, or run `lab votes export --to FILE`")
    if args.action == "count":
        print(f"[lab] votes in {db}: " + " ".join(f"{c}={n}" for c, n in votes.count(db).items())
              + f" (rated answers: {len(votes.ratings(db))})")
        return
    out, run = args.to or db.with_suffix(".jsonl"), _same_run(args, db.parent)
    sft = (db.parent / "sft").resolve()  # the tokenizer `lab reward` trains with; a path, never read as a hub id
    n = votes.export_pairs(db, out, _special_tokens(sft) if sft.is_dir() else [])
    n_rated = len(votes.ratings(db))
    print(f"[lab] votes: {n} preference pairs -> {out} (ties and both-bad votes stay in {db}); "
          f"train on them with `lab reward{run} --data {_q(out)}`"
          + (f", or with `lab reward{run} --data {_q(db)}` to train the ratings model on its {n_rated} rated answers "
             "too" if n_rated else "")
          + (f". {'Either trains' if n_rated else 'That trains'} the run's next reward model on the votes alone; "
             f"`lab reward{run} --data {_q(db)} --mix_previous` keeps the pairs its reward model was trained on too "
             "(copy the run first to keep round 1)" if is_done(db.parent, "reward")
             and (db.parent / "reward" / "pairs.jsonl").is_file() else ""))


COMMANDS = {"run": cmd_run, "tokenizer": cmd_tokenizer, "pretrain": cmd_pretrain, "sft": cmd_sft,
            "reward": cmd_reward, "ppo": cmd_ppo, "dpo": cmd_dpo, "eval": cmd_eval, "bench": cmd_bench, "app": cmd_app,
            "votes": cmd_votes}


DISK_FULL_FIX = ("Fix: free space on that disk (or pass an --out on another one) and run the command again; what "
                 "was being written was left out, not half-written")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; use one of: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    from safetensors import SafetensorError

    try:
        from transformers.utils import logging as hf_logging  # seconds on a cold disk: a Ctrl-C then is one line too

        hf_logging.disable_progress_bar()  # the lab's own bars stay; per-file loading bars are noise here
        with warnings_as_lines():
            COMMANDS[argv[0]](argv[1:])
    except KeyboardInterrupt:  # what is finished stays: every artifact is written to a temporary path, then renamed
        print(f"\n{after_interrupt(argv)}", file=sys.stderr)
        return 130
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder the lab may not read or write (--out, --to): one line, not a traceback
        if err.errno in DISK_FULL:
            print(f"error: {err.filename or 'writing the run'}: {err.strerror}. {DISK_FULL_FIX}", file=sys.stderr)
            return 2
        if err.filename is None:
            raise
        print(f"error: {err.filename}: {err.strerror}. Fix: check that the path exists and that you may read and "
              "write there (or pass another --out / --to)", file=sys.stderr)
        return 2
    except SafetensorError as err:  # safetensors reports a failed write as its own error: "... (os error 28)"
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None or int(code.group(1)) not in DISK_FULL:
            raise
        print(f"error: writing weights: {os.strerror(int(code.group(1)))}. {DISK_FULL_FIX}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group()
    return 0


def after_interrupt(argv: list[str]) -> str:
    """What an interrupted command leaves, and the command that goes on from there: the one typed, with its flags
    (without them, `lab pretrain --resume` started another run, of profile tiny, in runs/tiny)."""
    shown = []  # as typed, but a password never lands in a log
    for before, a in zip([None, *argv], argv):
        shown.append("..." if before == "--auth" else "--auth=..." if a.startswith("--auth=") else a)
    again = "lab " + shlex.join(shown)
    if argv[:1] == ["app"]:
        return f"stopped; `{again}` serves it again" + (" (the votes cast are in the run's votes.db)"
                                                         if argv[1:2] == ["arena"] else "")
    kept = "interrupted: finished stages and checkpoints are kept"
    if argv[0] in ("pretrain", "ppo"):
        return f"{kept}; `{again if '--resume' in argv else again + ' --resume'}` continues from the last checkpoint"
    if argv[0] == "run":  # without --force: the stages it finished are reused, an interrupted one continued
        again = "lab " + shlex.join(a for a in shown if a != "--force")
        return f"{kept}; `{again}` reuses them and continues an interrupted pretraining or PPO run"
    return f"{kept}; `{again}` runs the command again"


def _leave_process_group() -> None:
    """Under torchrun / accelerate launch, leave the process group before the process exits, as PyTorch asks: a
    process that exits with gloo's threads still running may abort at exit ("terminate called without an active
    exception", seen once in CI on the non-main process of `lab ppo` under torchrun). Nothing when torch was never
    imported or no group was formed."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def warnings_as_lines():
    """The lab's own warnings as one line each ("[lab] warning: ..."), not Python's "file.py:103: UserWarning"
    followed by a line of source; other libraries' warnings keep their form, which says where they come from."""
    package = Path(__file__).resolve().parent
    form = warnings.formatwarning  # only how a shown warning reads: a recorded one (pytest.warns) stays as it was

    def one_line(message, category, filename, lineno, line=None):
        if Path(filename).resolve().is_relative_to(package):
            return f"[lab] warning: {message}\n"
        return form(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = form


if __name__ == "__main__":
    sys.exit(main())
