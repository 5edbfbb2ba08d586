"""`lab eval --model`: any model folder (or hub id) through the same harness, next to the run's models; `lab eval
--data`: every model's answers to a file's prompts, scored by the run's reward model."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from lab_utils import checkpoints as ck
from lab_utils import stages
from lab_utils.cli import main
from lab_utils.config import WorldConfig, build_world_from
from lab_utils.errors import LabError


@pytest.fixture(scope="module")
def root(sft_root, tmp_path_factory) -> Path:
    """A micro run with base, SFT and reward models, in a folder of its own."""
    stages.ensure("reward", "micro", sft_root)
    root = tmp_path_factory.mktemp("eval_other")
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(sft_root / folder, root / folder)
    return root


def lab_eval(root: Path, *flags: str) -> int:
    return main(["eval", "--profile", "micro", "--out", str(root), *flags])


def test_another_model_is_evaluated_next_to_the_runs_and_against_sft(root, tmp_path, capsys):
    other = tmp_path / "my model"  # a copy of the SFT model: the same greedy answers, so no duel is decided
    shutil.copytree(root / "sft", other)
    assert lab_eval(root, "--model", str(other)) == 0
    res = ck.read_json(root / "eval" / "my-model.json")  # the name comes from the folder, made file-safe
    sft = ck.read_json(root / "eval" / "sft.json")  # evaluated too, for the head-to-head
    assert res["model"] == str(other.resolve()) and res["responses"] == sft["responses"]
    assert res["task_accuracy"] == sft["task_accuracy"] and res["mean_reward"] == sft["mean_reward"]
    duel = res["head_to_head_vs_sft"]
    assert duel["wins"] == duel["losses"] == 0 and duel["ties"] + duel["both_bad"] == res["n_prompts"]
    assert res["win_rate_vs_sft"] is None and res["reward_gain_vs_sft"] == 0
    report = ck.read_json(root / "report.json")
    assert list(report["eval"]) == ["sft", "my-model"] and "responses" not in report["eval"]["my-model"]
    assert "eval my-model" in capsys.readouterr().out

    weights = other / "model.safetensors"  # trained again into the same folder: its numbers leave the report
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))
    report = stages.write_report(root)
    assert "my-model" not in report["eval"] and "changed or is gone since" in report["eval_stale"]["my-model"]
    # the fix names the model again: plain `lab eval` measures the run's own models only
    assert report["eval_stale"]["my-model"].endswith(
        f": run `lab eval --profile micro --out {root} --model '{other.resolve()}' --name my-model`")
    assert lab_eval(root, "--model", str(other)) == 0 and "my-model" in ck.read_json(root / "report.json")["eval"]


def test_a_copy_of_the_run_folder_keeps_its_own_model_of_the_run(root, tmp_path, capsys):
    """README: copy runs/tiny first to keep round 1. A model folder inside the run (`lab dpo`'s policy) was recorded by
    its absolute path only: the copy's report then followed the live run's folder (retrained there, the copy lost its
    row and its fix evaluated the live model into the copy)."""
    live = tmp_path / "live"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(root / folder, live / folder)
    shutil.copytree(live / "sft", live / "policy")
    assert lab_eval(live, "--model", str(live / "policy")) == 0
    shutil.copytree(live, tmp_path / "round1")
    weights = live / "policy" / "model.safetensors"  # the live run's policy trained again in place
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))
    kept = stages.write_report(tmp_path / "round1")
    assert "policy" in kept["eval"] and "policy" not in kept.get("eval_stale", {})
    report = stages.write_report(live)
    assert report["eval_stale"]["policy"].endswith(f"--model {live / 'policy'} --name policy`")
    with warnings.catch_warnings(record=True) as said:  # the copy's own policy, evaluated again: nothing replaced
        warnings.simplefilter("always")
        stages.run_eval("micro", tmp_path / "round1", model=str(tmp_path / "round1" / "policy"), name="policy")
    assert not [w for w in said if "held the evaluation of" in str(w.message)]
    capsys.readouterr()


def test_another_model_can_be_named_and_evaluated_with_the_runs_own(root, tmp_path):
    r = stages.run_eval("micro", root, models=("base",), model=str(root / "sft"), name="sft-copy")
    assert set(r) == {"base", "sft-copy"}  # sft.json still matches: reused for the head-to-head, not redone
    assert "head_to_head_vs_sft" in r["sft-copy"] and "head_to_head_vs_sft" not in r["base"]


@pytest.mark.parametrize("flags, message", [
    (("--name", "sft"), "'sft' is the name of the run's own sft model"),
    (("--name", "../elsewhere"), "'../elsewhere' cannot name a model"),
    (("--name", "a" * 65), "cannot name a model")])
def test_a_name_that_is_a_runs_model_or_not_a_plain_name_is_refused(root, flags, message, capsys):
    assert lab_eval(root, "--model", str(root / "sft"), *flags) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err and "--name" in err


def test_a_folder_without_a_model_is_refused(root, tmp_path, capsys):
    assert lab_eval(root, "--model", str(tmp_path)) == 2
    assert "not a model folder (no config.json)" in capsys.readouterr().err


# ------------------------------------------------------------------ your own prompts

def prompts_file(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "my prompts.jsonl"
    rows = [{"instruction": "Repeat: " + "word " * 300}]  # past the micro models' context
    rows += [{"instruction": f"Name a colour you like, number {i}.", "output": "Blue."} for i in range(n)]
    rows += [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_lab_eval_data_scores_every_models_answers_to_the_files_prompts(root, tmp_path, capsys):
    stages.run_eval("micro", root, models=("base",))  # a harness evaluation, which answers to a file leave alone
    data = prompts_file(tmp_path)
    with pytest.warns(UserWarning) as warned:
        r = stages.run_eval_data(str(data), "micro", root, models=("base", "sft"), data_limit=5)
    said = " | ".join(str(w.message) for w in warned)
    assert "1 of the first 6 prompts" in said and "do not fit" in said  # the 300-word one; the limit stops at 5
    assert "trained on the world's tasks" in said  # the reward model never saw such prompts
    assert (r["n_prompts"], r["n_left_out"]) == (5, 1) and len(r["prompts"]) == 5
    assert r["prompts"][0].startswith("Below is an instruction") and "number 0." in r["prompts"][0]
    base, sft = r["models"]["base"], r["models"]["sft"]
    for m in (base, sft):
        assert len(m["responses"]) == len(m["ended"]) == len(m["rewards"]) == 5
        assert m["mean_reward"] == pytest.approx(sum(m["rewards"]) / 5, abs=1e-3)
        assert m["ended_rate"] == pytest.approx(sum(m["ended"]) / 5, abs=1e-3)
    wins = sum(a > b for a, b in zip(base["rewards"], sft["rewards"]))
    decided = sum(a != b for a, b in zip(base["rewards"], sft["rewards"]))
    assert base["reward_win_rate_vs_sft"] == (round(wins / decided, 4) if decided else None)
    assert "reward_win_rate_vs_sft" not in sft
    [path] = (root / "eval" / "data").glob("my-prompts-*.json")  # file-safe, with a hash of the path and split
    stored = ck.read_json(path)
    assert stored["models"]["sft"]["responses"] == sft["responses"]
    report = ck.read_json(root / "report.json")
    assert report["eval_data"][str(data)]["sft"]["mean_reward"] == sft["mean_reward"]
    assert "responses" not in report["eval_data"][str(data)]["sft"] and "base" in report["eval"]  # harness kept


def test_lab_eval_data_from_the_command_line(root, tmp_path, capsys):
    assert lab_eval(root, "--data", str(prompts_file(tmp_path)), "--models", "sft", "--data_limit", "2") == 0
    out = capsys.readouterr().out
    assert "[lab] eval on 2 prompts of" in out and "[lab] eval sft: mean_reward=" in out
    assert "eval/data/my-prompts-" in out
    assert lab_eval(root, "--models", "sft", "--data_limit", "2", "--data_split", "test") == 2  # no --data
    assert "--data_split and --data_limit only apply to prompts brought with --data" in capsys.readouterr().err


def test_lab_eval_data_needs_a_reward_model_and_at_least_one_prompt(sft_root, root, tmp_path):
    bare = tmp_path / "bare"
    for folder in ("tokenizer", "base", "sft"):
        shutil.copytree(sft_root / folder, bare / folder)
    with pytest.raises(LabError, match="no reward model to score the answers with"):
        stages.run_eval_data(str(prompts_file(tmp_path)), "micro", bare)
    with pytest.raises(LabError, match="--data_limit 0"):
        stages.run_eval_data(str(prompts_file(tmp_path)), "micro", root, data_limit=0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LabError, match="the file is empty"):
        stages.run_eval_data(str(empty), "micro", root)


def test_lab_eval_data_with_another_model_compares_it_with_sft_and_keeps_files_apart(root, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        prompts_file(folder, n=2)  # two files of one name, in two folders
    with pytest.warns(UserWarning):
        r = stages.run_eval_data(str(first / "my prompts.jsonl"), "micro", root, model=str(root / "sft"),
                                 name="copy")
        stages.run_eval_data(str(second / "my prompts.jsonl"), "micro", root, models=("sft",))
    assert list(r["models"]) == ["sft", "copy"]  # SFT answers too, for the comparison
    assert r["models"]["copy"]["responses"] == r["models"]["sft"]["responses"]
    assert r["models"]["copy"]["reward_win_rate_vs_sft"] is None  # the same answers: no prompt decided
    assert len(list((root / "eval" / "data").glob("my-prompts-*.json"))) >= 2  # neither replaced the other


def test_the_report_leaves_out_stray_files_and_stale_answers_to_your_prompts(root, tmp_path):
    data = prompts_file(tmp_path, n=2)
    with pytest.warns(UserWarning):
        stages.run_eval_data(str(data), "micro", root, models=("base", "sft"))
    (root / "eval" / "notes.json").write_text("{oops")  # files the lab did not write
    (root / "eval" / "data" / "other.json").write_text(json.dumps({"data": "x"}))
    with pytest.warns(UserWarning, match="is not an evaluation this lab wrote") as warned:
        report = stages.write_report(root)
    assert len(warned) == 2 and "notes" not in report["eval"]
    assert "reward_win_rate_vs_sft" in report["eval_data"][str(data)]["base"]
    (root / "eval" / "notes.json").unlink()
    (root / "eval" / "data" / "other.json").unlink()

    path = root / "sft" / "metrics.json"  # `lab sft` again: SFT's answers and the comparison with them are stale
    saved = path.read_text()
    ck.write_json(path, ck.read_json(path) | {"finished_at": "2999-01-01T00:00:00+00:00"})
    entry = stages.write_report(root)["eval_data"][str(data)]
    assert "sft" not in entry and "reward_win_rate_vs_sft" not in entry["base"] and "mean_reward" in entry["base"]
    path.write_text(saved)
    data.write_text(data.read_text() + json.dumps({"instruction": "One more."}) + "\n")  # the prompts changed
    report = stages.write_report(root)
    assert str(data) not in report.get("eval_data", {})
    assert any("changed since these answers were scored" in why for why in report["eval_stale"].values())


def test_bad_model_choices_for_your_prompts_are_clear_errors(root, tmp_path):
    data = str(prompts_file(tmp_path))
    with pytest.raises(LabError, match="no rlhf model in"):
        stages.run_eval_data(data, "micro", root, models=("rlhf",))
    with pytest.raises(LabError, match="could not load a model"):
        stages.run_eval_data(data, "micro", root, model="someorg/not-in-the-cache")
    with pytest.raises(LabError, match="--name my-model without --model"):
        stages.run_eval("micro", root, name="my-model")
    with pytest.raises(LabError, match="the run's own sft model"):
        stages.run_eval("micro", root, model=str(root / "sft"), name="SFT")


COUNTS = ("n_seen_in_training", "task_accuracy_unseen", "task_accuracy")


def test_sfts_reused_answers_follow_todays_reward_model_and_training_prompts(root, tmp_path):
    """`lab eval --model X` reuses SFT's stored answers for the head-to-head. After the reward model changed, SFT's
    answers were scored again but X's reward gain was taken against the old scores (X = a copy of SFT: its gain must
    be 0); after a training stage changed its prompts, SFT kept its old count of prompts seen in training; and after
    the graders changed, its old verdicts (here: a task accuracy no grader gives)."""
    run = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(root / folder, run / folder)
    assert lab_eval(run, "--models", "sft") == 0
    stored = ck.read_json(run / "eval" / "sft.json")
    assert stored["n_seen_in_training"] > 0  # micro's SFT records hold some evaluation prompts
    ck.write_json(run / "eval" / "sft.json", stored | {"task_accuracy": -1.0})  # as graded by other graders

    norm, metrics = run / "reward" / "normalization.json", run / "reward" / "metrics.json"
    ck.write_json(norm, ck.read_json(norm) | {"std": ck.read_json(norm)["std"] / 2})  # every reward doubled
    ck.write_json(metrics, ck.read_json(metrics) | {"finished_at": "2999-01-01T00:00:00+00:00"})
    for stage in ("sft", "reward"):  # trained on a file of one's own: the world's prompts they drew are not seen
        path = run / stage / "metrics.json"
        m = ck.read_json(path)
        ck.write_json(path, m | {"config": m.get("config", {}) | {"data": "mine.json"}})
    other = tmp_path / "copy of sft"
    shutil.copytree(run / "sft", other)
    assert lab_eval(run, "--model", str(other)) == 0
    res, sft = ck.read_json(run / "eval" / "copy-of-sft.json"), ck.read_json(run / "eval" / "sft.json")
    assert sft["responses"] == stored["responses"]  # reused, not generated again
    assert sft["mean_reward"] == pytest.approx(2 * stored["mean_reward"], abs=2e-4)
    assert res["responses"] == sft["responses"] and res["reward_gain_vs_sft"] == 0
    assert sft["n_seen_in_training"] == res["n_seen_in_training"] < stored["n_seen_in_training"]
    assert lab_eval(run, "--models", "sft") == 0  # evaluated afresh: the same counts
    fresh = ck.read_json(run / "eval" / "sft.json")
    assert [fresh[k] for k in COUNTS] == [sft[k] for k in COUNTS] and fresh["rewards"] == sft["rewards"]


def test_a_damaged_stored_evaluation_is_answered_again(root, tmp_path):
    """eval/sft.json is a copy to reuse for the head-to-head: cut short, SFT answers again instead of `lab eval`
    stopping at it."""
    run = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(root / folder, run / folder)
    assert lab_eval(run, "--models", "sft") == 0
    stored = ck.read_json(run / "eval" / "sft.json")
    (run / "eval" / "sft.json").write_text('{"task_accuracy": 0.', encoding="utf-8")
    other = tmp_path / "copy of sft"
    shutil.copytree(run / "sft", other)
    assert lab_eval(run, "--model", str(other)) == 0
    assert ck.read_json(run / "eval" / "sft.json")["responses"] == stored["responses"]


def test_the_validation_split_is_evaluated_apart_from_the_test_split(root, tmp_path, capsys):
    """`lab eval --split validation`: the validation prompts, kept in eval/validation/ and the report's
    "eval_validation", never mixed with the evaluation the targets are measured on; the head-to-head of another model
    is against SFT's answers to the same validation prompts."""
    run = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(root / folder, run / folder)
    assert lab_eval(run, "--models", "sft") == 0
    other = tmp_path / "other"
    shutil.copytree(root / "sft", other)
    assert lab_eval(run, "--model", str(other), "--split", "validation") == 0  # SFT answers the validation prompts too
    test, valid = ck.read_json(run / "eval" / "sft.json"), ck.read_json(run / "eval" / "validation" / "sft.json")
    assert (test["split"], valid["split"]) == ("test", "validation") and not (run / "eval" / "other.json").exists()
    heldout = len(build_world_from(WorldConfig.for_profile("micro")).heldout_countries())
    assert valid["prompts_sha256"] != test["prompts_sha256"] and (test["n_prompts"], valid["n_prompts"]) == (
        6 * 4 + 2 * heldout, 6 * 4)  # micro: 4 per task, and the test split two questions per held-out country
    duel = ck.read_json(run / "eval" / "validation" / "other.json")["head_to_head_vs_sft"]
    assert duel["n"] == 24 and duel["wins"] == duel["losses"] == 0  # a copy of SFT against SFT, prompt by prompt
    report = ck.read_json(run / "report.json")
    assert set(report["eval"]) == {"sft"} and set(report["eval_validation"]) == {"sft", "other"}
    assert (report["eval"]["sft"]["n_prompts"], report["eval_validation"]["sft"]["n_prompts"]) == (
        test["n_prompts"], 24)
    assert report["eval_validation"]["sft"]["split"] == "validation"
    assert "eval valid. sft" in capsys.readouterr().out

    path = run / "sft" / "metrics.json"  # `lab sft` again: both splits' SFT evaluations are stale, each with its fix
    ck.write_json(path, ck.read_json(path) | {"finished_at": "2999-03-01T00:00:00+00:00"})
    report = stages.write_report(run)
    assert "eval_validation" not in report and report["eval_stale"]["validation/sft"] == (
        f"the sft model was rebuilt after this evaluation: run `lab eval --profile micro --out {run} --split "
        "validation`")
    assert "against an earlier SFT model" in report["eval_stale"]["validation/other"] and "sft" in report["eval_stale"]
    assert report["eval_stale"]["validation/other"].endswith("--name other --split validation`")

    assert lab_eval(run, "--split", "validation", "--data", "prompts.json") == 2
    assert "--split chooses among the world's task prompts" in capsys.readouterr().err
    with pytest.raises(LabError, match="unknown split 'train'"):
        stages.run_eval("micro", run, models=("sft",), split="train")


