"""`lab pretrain` end to end on real text nobody on the team wrote (skipped when the sample is absent)."""

from __future__ import annotations

import sys

import pytest
from transformers import AutoTokenizer

from lab_utils import checkpoints as ck
from lab_utils.cli import main
from lab_utils.config import PretrainConfig
from lab_utils.data import load_texts
from lab_utils.tokenizer import chars_per_token


def test_pretrain_on_real_text(wiki_demo, tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--profile", "micro", "--data", str(wiki_demo), "--max_steps", "3",
                 "--out", str(out)]) == 0
    assert (out / "base" / "model.safetensors").is_file()
    metrics = ck.read_json(out / "report.json")["stages"]["pretrain"]
    assert metrics["fact_accuracy"] is None  # world facts say nothing about a model trained on Wikipedia
    cfg = PretrainConfig.for_profile("micro")
    assert metrics["steps"] == 3 and metrics["train_tokens"] == 3 * cfg.batch_size * cfg.seq_len
    saved = ck.read_json(out / "base" / "lab_config.json")["pretrain"]
    assert saved["data"] == str(wiki_demo) and saved["max_steps"] == 3


def test_pretraining_on_real_text_learns_its_tokenizer_from_it(wiki_demo, tokenizer, tmp_path, capsys):
    """With no tokenizer yet, `lab pretrain --data` learns the merges from that text: the world corpus's merges pack
    Wikipedia poorly. With one learned from other text, it says so and how to learn one from this text."""
    out = tmp_path / "run"
    assert main(["pretrain", "--profile", "micro", "--data", str(wiki_demo), "--max_steps", "1",
                 "--out", str(out)]) == 0
    assert f"training it first, on {wiki_demo}" in capsys.readouterr().out
    m = ck.read_json(out / "tokenizer" / "metrics.json")
    assert m["config"]["data"] == str(wiki_demo) and m["chars_per_token_zh"] is None  # no Chinese document
    held_out = load_texts(str(wiki_demo))[-1:]  # the document the merges were not learned from
    assert m["chars_per_token_en"] == round(chars_per_token(AutoTokenizer.from_pretrained(out / "tokenizer"),
                                                            held_out), 3)
    assert m["chars_per_token_en"] > 1.2 * chars_per_token(tokenizer, held_out)  # the world tokenizer, same size
    assert main(["pretrain", "--profile", "micro", "--max_steps", "1", "--out", str(out)]) == 0
    assert (f"was learned from {wiki_demo}, not from the world corpus; `lab tokenizer --profile micro --out {out}` "
            "learns one from this text" in capsys.readouterr().out)  # the run's flags: pasted, it acts on this run
    assert ck.read_json(out / "tokenizer" / "metrics.json")["config"]["data"] == str(wiki_demo)  # not replaced


def test_a_pretraining_that_fails_on_its_data_leaves_no_tokenizer_learned_from_it(wiki_demo, tmp_path, capsys):
    """Too little text fails after the tokenizer was learned from it: that tokenizer goes too, so the next run learns
    one from the text it is given, and the run folder it leaves empty goes with it (no report of no stages). A
    tokenizer learned from an earlier version of the same file is kept, and said."""
    out, data = tmp_path / "run", tmp_path / "notes.txt"
    data.write_text("Two short lines.\nThat is all.\n", encoding="utf-8")
    args = ["pretrain", "--profile", "micro", "--data", str(data), "--max_steps", "1", "--out", str(out)]
    assert main(args) == 2
    assert "fewer than one sequence" in capsys.readouterr().err and not out.exists()
    assert main(["run", *args[1:]]) == 2  # `lab run` learns the tokenizer as a stage of its own: the same goes
    assert "fewer than one sequence" in capsys.readouterr().err and not out.exists()
    out.mkdir()  # a folder that holds something of the user's stays, and only the stub report goes
    (out / "mine.txt").write_text("keep me")
    assert main(args) == 2
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    capsys.readouterr()
    data.write_text(wiki_demo.read_text(encoding="utf-8"), encoding="utf-8")  # the same name, enough text now
    assert main(args) == 0
    assert f"training it first, on {data}" in capsys.readouterr().out
    data.write_text(wiki_demo.read_text(encoding="utf-8") + "One more line.\n", encoding="utf-8")
    assert main(args) == 0
    assert f"was learned from an earlier version of {data} (the file changed since)" in capsys.readouterr().out


