"""Reuse like `make`: a finished stage is reused only with the same config, built from the upstream stages that are
there now; the head-to-head pairs RLHF answers only with SFT answers to the same prompts by the current SFT model;
a half-finished stage is never picked up by a later one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lab_utils import checkpoints as ck
from lab_utils import harness, stages
from lab_utils.cli import main
from lab_utils.config import resolve_profile
from lab_utils.errors import LabError


@pytest.fixture
def built(monkeypatch) -> list[str]:
    """Every stage replaced by a stand-in that records what the real one records (config, upstream builds) but
    trains nothing; returns the stages built, in order."""
    calls: list[str] = []

    def stand_in(stage: str):
        def build(profile=None, out=None, resume=False, **changes):  # `lab run` asks pretraining to resume="auto"
            profile, root = resolve_profile(profile), stages.run_dir(profile, out)
            cfg = stages.CONFIGS[stage].for_profile(profile, **changes)
            calls.append(stage)
            metrics = {"config": cfg.to_dict(), "wall_s": 0.0}
            return stages._finish(root, stage, metrics, profile, stages.upstream_stamps(root, stage, cfg))
        return build

    for stage in stages.STAGES:
        monkeypatch.setattr(stages, f"run_{stage}", stand_in(stage))
    monkeypatch.setattr(stages, "run_eval", lambda *args, **kwargs: {})
    return calls


def test_lab_run_rebuilds_a_stage_whose_config_or_upstream_changed(built, tmp_path, capsys):
    out = tmp_path / "run"

    def lab_run(*flags) -> list[str]:
        built.clear()
        assert main(["run", "--profile", "micro", "--out", str(out), *flags]) == 0
        return list(built)

    assert lab_run() == list(stages.STAGES)
    assert lab_run() == []  # all finished, same config: everything reused
    assert "[lab] sft: finished earlier, reusing" in capsys.readouterr().out
    assert lab_run("--max_steps", "3") == ["pretrain", "sft", "reward", "ppo"]  # a new base model, and all after it
    log = capsys.readouterr().out
    assert "[lab] pretrain: config changed (max_steps 20 -> 3): rebuilding" in log
    assert "[lab] sft: upstream pretrain was rebuilt after it: rebuilding" in log
    assert lab_run("--max_steps", "3") == []
    stages.run_sft("micro", out)  # a separate `lab sft`: the reward and RLHF models were trained from the old one
    assert lab_run("--max_steps", "3") == ["reward", "ppo"]
    assert "[lab] reward: upstream sft was rebuilt after it: rebuilding" in capsys.readouterr().out
    assert lab_run("--max_steps", "3", "--force") == list(stages.STAGES)


def test_lab_pretrain_refuses_another_profiles_tokenizer(tok_root, tmp_path, capsys):
    """`lab pretrain` with a forgotten --profile in a run folder whose tokenizer is micro's trained a tiny model on
    it without a word (and `lab sft` after it), until the first evaluation said the profiles differ."""
    out = tmp_path / "run"
    shutil.copytree(tok_root / "tokenizer", out / "tokenizer")
    capsys.readouterr()
    assert main(["pretrain", "--profile", "tiny", "--out", str(out), "--max_steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer stage was built for profile micro, not tiny. Fix: pass --profile micro" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer"]


def test_a_tokenizer_trained_again_into_the_same_files_leaves_the_later_stages_current(tok_root, tmp_path, capsys):
    """Notebook 01 trains the tokenizer each time it runs: run again after notebook 05, it made every later stage
    stale (notebook 06's `ensure` retrained pretraining, SFT, the reward model and PPO) though the files came out the
    same. A tokenizer that does change still makes them stale."""
    out = tmp_path / "run"
    shutil.copytree(tok_root / "tokenizer", out / "tokenizer")
    config = stages.CONFIGS["pretrain"].for_profile("micro")
    stages._finish(out, "pretrain", {"config": config.to_dict()}, "micro",
                   stages.upstream_stamps(out, "pretrain", config))  # a base model built on this tokenizer
    was = stages.stamp(out, "tokenizer")
    capsys.readouterr()
    stages.run_tokenizer("micro", out)
    assert "the same files as before" in capsys.readouterr().out
    assert stages.stamp(out, "tokenizer") == was
    assert stages.stale_reason(out, "pretrain", config.to_dict(), "micro") is None
    stages.run_tokenizer("micro", out, vocab_size=stages.CONFIGS["tokenizer"].for_profile("micro").vocab_size - 64)
    assert "the same files" not in capsys.readouterr().out and stages.stamp(out, "tokenizer") != was
    assert stages.stale_reason(out, "pretrain", config.to_dict(), "micro") == "upstream tokenizer was rebuilt after it"


def test_lab_tokenizer_prints_one_line_of_its_metrics(tmp_path, capsys):
    assert main(["tokenizer", "--profile", "micro", "--out", str(tmp_path / "run")]) == 0
    m = ck.read_json(tmp_path / "run" / "tokenizer" / "metrics.json")
    assert capsys.readouterr().out == (f"[lab] tokenizer: vocab_size={m['vocab_size']} chars_per_token_en="
                                       f"{m['chars_per_token_en']} chars_per_token_zh={m['chars_per_token_zh']} "
                                       f"wall_s={m['wall_s']}\n")


def test_a_tokenizer_learned_from_other_text_is_said_for_a_hub_id_too(tmp_path, capsys):
    """The same-bytes rule (a --data file by another path) compares hashes: a hub id has none, and None == None made
    a tokenizer learned from the world corpus pass for one learned from `lab pretrain --data <hub id>`."""
    ck.write_json(tmp_path / "tokenizer" / "metrics.json", {"config": {"data": ""}})
    stages._say_which_text_the_tokenizer_knows(tmp_path, "tatsu-lab/alpaca", "micro")
    assert "was learned from the world corpus, not from tatsu-lab/alpaca" in capsys.readouterr().out


def test_a_damaged_metrics_file_neither_stops_the_tokenizer_rebuild_nor_hides_a_missing_stage(tok_root, tmp_path):
    """`lab tokenizer` over a cut tokenizer/metrics.json rebuilds it (it is the command that rewrites the file), and
    the error for a missing reward stage stays that one, whatever another stage's metrics.json holds."""
    out = tmp_path / "run"
    shutil.copytree(tok_root / "tokenizer", out / "tokenizer")
    (out / "tokenizer" / "metrics.json").write_text('{"profile": "mi')
    with pytest.raises(LabError, match=r"no reward model.*Fix: run `lab reward --out \S+` \(or `lab run --out"):
        stages.finished_dir(out, "reward", "reward model")
    stages.run_tokenizer("micro", out)
    assert ck.read_json(out / "tokenizer" / "metrics.json")["profile"] == "micro"
    with pytest.raises(LabError, match=r"no reward model.*Fix: run `lab reward --profile micro --out \S+`"):
        stages.finished_dir(out, "reward", "reward model")  # the profile the run's stages recorded


def test_lab_run_refuses_a_run_folder_of_another_profile_unless_forced(built, tmp_path, capsys):
    """`lab run --out runs/micro` without --profile (tiny by default) rebuilt micro's tokenizer and models as tiny's
    over them, stage by stage: one forgotten flag cost the whole run."""
    out = tmp_path / "run"
    assert main(["run", "--profile", "micro", "--out", str(out)]) == 0
    before = {s: ck.read_json(out / stages.STAGE_DIRS[s] / "metrics.json") for s in stages.STAGES}
    built.clear()
    capsys.readouterr()
    assert main(["run", "--profile", "tiny", "--out", str(out)]) == 2
    assert built == []
    err = capsys.readouterr().err
    assert "stage was built for profile micro, not tiny. Fix: pass --profile micro" in err and "--force" in err, err
    assert {s: ck.read_json(out / stages.STAGE_DIRS[s] / "metrics.json") for s in stages.STAGES} == before
    assert main(["run", "--profile", "tiny", "--out", str(out), "--force"]) == 0  # asked for: rebuilt as tiny's
    assert built == list(stages.STAGES)


def test_ensure_builds_only_what_the_requested_config_needs(built, tmp_path):
    stages.ensure("sft", "micro", tmp_path, changes={"sft": {"model": "some/hub-model"}})
    assert built == ["sft"]  # a given model replaces the base model, so no tokenizer or pretraining
    stages.ensure("sft", "micro", tmp_path)
    assert built == ["sft", "tokenizer", "pretrain", "sft"]


def test_stale_reason_of_runs_without_a_recorded_upstream_compares_mtimes(built, tmp_path):
    """Runs from before stages recorded `built_from`: an upstream metrics.json newer than the stage's is a rebuild."""
    stages.ensure("sft", "micro", tmp_path)
    path = tmp_path / "sft" / "metrics.json"
    ck.write_json(path, {k: v for k, v in ck.read_json(path).items() if k not in ("built_from", "finished_at")})
    cfg = stages.CONFIGS["sft"].for_profile("micro").to_dict()
    t = path.stat().st_mtime
    os.utime(tmp_path / "base" / "metrics.json", (t - 60, t - 60))
    assert stages.stale_reason(tmp_path, "sft", cfg, "micro") is None
    os.utime(tmp_path / "base" / "metrics.json", (t + 60, t + 60))
    assert stages.stale_reason(tmp_path, "sft", cfg, "micro") == "upstream pretrain was rebuilt after it"
    assert stages.stale_reason(tmp_path, "sft", cfg, "tiny") == "built for profile micro, not tiny"


def test_a_config_field_added_since_a_build_counts_only_when_it_leaves_its_default(built, tmp_path):
    """A run built before `PPOConfig.data` existed is reused while --data keeps its default, rebuilt when it is set."""
    stages.ensure("ppo", "micro", tmp_path)
    path = tmp_path / "rlhf" / "metrics.json"
    metrics = ck.read_json(path)
    ck.write_json(path, metrics | {"config": {k: v for k, v in metrics["config"].items() if k != "data"}})
    cfg = stages.CONFIGS["ppo"].for_profile("micro")
    assert stages.stale_reason(tmp_path, "ppo", cfg.to_dict(), "micro") is None
    changed = stages.CONFIGS["ppo"].for_profile("micro", data="prompts.jsonl").to_dict()
    assert stages.stale_reason(tmp_path, "ppo", changed, "micro") == "config changed (data unset -> 'prompts.jsonl')"
    stale = cfg.to_dict() | {"n_prompts": 3}  # a field the old build did record still counts as before
    assert stages.stale_reason(tmp_path, "ppo", stale, "micro") == "config changed (n_prompts 32 -> 3)"


def test_real_stages_record_what_makes_them_fresh(sft_root, tmp_path):
    """The run the real micro stages built is reused as it is, also after a copy that gives every file a new
    mtime: each stage compares the `finished_at` it recorded for its upstream stages, not file times."""
    root = tmp_path / "copy"
    shutil.copytree(sft_root, root, copy_function=shutil.copy)  # copy, not copy2: mtimes are not kept
    later = (root / "sft" / "metrics.json").stat().st_mtime + 60
    os.utime(root / "base" / "metrics.json", (later, later))
    for stage in ("tokenizer", "pretrain", "sft"):
        cfg = stages.CONFIGS[stage].for_profile("micro").to_dict()
        assert stages.stale_reason(root, stage, cfg, "micro") is None, stage
    assert ck.read_json(root / "sft" / "metrics.json")["built_from"] == {"pretrain": stages.stamp(root, "pretrain")}


# ------------------------------------------------------------------ the head-to-head in run_eval

@pytest.fixture
def eval_root(sft_root, tmp_path) -> Path:
    """A run with base, SFT and an "RLHF" model that is a copy of the SFT one (run_eval only needs its answers)."""
    root = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft"):
        shutil.copytree(sft_root / folder, root / folder)
    shutil.copytree(sft_root / "sft", root / "rlhf", ignore=shutil.ignore_patterns("metrics.json"))
    ck.write_json(root / "rlhf" / "metrics.json", {"profile": "micro", "finished_at": "2026-01-01T00:00:00+00:00"})
    return root


def test_head_to_head_reevaluates_sft_on_other_prompts_or_a_newer_sft_model(eval_root, capsys):
    stages.run_eval("micro", eval_root, models=("sft",))
    capsys.readouterr()
    r = stages.run_eval("micro", eval_root, models=("rlhf",), n_per_task=2)  # fewer prompts than sft.json's
    assert set(r) == {"sft", "rlhf"} and r["sft"]["n_prompts"] == r["rlhf"]["n_prompts"]
    assert r["rlhf"]["head_to_head_vs_sft"]["n"] == r["rlhf"]["n_prompts"]
    assert "evaluating sft again for the head-to-head" in capsys.readouterr().out
    r = stages.run_eval("micro", eval_root, models=("rlhf",), n_per_task=2)
    assert set(r) == {"rlhf"} and "head_to_head_vs_sft" in r["rlhf"]  # sft.json now matches: reused
    path = eval_root / "sft" / "metrics.json"  # the SFT model rebuilt after sft.json was written (same prompts)
    ck.write_json(path, ck.read_json(path) | {"finished_at": "2999-01-01T00:00:00.000000+00:00"})
    r = stages.run_eval("micro", eval_root, models=("rlhf",), n_per_task=2)
    assert set(r) == {"sft", "rlhf"} and "head_to_head_vs_sft" in r["rlhf"]
    assert ck.read_json(eval_root / "eval" / "sft.json")["model_finished_at"] == stages.stamp(eval_root, "sft")


def test_each_of_the_runs_models_is_loaded_by_its_own_name(tmp_path, monkeypatch):
    """`lab eval --models rlhf` must answer with the RLHF model: loading SFT in its place would report SFT's numbers
    as RLHF's, and a head-to-head of SFT against itself."""
    asked = []
    monkeypatch.setattr(harness, "load_model", lambda root, name: asked.append((root, name)))
    for name in stages.MODEL_DIRS:
        harness._load(tmp_path, name, None)
    assert asked == [(tmp_path, name) for name in stages.MODEL_DIRS] and "rlhf" in stages.MODEL_DIRS


def test_head_to_head_gives_each_side_its_own_ended_flags(micro_world):
    """The same answer, cut off on one side only: the side that ended with EOS wins, whichever it is."""
    from lab_utils import tasks

    rec = next(r for r in tasks.eval_records(micro_world, 2) if r["task"] == "capital")
    answers = {"responses": [rec["output"]]}
    cut, ended = answers | {"ended": [False]}, answers | {"ended": [True]}
    assert harness._head_to_head(micro_world, [rec], cut, ended)["win_rate_vs_sft"] == 0.0  # the model was cut off
    assert harness._head_to_head(micro_world, [rec], ended, cut)["win_rate_vs_sft"] == 1.0  # SFT was


def test_reward_gain_is_the_models_reward_minus_sfts(micro_world):
    """A model that scores 1.0 where SFT scores 0.0 gained +1.0, on all prompts and on the on-task ones."""
    from lab_utils import tasks

    rec = next(r for r in tasks.eval_records(micro_world, 2) if r["task"] == "arithmetic")
    rlhf = {"responses": [rec["output"]], "ended": [True], "rewards": [1.0]}
    sft = rlhf | {"rewards": [0.0]}
    gain = harness._head_to_head(micro_world, [rec], rlhf, sft)
    assert (gain["reward_gain_vs_sft"], gain["reward_gain_vs_sft_on_task"], gain["n_off_task_pairs"]) == (1.0, 1.0, 0)


def test_on_task_reward_gain_leaves_out_a_pair_where_only_sfts_answer_is_off_task(micro_world):
    """An answer in another task's shape on either side makes the pair off-task: SFT answering a sum with a capital
    sentence (which its high reward would otherwise put into the on-task gain) counts too, not only RLHF doing so."""
    from lab_utils import graders, tasks

    sums = [r for r in tasks.eval_records(micro_world, 2) if r["task"] == "arithmetic"][:2]
    capital = "The capital of France is Paris."
    assert graders.off_task(sums[1], capital) and not graders.off_task(sums[1], sums[1]["output"])
    rlhf = {"responses": [r["output"] for r in sums], "rewards": [0.5, 0.0]}
    sft = {"responses": [sums[0]["output"], capital], "rewards": [0.0, 2.0]}
    gain = harness._reward_gain(sums, rlhf, sft)
    assert gain == {"reward_gain_vs_sft": -0.75, "reward_gain_vs_sft_on_task": 0.5, "n_off_task_pairs": 1}


# ------------------------------------------------------------------ half-finished stages

def test_a_half_finished_reward_stage_is_never_used(tmp_path):
    """The reward stage saves reward/ before it trains the ratings model and writes metrics.json: a run that stopped
    in between leaves a folder that PPO and eval must refuse."""
    for folder in ("base", "sft", "reward"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for folder in ("base", "sft"):
        (tmp_path / folder / "metrics.json").write_text("{}")
    for run in (lambda: stages.run_ppo("micro", tmp_path, log=lambda *_: None),
                lambda: stages.run_eval("micro", tmp_path)):
        with pytest.raises(LabError, match=r"no metrics\.json.*Fix: run `lab reward --profile micro --out \S+` \(or "
                                           r"`lab run --profile micro --out \S+`\) first"):
            run()  # the run's flags: without them the printed command would build runs/tiny


def test_a_model_saved_by_a_stage_that_did_not_finish_is_not_evaluated(tmp_path):
    """Pretraining saves base/ before its fact probe and its metrics.json: a run stopped in between leaves a model
    folder that `lab eval` took as finished (evaluated, with no build to tell it was rebuilt later)."""
    for folder in ("base", "sft"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "sft" / "metrics.json").write_text("{}")
    assert harness._existing(tmp_path) == ("sft",)
    with pytest.raises(LabError, match=r"base/?: the base model's stage did not finish .*Fix: run `lab pretrain --out "):
        harness.load_model(tmp_path, "base")


def test_an_sft_stage_that_did_not_finish_is_said_by_lab_eval_and_the_report_names_the_stage_to_run(eval_root,
                                                                                                    capsys):
    """`lab sft` run again and killed: the report said "the sft model was rebuilt: run `lab eval`", and `lab eval`
    left sft out without a word, so the fix went round in a circle."""
    stages.run_eval("micro", eval_root, models=("sft",), n_per_task=1)
    (eval_root / "sft" / "metrics.json").unlink()  # what `lab sft` does before it trains
    flags = f" --profile micro --out {eval_root}"
    assert stages.write_report(eval_root)["eval_stale"]["sft"] == (
        "since this evaluation, the sft stage was left unfinished (run again and stopped, or its metrics.json "
        f"removed): run `lab sft{flags}` (or "
        f"`lab run{flags}`), then `lab eval{flags}`")
    capsys.readouterr()
    assert set(stages.run_eval("micro", eval_root, n_per_task=1)) == {"base", "rlhf"}
    assert (f"[lab] eval: sft left out: {eval_root / 'sft'} is not finished (its sft stage stopped before it did); "
            f"`lab sft{flags}` (or `lab run{flags}`) builds it") in capsys.readouterr().out


class _ConstantReward:
    """A stand-in reward model: every answer scores `value`."""

    def __init__(self, value: float):
        self.value = value

    def score(self, prompts, responses, ended):
        import torch
        return torch.full((len(responses),), self.value)


def test_evaluations_say_which_reward_and_sft_models_they_come_from(eval_root, monkeypatch):
    """A rebuilt reward model re-scores the SFT answers a head-to-head reuses, so both rows of the report are in one
    reward model's units; the report leaves out, with the reason, an evaluation of a model or against an SFT model
    that was rebuilt since."""
    def finish_reward(when: str, value: float):
        ck.write_json(eval_root / "reward" / "metrics.json", {"finished_at": when})
        monkeypatch.setattr(harness, "_reward_model", lambda root, profile=None: _ConstantReward(value))

    (eval_root / "reward").mkdir()
    finish_reward("2999-01-01T00:00:00+00:00", 1.0)
    stages.run_eval("micro", eval_root, models=("sft",))
    finish_reward("2999-02-01T00:00:00+00:00", 2.0)  # `lab reward` again (its report), then `lab eval --models rlhf`
    report = stages.write_report(eval_root)
    assert "sft" not in report["eval"] and "earlier reward model" in report["eval_stale"]["sft"]
    r = stages.run_eval("micro", eval_root, models=("rlhf",))
    assert r["sft"]["mean_reward"] == r["rlhf"]["mean_reward"] == 2.0  # the same answers were not generated again
    report = ck.read_json(eval_root / "report.json")
    assert report["eval"]["sft"]["mean_reward"] == 2.0 and "eval_stale" not in report
    path = eval_root / "sft" / "metrics.json"  # `lab sft` again: the SFT evaluation and the head-to-head are stale
    ck.write_json(path, ck.read_json(path) | {"finished_at": "2999-03-01T00:00:00+00:00"})
    report = stages.write_report(eval_root)
    assert set(report["eval"]) == set() and set(report["eval_stale"]) == {"sft", "rlhf"}
    assert report["eval_stale"]["sft"] == ("the sft model was rebuilt after this evaluation: run `lab eval --profile "
                                           f"micro --out {eval_root}`")  # this run's folder, not runs/tiny
    assert "against an earlier SFT model" in report["eval_stale"]["rlhf"]


def test_a_data_file_rewritten_in_place_makes_its_stage_stale(built, tmp_path):
    """`lab run --data notes.txt` after notes.txt was edited: the same path, other text. Only the path was compared,
    so the old model was reused."""
    data = tmp_path / "notes.txt"
    data.write_text("one document\nanother document\n")
    changes = {"pretrain": {"data": str(data)}}
    stages.ensure("pretrain", "micro", tmp_path / "run", changes=changes)
    cfg = stages.CONFIGS["pretrain"].for_profile("micro", data=str(data)).to_dict()
    assert stages.stale_reason(tmp_path / "run", "pretrain", cfg, "micro") is None
    data.write_text("one document\nanother, edited document\n")
    assert stages.stale_reason(tmp_path / "run", "pretrain", cfg, "micro") == f"its --data file {data} changed since"


def test_a_model_folder_trained_again_in_place_makes_its_stage_stale(built, tmp_path):
    """`--model DIR` (here SFT's base) after DIR was trained again into the same folder: the same path, another model.
    Only the path was compared, so the model built on the old one was reused."""
    folder = tmp_path / "my-base"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights, first training")
    changes = {"sft": {"model": str(folder)}}
    stages.ensure("sft", "micro", tmp_path / "run", changes=changes)
    cfg = stages.CONFIGS["sft"].for_profile("micro", model=str(folder)).to_dict()
    assert stages.stale_reason(tmp_path / "run", "sft", cfg, "micro") is None
    (folder / "model.safetensors").write_bytes(b"weights, the second training")
    assert stages.stale_reason(tmp_path / "run", "sft", cfg, "micro") == \
        f"its --model folder {folder} changed or is gone since"


def test_a_new_checkpoint_interval_rebuilds_nothing(built, tmp_path):
    """How often a stage saves a resumable checkpoint changes neither its model nor its results: `lab run
    --save_every N` reuses what is finished (it rebuilt every stage from pretraining on)."""
    out = tmp_path / "run"
    assert main(["run", "--profile", "micro", "--out", str(out)]) == 0
    built.clear()
    assert main(["run", "--profile", "micro", "--out", str(out), "--save_every", "5"]) == 0
    assert built == []


def test_lab_run_on_your_own_text_learns_the_tokenizer_from_it(built, tmp_path, capsys):
    """`lab run --data notes.txt`: the BPE merges are learned from the text the model is pretrained on, and a later
    `lab run` on the world corpus learns them from the world again (and rebuilds everything after)."""
    data = tmp_path / "notes.txt"
    data.write_text("one document\nanother document\n")
    out = tmp_path / "run"
    assert main(["run", "--profile", "micro", "--out", str(out), "--data", str(data)]) == 0
    assert ck.read_json(out / "tokenizer" / "metrics.json")["config"]["data"] == str(data)
    built.clear()
    assert main(["run", "--profile", "micro", "--out", str(out)]) == 0
    assert built == list(stages.STAGES)
    assert f"[lab] tokenizer: config changed (data '{data}' -> '')" in capsys.readouterr().out
    assert ck.read_json(out / "tokenizer" / "metrics.json")["config"]["data"] == ""


def test_a_stage_refuses_an_upstream_model_built_for_another_profile(tmp_path):
    """`lab sft --profile micro --out runs/tiny` (or LAB_PROFILE set to another profile) trained micro's SFT on tiny's
    base model without a word, and the report then named whichever profile wrote last."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "base" / "metrics.json").write_text(json.dumps({"profile": "tiny"}))
    with pytest.raises(LabError, match=r"the base model was built for profile tiny, not micro\. Fix: pass --profile "
                                       r"tiny, or --out a run folder of profile micro"):
        stages.run_sft("micro", tmp_path)
    assert not (tmp_path / "sft").exists()


def test_the_same_data_file_named_another_way_is_reused(built, tmp_path, monkeypatch):
    """`lab run --data notes.txt` from its folder, then with the file's full path: the same bytes, so nothing is
    rebuilt (the tokenizer, the base model and every stage after them were trained again); an edited file is."""
    data = tmp_path / "notes.txt"
    data.write_text("one document\nanother document\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", "--profile", "micro", "--out", str(out), "--data", "notes.txt"]) == 0
    built.clear()
    assert main(["run", "--profile", "micro", "--out", str(out), "--data", str(data)]) == 0
    assert built == []
    data.write_text("one document\nanother, edited\n")
    assert main(["run", "--profile", "micro", "--out", str(out), "--data", "./notes.txt"]) == 0
    assert built[:2] == ["tokenizer", "pretrain"]


def test_a_stage_records_the_data_it_read_not_the_file_as_it_was_when_training_ended(tmp_path, monkeypatch):
    """A --data file edited while the stage trained: the stage records the hash of what it read, so the edited file
    is one it did not learn from (it recorded the hash at the end, and a later `lab run` reused the stage)."""
    from lab_utils import pretrain

    data = tmp_path / "notes.txt"
    data.write_text("one document\nanother document\n" * 20)
    read_was = ck.file_sha256(str(data))
    load = pretrain.load_texts

    def read_then_edit(*args, **kwargs):
        docs = load(*args, **kwargs)
        with open(data, "a") as f:
            f.write("a line added while the stage ran\n")
        return docs

    monkeypatch.setattr(pretrain, "load_texts", read_then_edit)
    stages.run_tokenizer("micro", tmp_path / "run", data=str(data))
    assert ck.read_json(tmp_path / "run" / "tokenizer" / "metrics.json")["data_sha256"] == read_was
    cfg = stages.CONFIGS["tokenizer"].for_profile("micro", data=str(data))
    assert "changed since" in stages.stale_reason(tmp_path / "run", "tokenizer", cfg.to_dict(), "micro")