@pytest.mark.parametrize("flags", [["--models", "base"], ["--model", "MICRO_BASE", "--name", "other"],
                                   ["--data", "PROMPTS"]])
def test_lab_eval_refuses_a_run_folder_of_another_profile(micro_run, tmp_path, capsys, flags):
    """Without the check, `lab eval --out runs/micro` (tiny by default) graded micro's models on tiny's world and
    wrote that over their evaluation (the report then called it stale and told the user to run the same command);
    with --model or --data it scored answers with micro's reward model under tiny's settings."""
    out = tmp_path / "run"
    for folder in ("tokenizer", "base", "eval"):
        shutil.copytree(micro_run / folder, out / folder)
    before = {p.name: p.read_text() for p in (out / "eval").iterdir()}
    flags = [{"MICRO_BASE": str(micro_run / "base"), "PROMPTS": str(prompts_file(tmp_path))}.get(f, f) for f in flags]
    capsys.readouterr()
    assert main(["eval", "--profile", "tiny", "--out", str(out), *flags]) == 2
    assert "stage was built for profile micro, not tiny. Fix: pass --profile micro" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in (out / "eval").iterdir()} == before


def test_lab_eval_data_an_answer_two_models_give_alike_is_one_reward_and_a_tie(root, tmp_path, monkeypatch):
    """Each model's answers were scored in batches of their own; a reward model's padded batches move a score a
    little with the batch's longest answer, so one answer got two rewards and counted as a win or a loss."""
    import torch

    from lab_utils import harness

    answers = {"base": ["Blue.", "Red.", "A much longer answer than the others."], "sft": ["Blue.", "Red.", "Green."]}
    monkeypatch.setattr(harness, "_load", lambda root, name, spec: (name, None))
    monkeypatch.setattr(harness, "generate_ended",
                        lambda lm, tok, prompts, *args, **kwargs: [(t, True) for t in answers[lm][:len(prompts)]])
    real = harness._reward_model(root)

    class BatchSensitive:  # the effect of padding, made large enough to survive the stored 4 decimals
        tokenizer, model = real.tokenizer, real.model

        def score(self, prompts, responses, ended):
            return torch.tensor([len(r) - 1e-3 * max(map(len, responses)) for r in responses])

    monkeypatch.setattr(harness, "_reward_model", lambda root, profile=None: BatchSensitive())
    r = stages.run_eval_data(str(prompts_file(tmp_path, n=3)), "micro", root, models=("base", "sft"), data_limit=3)
    base, sft = r["models"]["base"], r["models"]["sft"]
    assert base["rewards"][:2] == sft["rewards"][:2]  # one answer, one reward
    assert base["reward_win_rate_vs_sft"] == 1.0  # the one pair decided, won by the longer answer