def test_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "lab pretrain" in capsys.readouterr().out
    assert main(["pretrian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown command 'pretrian'")


def test_an_out_that_is_a_file_and_a_port_out_of_range_are_one_clear_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["tokenizer", "--profile", "micro", "--out", str(afile)],
                 ["sft", "--profile", "micro", "--out", str(afile)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {afile}: is a file, not a run folder. Fix: pass a folder with --out (new or a run's)."]
    assert main(["app", "compare", "--profile", "micro", "--out", str(tmp_path), "--port", "99999"]) == 2
    assert capsys.readouterr().err.startswith("error: --port 99999 is not a port")
    assert main(["bench", "--profile", "micro", "--out", str(tmp_path), "--data", "/nonexistent.txt"]) == 2
    assert capsys.readouterr().err.startswith("error: lab bench times the training step on random tokens")


def test_bench_in_fp16_leaves_ppo_out_before_it_measures(tok_root, capsys, monkeypatch):
    """PPO trains in bf16 or float32: `lab bench --mixed_precision fp16` timed the matmuls and pretraining for minutes,
    then stopped at PPO's refusal of fp16 without printing any of it."""
    from lab_utils import bench

    monkeypatch.setattr(bench, "matmul_flops", lambda dtype=None, **_: 1e9)
    monkeypatch.setattr(bench, "pretrain_throughput", lambda cfg, steps, vocab: {
        "tokens_per_s": 100.0, "flops_per_s": 5e8, "params": 1, "mixed_precision": cfg.mixed_precision})
    assert main(["bench", "--profile", "micro", "--out", str(tok_root), "--mixed_precision", "fp16",
                 "--bench_steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "PPO trains in bf16 or float32, not fp16" in out and "pretrain_tokens_per_s" in out
    assert "ppo_episodes_per_s" not in out


def test_a_file_the_lab_may_not_read_or_a_place_it_may_not_write_is_one_clear_error(tmp_path, capsys, monkeypatch):
    """A --data file without read permission (root ignores chmod, so the read is made to fail), or a --to inside a
    file: one line naming the path and the fix, exit 2, not a traceback."""
    from pathlib import Path

    from lab_utils import votes

    data = tmp_path / "corpus.txt"
    data.write_text("One document.\nAnother one.\n")
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self, *a, **k: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(self))) if self == data else real(self, *a, **k))
    assert main(["tokenizer", "--profile", "micro", "--out", str(tmp_path / "run"), "--data", str(data)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {data}: cannot read this file (Permission denied). Fix: check its permissions, or copy it somewhere "
        "readable."]
    monkeypatch.undo()
    votes.record_vote(votes.init(tmp_path / "run" / votes.DB_NAME), "v1", "Say hi.", "Hi.", "No.", "sft", "rlhf", "a")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["votes", "export", "--profile", "micro", "--out", str(tmp_path / "run"),
                 "--to", str(afile / "votes.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {afile / 'votes.jsonl'}: cannot write the export (File exists). Fix: name a .jsonl file "
                   "in a folder you may write to with --to."]


@pytest.mark.parametrize("argv, said", [
    (["sft", "--method", "full", "--lora_r", "4", "--lr", "0.1"], "--lr --lora_r would be ignored: they set the LoRA"),
    (["sft", "--full_lr", "0.1"], "--full_lr would be ignored: it is --method full's learning rate"),
    (["reward", "--lora_r", "4"], "--lora_r would be ignored: it is the LoRA rank, and --lora is off"),
    (["dpo", "--lora_r", "4"], "--lora_r would be ignored: it is the LoRA rank"),
    (["ppo", "--lora_r", "4"], "--lora_r would be ignored: it is the LoRA rank"),
    (["ppo", "--no_adaptive_kl", "--kl_target", "2", "--no_kl_floor"],
     "--kl_target --no_kl_floor would be ignored: they steer the adaptive KL controller"),
    (["bench", "--eval_every", "5", "--data_split", "test"],
     "--data_split --eval_every would be ignored: lab bench times 20 training steps on random tokens"),
    (["bench", "--model", "MICRO_BASE", "--n_layers", "7"], "--n_layers would be ignored: they shape a fresh Llama"),
    (["bench", "--max_steps", "1", "--lr", "0.1"], "--max_steps --lr would be ignored: a step's speed does not depend"),
    (["pretrain", "--model", "MICRO_BASE", "--d_model", "128"], "--d_model would be ignored: they shape a fresh"),
    (["eval", "--n_validation_per_task", "8"], "--n_validation_per_task would be ignored: it sizes the validation"),
    (["eval", "--data", "prompts.jsonl", "--n_per_task", "3"], "--n_per_task would be ignored: they count the world"),
    (["run", "--n_validation_per_task", "8"], "--n_validation_per_task would be ignored: lab run evaluates on"),
    (["votes", "count", "--to", "v.jsonl"], "lab votes count: --to names the file `lab votes export` writes"),
])
def test_a_flag_the_command_would_ignore_is_one_clear_error_before_any_work(argv, said, micro_run, tmp_path, capsys):
    """A flag that changes nothing in what the command does is said, not ignored: the user meant something by it."""
    argv = [str(micro_run / "base") if a == "MICRO_BASE" else str(tmp_path / a) if a.endswith(".jsonl") else a
            for a in argv]
    out = tmp_path / "run"
    assert main([*argv, "--profile", "micro", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and "Fix:" in err[0], err
    assert not out.exists() or not any(out.iterdir())  # nothing was built


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import lab_utils.cli as cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "votes", interrupted)
    assert main(["votes", "count"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: finished stages and checkpoints are kept")


def test_after_ctrl_c_the_command_to_go_on_keeps_the_runs_flags(monkeypatch, capsys):
    """The hint after Ctrl-C said `lab pretrain --resume` whatever was run: typed as printed after `lab pretrain
    --profile micro --out runs/p`, it started another run, of profile tiny, in runs/tiny."""
    import lab_utils.cli as cli

    def interrupted(argv):
        raise KeyboardInterrupt

    for command in ("pretrain", "ppo", "run", "sft", "app"):
        monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    said = {}
    for argv in (["pretrain", "--profile", "micro", "--out", "runs/my run"], ["ppo", "--out", "r", "--resume"],
                 ["run", "--force", "--profile", "micro"], ["sft", "--profile", "micro", "--out", "r"],
                 ["app", "arena", "--auth", "alice:s3cret", "--auth=bob:pw"]):
        assert main(argv) == 130
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        said[argv[0]] = err[0]
    assert "`lab pretrain --profile micro --out 'runs/my run' --resume` continues from the last checkpoint" in said[
        "pretrain"]
    assert "`lab ppo --out r --resume` continues" in said["ppo"]  # --resume once
    assert "`lab run --profile micro` reuses them" in said["run"]  # --force would rebuild what it had finished
    assert "`lab app arena --auth ... --auth=...` serves it again" in said["app"]  # no password in a log
    assert "`lab sft --profile micro --out r` runs the command again" in said["sft"] and "resume" not in said["sft"]


def test_ctrl_c_while_transformers_loads_is_one_line(monkeypatch, capsys):
    """`lab` imports transformers before the command runs (seconds on a cold disk): a Ctrl-C then printed a
    30-line traceback."""
    import builtins

    real_import = builtins.__import__

    def slow_import(name, *args, **kwargs):
        if name == "transformers.utils":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", slow_import)
    try:
        assert main(["eval", "--profile", "micro"]) == 130
    except KeyboardInterrupt:  # out of main: the traceback (caught, or it would stop pytest)
        pytest.fail("Ctrl-C while transformers loads left main as a KeyboardInterrupt")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted:")


def test_the_labs_warnings_read_as_one_line_and_others_keep_their_form(monkeypatch, capsys):
    import warnings

    import lab_utils.cli as cli
    import lab_utils.stages

    def warns(argv):  # as a stage warns (from a file of the package), and as a library does
        warnings.warn_explicit("3 of 9 records left out", UserWarning, lab_utils.stages.__file__, 112)
        warnings.warn_explicit("deprecated", FutureWarning, warnings.__file__, 7)

    monkeypatch.setitem(cli.COMMANDS, "votes", warns)
    before = warnings.formatwarning
    with warnings.catch_warnings():  # shown as on a terminal, through formatwarning (pytest otherwise records them)
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        assert main(["votes", "count"]) == 0
    err = capsys.readouterr().err
    assert "[lab] warning: 3 of 9 records left out\n" in err and "UserWarning" not in err
    assert "FutureWarning: deprecated" in err  # another library's warning keeps its file:line form
    assert warnings.formatwarning is before  # put back


def test_eval_of_an_unknown_model_is_one_clear_error(tmp_path, capsys):
    assert main(["eval", "--profile", "micro", "--out", str(tmp_path), "--models", "sft,foo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'foo'") and "base, sft, rlhf" in err[0], err


def test_app_on_a_busy_port_is_one_clear_error(micro_run, capsys, monkeypatch):
    import socket

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "compare", "--profile", "micro", "--out", str(micro_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}") and "--port" in err[-1], err


def test_a_number_no_stage_can_run_with_is_one_clear_error_before_any_work(tmp_path, capsys):
    for argv, said in [(["sft", "--lora_r", "0"], "--lora_r is 0"), (["sft", "--max_steps", "0"], "--max_steps is 0"),
                       (["reward", "--eval_fraction", "1.5"], "give a share of less than 1"),
                       (["ppo", "--missing_eos_penalty", "1"], "give 0 or a negative number"),
                       (["pretrain", "--lr=-1e-3"], "--lr is -0.001"),
                       (["pretrain", "--n_heads", "3"], "--d_model 64 / --n_heads 3 is not a whole, even head size"),
                       (["pretrain", "--context", "10"], "--context 10 is shorter than the training rows"),
                       (["bench", "--bench_steps", "0"], "--bench_steps is 0"),
                       (["tokenizer", "--vocab_size", "10"], "--vocab_size is 10"),
                       (["sft", "--data", "mine.json", "--data_split", "test"], "but mine.json is a local file"),
                       (["reward", "--data", "p.jsonl", "--data_split=eval"], "--data_split eval picks a split"),
                       (["eval", "--data", "q.txt", "--data_split", "test"], "but q.txt is a local file"),
                       (["sft", "--data", "mine.json", "--data_s", "test"], "but mine.json is a local file"),
                       (["sft", "--data_limit", "5"], "--data_limit only applies to records brought with --data")]:
        assert main([*argv, "--profile", "micro", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_split_is_refused_only_for_a_local_file():
    """--data_split picks a hub dataset's split: with a hub id it is kept, and a name too long to look up is one clear
    error, not a traceback."""
    from argparse import Namespace

    import pytest

    from lab_utils.cli import _split_of_a_hub_dataset_only
    from lab_utils.errors import LabError

    for data in ("owner/prefs", "owner/prefs:config"):
        _split_of_a_hub_dataset_only(Namespace(data=data, data_split="test"), given=True)
    with pytest.raises(LabError, match="cannot read this path"):
        _split_of_a_hub_dataset_only(Namespace(data="x" * 5000, data_split="test"), given=True)
    _split_of_a_hub_dataset_only(Namespace(data="p.json", data_split="train_prefs"), given=False)  # a default


def test_a_switch_a_profile_turns_on_can_be_turned_off():
    from lab_utils.cli import _parse
    from lab_utils.config import SFTConfig

    assert _parse("sft", ["--profile", "full"], (SFTConfig,))[1][0]["bf16"] is True
    assert _parse("sft", ["--profile", "full", "--no_bf16"], (SFTConfig,))[1][0]["bf16"] is False
    assert _parse("sft", ["--profile", "tiny", "--bf16"], (SFTConfig,))[1][0]["bf16"] is True


def test_sft_from_a_base_model_that_is_not_there_is_one_clear_error(micro_run, tmp_path, capsys):
    data = tmp_path / "ok.json"
    data.write_text('[{"instruction": "Say hi.", "output": "Hi."}]')
    missing = tmp_path / "no-such-model"
    assert main(["sft", "--profile", "micro", "--data", str(data), "--model", str(missing),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not load the base model" in err[0] and str(missing) in err[0], err


def test_numbers_are_finite_and_zero_where_it_means_never():
    import math

    import pytest

    from lab_utils.config import PPOConfig, PretrainConfig, RewardConfig, WorldConfig
    from lab_utils.errors import LabError

    for cls, name, value in [(PPOConfig, "kl_coef", math.nan), (PPOConfig, "missing_eos_penalty", math.nan),
                             (PretrainConfig, "lr", math.inf), (WorldConfig, "heldout_fraction", 1.0),
                             (RewardConfig, "eval_fraction", 1.0)]:
        with pytest.raises(LabError, match=f"--{name} is"):
            cls.for_profile("micro", **{name: value})
    assert PPOConfig.for_profile("micro", log_every=0, save_every=0).log_every == 0
    assert PretrainConfig.for_profile("micro", save_every=0).save_every == 0


def test_a_model_folder_of_the_wrong_kind_is_one_clear_error_before_any_work(sft_root, tmp_path, capsys):
    """A reward model where a language model goes and back, data given to --model, a model saved without its
    tokenizer, a torn normalisation: each one line naming the path, and no run folder left behind."""
    import json
    import shutil

    from lab_utils.errors import LabError
    from lab_utils.modeling import check_model_folder
    from lab_utils.reward import NORM_FILE, RewardModel

    sft = sft_root / "sft"
    reward_like = tmp_path / "reward-like"  # the config of a reward model; nothing else is read before the refusal
    shutil.copytree(sft, reward_like)
    config = json.loads((reward_like / "config.json").read_text())
    (reward_like / "config.json").write_text(json.dumps(config | {"architectures": ["LlamaForSequenceClassification"]}))
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(sft, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json"))
    data = tmp_path / "records.json"
    data.write_text('[{"instruction": "Say hi.", "output": "Hi."}]')
    out = tmp_path / "run"
    for argv, said in [(["eval", "--model", str(reward_like)], "a reward model (LlamaForSequenceClassification)"),
                       (["ppo", "--model", str(sft), "--reward_model", str(sft)], "a language model (LlamaForCausalLM)"),
                       (["sft", "--model", str(data)], "a file, not a model folder"),
                       (["eval", "--model", str(no_tokenizer)], "the model folder has no tokenizer")]:
        assert main([*argv, "--profile", "micro", "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0] and "Fix:" in err[0], err
        assert not (out / "eval").exists() and not (out / "rlhf").exists() and not (out / "sft").exists()
    adapter = tmp_path / "adapter"  # a PEFT adapter saved with its tokenizer: transformers loads its base with it
    shutil.copytree(sft, adapter, ignore=shutil.ignore_patterns("config.json", "model.safetensors"))
    (adapter / "adapter_config.json").write_text("{}")
    check_model_folder(str(adapter))
    for text in ('{"mean": 0.1', '{"mean": 0.1, "std": 0}', '{"mean": 0.1, "std": -2}', '{"mean": NaN, "std": 1}',
                 '{"mean": 0, "std": Infinity}'):  # json reads NaN and Infinity; a std of 0 or below breaks the scale
        (reward_like / NORM_FILE).write_text(text)
        with pytest.raises(LabError, match="not a normalisation"):
            RewardModel.load(reward_like)


@pytest.mark.parametrize("stage, done, usual, from_other", [
    ("sft", {"method": "qlora", "trainable_params": 1, "final_loss": 0.1, "wall_s": 0.0}, ("base", "sft"), ("sft",)),
    ("ppo", {"n_prompts": 8, "data": "", "reward_start": 0.0, "reward_end": 0.1, "kl_end": 0.1, "episodes_per_s": 1.0,
             "wall_s": 0.0}, ("sft", "rlhf"), ("rlhf",)),
])
def test_a_stage_started_from_another_model_is_not_reported_against_the_runs_own(tmp_path, monkeypatch, capsys,
                                                                                 stage, done, usual, from_other):
    """`lab sft --model X` / `lab ppo --model X` evaluated the run's own base or SFT model next to the new one, as if
    it were where the new one started (and in a fresh --out failed with "no base model" after training)."""
    from lab_utils import stages

    asked = []
    monkeypatch.setattr(stages, f"run_{stage}", lambda *args, **kwargs: done)
    scores = {"task_accuracy": 0.5, "heldout_entity_accuracy": 0.5, "language_match": 1.0}
    monkeypatch.setattr(stages, "run_eval", lambda *args, models=(), **kwargs: asked.append(models) or
                        {m: scores for m in models})
    out = str(tmp_path / "run")
    assert main([stage, "--profile", "micro", "--out", out]) == 0
    assert main([stage, "--profile", "micro", "--out", out, "--model", str(tmp_path / "elsewhere")]) == 0
    assert asked == [usual, from_other]
    assert f"started from {tmp_path / 'elsewhere'}" in capsys.readouterr().out


def test_a_split_without_a_hub_dataset_is_refused_in_either_spelling(tmp_path, capsys):
    """--data_split with no --data, or with a local file given as --data-split (HfArgumentParser's dashed alias),
    would be ignored without a word (and in `lab run` it rebuilt every stage for a setting that changes nothing)."""
    data = tmp_path / "notes.txt"
    data.write_text("one document\n")
    for flags in (["--data_split", "test"], ["--data", str(data), "--data-split", "test"],
                  ["--data", str(data), "--data_", "test"], ["--data", str(data), "--data-s=test"]):
        capsys.readouterr()
        assert main(["pretrain", "--profile", "micro", "--out", str(tmp_path / "run"), *flags]) == 2
        assert "--data_split test picks a split of" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_command_under_a_process_group_leaves_it_before_exiting(tmp_path, capsys):
    """Under torchrun every process leaves its group when the command ends, even when it failed: a process that exits
    with gloo's threads still running may abort (seen once in CI on a non-main PPO process)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    assert main(["votes", "count", "--out", str(tmp_path / "none")]) == 2  # no store there: a LabError
    assert not dist.is_initialized()
    assert "no vote store" in capsys.readouterr().err


@pytest.mark.parametrize("kib, fails", [(300, "writing weights"), (600, "")])  # micro: weights 462 KB, optimizer 937
def test_a_full_disk_is_one_error_line_and_leaves_nothing_half_written(tmp_path, kib, fails):
    """A file-size limit (`ulimit -f`), which fails a write as a full disk does (EFBIG; ENOSPC and EDQUOT read the
    same): safetensors (the weights) and torch (the optimizer state, twice their size) raise it as a traceback; the
    lab says it in one line and exits with 2."""
    import os
    import resource
    import signal
    import subprocess
    from pathlib import Path

    def limited():  # in the child only: writes past the limit fail instead of killing it (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))

    out = tmp_path / "run"
    lab = Path(sys.executable).parent / "lab"
    done = subprocess.run([str(lab), "pretrain", "--profile", "micro", "--out", str(out)], capture_output=True,
                          text=True, timeout=600, preexec_fn=limited, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and fails in last and "File too large. Fix: free space" in last, last
    assert not (out / "base").exists() and not list(out.rglob(".tmp-*"))


def test_a_full_disk_raised_by_python_without_a_file_name_is_one_line_too(monkeypatch, capsys):
    import errno

    from lab_utils import cli

    def full(argv):  # a write() that fails: Python's OSError names no file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(cli.COMMANDS, "votes", full)
    assert main(["votes", "count"]) == 2
    assert capsys.readouterr().err == ("error: writing the run: No space left on device. Fix: free space on that disk "
                                       "(or pass an --out on another one) and run the command again; what was being "
                                       "written was left out, not half-written\n")


def test_a_model_no_training_stage_can_start_from_is_one_clear_error_before_any_work(sft_root, tmp_path, capsys):
    """Reviewers' hub-style models (2026-12-05): a pre-quantised checkpoint (a `*-bnb-4bit` upload) and a PEFT adapter
    folder trained for minutes, then crashed at the save; a tokenizer without EOS crashed SFT and `lab eval`; a [PAD]
    saved without resizing the model indexed past the embeddings. Each is one line now (`lab eval` still reads a
    quantised model or an adapter, and gets the missing row)."""
    import json
    import shutil

    from lab_utils.modeling import load_causal_lm

    sft = sft_root / "sft"
    quantised = tmp_path / "q4"
    shutil.copytree(sft, quantised)
    config = json.loads((quantised / "config.json").read_text())
    (quantised / "config.json").write_text(json.dumps(config | {"quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}}))
    adapter = tmp_path / "adapter"
    shutil.copytree(sft, adapter, ignore=shutil.ignore_patterns("config.json", "model.safetensors"))
    (adapter / "adapter_config.json").write_text("{}")
    no_eos = tmp_path / "no-eos"
    shutil.copytree(sft, no_eos)
    tok = load_causal_lm(str(sft))[1]
    tok.eos_token = None
    tok.save_pretrained(no_eos)
    out = tmp_path / "run"
    capsys.readouterr()  # the loads' progress bars
    every = ("sft", "reward", "ppo", "dpo", "pretrain")  # before anything else is read
    for model, said, stages in [(quantised, "a pre-quantised checkpoint (quantization_config: bitsandbytes)", every),
                                (adapter, "a PEFT adapter folder, not a model's full weights", every),
                                (no_eos, "the model's tokenizer has no EOS token", ("sft", "pretrain", "eval"))]:
        for stage in stages:
            argv = [stage, "--profile", "micro", "--out", str(out), "--model", str(model)]
            assert main(argv) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and said in err[0] and "Fix:" in err[0], (argv, err)
            assert not out.exists() or not any(p.is_dir() and not p.name.startswith("eval") for p in out.iterdir())

    padded = tmp_path / "pad-past-rows"  # [PAD] added to the tokenizer, and the model saved without a row for it
    shutil.copytree(sft, padded)
    tok = load_causal_lm(str(sft))[1]
    tok.add_special_tokens({"additional_special_tokens": ["[EXTRA]"]})
    tok.save_pretrained(padded)
    model, tok = load_causal_lm(str(padded))
    assert model.get_input_embeddings().num_embeddings >= len(tok)  # resized to the tokenizer
    capsys.readouterr()
    assert main(["sft", "--profile", "micro", "--out", str(out), "--model", str(padded)]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer has {len(tok)} tokens and the model {len(tok) - 1} embedding rows" in err


def test_the_next_command_lab_votes_prints_names_the_runs_own_profile_and_folder(tmp_path):
    """`lab votes export` checks no profile: in runs/tiny holding a run built with --profile micro, its printed
    `lab reward --profile micro` without --out would have trained runs/micro, another run."""
    import argparse
    import json

    from lab_utils.cli import _same_run

    root = tmp_path / "runs" / "tiny"
    (root / "sft").mkdir(parents=True)
    (root / "sft" / "metrics.json").write_text(json.dumps({"profile": "micro"}))
    assert _same_run(argparse.Namespace(profile="tiny", out=None), root) == f" --profile micro --out {root}"
    spaced = tmp_path / "my runs"
    assert _same_run(argparse.Namespace(profile="micro", out=str(spaced))) == f" --profile micro --out '{spaced}'"