def test_stored_evaluations_follow_the_training_prompts_when_others_are_evaluated(root, tmp_path):
    """`lab ppo --n_prompts N` (or any training stage with other prompts) evaluates SFT and RLHF again; base's stored
    evaluation kept the unseen-prompt numbers of the old training prompts and stood beside them in the report."""
    run = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(root / folder, run / folder)
    assert lab_eval(run, "--models", "base,sft") == 0
    before = ck.read_json(run / "eval" / "base.json")
    for stage in ("sft", "reward"):  # trained on a file of one's own: the world's prompts they drew are not seen
        path = run / stage / "metrics.json"
        m = ck.read_json(path)
        ck.write_json(path, m | {"config": m.get("config", {}) | {"data": "mine.json"}})
    assert lab_eval(run, "--models", "sft") == 0
    base, sft = ck.read_json(run / "eval" / "base.json"), ck.read_json(run / "eval" / "sft.json")
    assert base["n_seen_in_training"] == sft["n_seen_in_training"] < before["n_seen_in_training"]
    assert base["seen_sha256"] == sft["seen_sha256"] != before["seen_sha256"]
    assert base["responses"] == before["responses"] and base["mean_reward"] == before["mean_reward"]
    assert list(ck.read_json(run / "report.json")["eval"]) == ["base", "sft"]


def test_lab_eval_data_with_a_name_does_not_say_it_replaces_eval_name_json(root, tmp_path, recwarn):
    """`lab eval --data F --model X --name N` writes eval/data/, never eval/N.json: no warning that it replaced it."""
    ck.write_json(root / "eval" / "someone.json", {"task_accuracy": 0.5, "per_task": {}, "model": "/elsewhere"})
    try:
        stages.run_eval_data(str(prompts_file(tmp_path, n=2)), "micro", root, model=str(root / "sft"),
                             name="someone")
    finally:
        (root / "eval" / "someone.json").unlink()
    assert not [w for w in recwarn if "is replaced by" in str(w.message)]


def test_lab_eval_data_on_another_model_keeps_the_other_models_answers(root, tmp_path, capsys):
    """`lab eval --data F`, then `lab eval --data F --model X` (what `lab dpo --data F` prints): the second replaced
    the whole file, so base and SFT left the report's entry for F. With other settings they are replaced, and said."""
    data, other = prompts_file(tmp_path, n=2), tmp_path / "other"
    shutil.copytree(root / "sft", other)
    with pytest.warns(UserWarning):
        stages.run_eval_data(str(data), "micro", root, models=("base", "sft"))
        r = stages.run_eval_data(str(data), "micro", root, model=str(other))
    assert list(r["models"]) == ["base", "sft", "other"] and r["kept"] == ["base"]  # SFT answers again
    assert {"base", "sft", "other"} <= set(ck.read_json(root / "report.json")["eval_data"][str(data)])
    capsys.readouterr()
    with pytest.warns(UserWarning):
        r = stages.run_eval_data(str(data), "micro", root, models=("sft",), eval_max_new_tokens=8)
    assert list(r["models"]) == ["sft"] and "held base, other's answers to other prompts" in capsys.readouterr().out


def test_lab_eval_data_reads_an_adapter_folder_as_lab_eval_does(sft_root, root, tmp_path):
    """`lab eval --model runs/<p>/sft-adapter` works; with --data it stopped in AutoConfig (no config.json)."""
    with pytest.warns(UserWarning):
        r = stages.run_eval_data(str(prompts_file(tmp_path, n=1)), "micro", root, model=str(sft_root / "sft-adapter"))
    assert "sft-adapter" in r["models"]


def test_a_policy_trained_from_an_earlier_sft_model_stays_stale_when_evaluated_again(root, tmp_path, capsys):
    """`lab sft` again, then `lab eval` as the report's fix said: the old RLHF policy came back as current, with a win
    rate against an SFT model it was not trained from. Stale evaluations are listed under the table, and answers to
    your prompts that went stale are no longer dropped from the report without a word."""
    run = tmp_path / "run"
    for folder in ("tokenizer", "base", "sft", "reward"):
        shutil.copytree(root / folder, run / folder)
    shutil.copytree(run / "sft", run / "rlhf")
    ck.write_json(run / "rlhf" / "metrics.json", {"profile": "micro", "finished_at": "2999-01-01T00:00:00+00:00",
                                                  "built_from": {"sft": stages.stamp(run, "sft"),
                                                                 "reward": stages.stamp(run, "reward")}})
    data = prompts_file(tmp_path, n=1)
    with pytest.warns(UserWarning):
        stages.run_eval_data(str(data), "micro", run, models=("rlhf",))
    stages.run_eval("micro", run, models=("sft", "rlhf"))
    assert "rlhf" in ck.read_json(run / "report.json")["eval"]
    path = run / "sft" / "metrics.json"
    saved = path.read_text()
    ck.write_json(path, ck.read_json(path) | {"finished_at": "2999-06-01T00:00:00+00:00"})  # `lab sft` again
    stages.run_eval("micro", run)
    report = ck.read_json(run / "report.json")
    assert "rlhf" not in report["eval"] and report["eval_stale"]["rlhf"] == (
        f"the rlhf model was trained from an earlier SFT model: run `lab ppo --profile micro --out {run}` (or `lab run "
        f"--profile micro --out {run}`), then `lab eval --profile micro --out {run}`")
    assert "left out, stale: rlhf: the rlhf model was trained from an earlier SFT model" in stages.stage_table(report)
    [why] = [v for k, v in report["eval_stale"].items() if k.startswith("my-prompts")]
    assert why.startswith("rlhf left out: the rlhf model was trained from an earlier SFT model (build the models it "
                          "names again first): run `lab eval")
    path.write_text(saved)  # SFT as it was, and a new base model under it: the RLHF model is two stages behind
    path = run / "base" / "metrics.json"
    ck.write_json(path, ck.read_json(path) | {"finished_at": "2999-06-01T00:00:00+00:00"})
    assert stages.write_report(run)["eval_stale"]["rlhf"] == (
        "the rlhf model was built on the sft stage, which was trained from an earlier base model: run `lab run "
        f"--profile micro --out {run}`, then `lab eval --profile micro --out {run}`")
    assert main(["eval", "--profile", "micro", "--out", str(tmp_path / "empty")]) == 2  # the fix names this run
    assert f"`lab pretrain --profile micro --out {tmp_path / 'empty'}`" in capsys.readouterr().err
