"""report.json after tokenizer -> pretrain -> eval on micro: the keys every later stage and app reads."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from lab_utils import checkpoints as ck
from lab_utils.config import EvalConfig, PretrainConfig
from lab_utils.modeling import count_params
from lab_utils.tasks import TASKS


@pytest.fixture(scope="module")
def report(micro_run) -> dict:
    return ck.read_json(micro_run / "report.json")


def test_tokenizer_metrics(report, tokenizer):
    m = report["stages"]["tokenizer"]
    assert {"vocab_size", "chars_per_token_en", "chars_per_token_zh", "wall_s"} <= m.keys()
    assert m["vocab_size"] == len(tokenizer)
    assert m["chars_per_token_en"] > 0 and m["chars_per_token_zh"] > 0


def test_pretrain_metrics(report, micro_run):
    m = report["stages"]["pretrain"]
    assert {"params", "train_tokens", "val_loss", "fact_accuracy", "tokens_per_s", "wall_s"} <= m.keys()
    cfg = PretrainConfig.for_profile("micro")
    assert m["train_tokens"] == cfg.max_steps * cfg.batch_size * cfg.seq_len
    assert m["params"] == count_params(AutoModelForCausalLM.from_pretrained(micro_run / "base"))
    assert isinstance(m["fact_accuracy"], float) and 0.0 <= m["fact_accuracy"] <= 1.0
    full = ck.read_json(micro_run / "base" / "metrics.json")  # the curve stays in the stage's own metrics
    assert "history" not in m and m["val_loss"] == full["history"]["val_loss"][-1]
    assert full["history"]["eval_step"] == list(range(cfg.eval_every, cfg.max_steps + 1, cfg.eval_every))


def test_eval_metrics(report, micro_world):
    m = report["eval"]["base"]
    assert set(m["per_task"]) == set(TASKS)
    assert m["task_accuracy"] == pytest.approx(sum(m["per_task"].values()) / len(TASKS), abs=1e-3)  # mean over tasks
    assert m["n_prompts"] == EvalConfig.for_profile("micro").n_per_task * len(TASKS) + \
        2 * len(micro_world.heldout_countries())


def test_base_model_folder_is_complete(micro_run):
    names = {p.name for p in (micro_run / "base").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "lab_config.json", "metrics.json"} <= names
    assert not list(micro_run.glob(".tmp-*"))


def test_report_names_the_profile(report):
    assert report["profile"] == "micro"


def test_the_fact_probe_wants_the_capitals_whole_name(micro_world, monkeypatch):
    """A completion that only starts with the capital's letters names another city ("Parisville", "巴黎市"): wrong.
    The name followed by punctuation, a space or nothing is right."""
    from lab_utils import evaluate
    from lab_utils.world import fact_prompts

    probes = fact_prompts(micro_world)
    endings = {"en": [".", ", a city", "", "ville", "2"], "zh": ["。", "", "市"]}
    right = {"en": [True, True, True, False, False], "zh": [True, True, False]}
    by_lang = {lang: [p for p in probes if p["lang"] == lang] for lang in endings}
    chosen = [(p, e, ok) for lang in endings for p, e, ok in zip(by_lang[lang], endings[lang], right[lang])]
    monkeypatch.setattr(evaluate, "fact_prompts", lambda world: [p for p, *_ in chosen])
    monkeypatch.setattr(evaluate, "generate", lambda model, tok, prompts, **kw: [" " + p["answer"] + e
                                                                               for p, e, _ in chosen])
    res = evaluate.fact_accuracy(None, None, micro_world)
    assert [s["correct"] for s in res["samples"]] == [ok for *_, ok in chosen]
    assert res["fact_accuracy_en"] == 0.6 and res["fact_accuracy_zh"] == round(2 / 3, 4)


def test_evaluation_counts_prompts_a_training_stage_saw_and_scores_the_rest(micro_run, micro_world, monkeypatch):
    """The world's question spaces are small, so some evaluation prompts also occur in training data: the harness
    counts them and reports the accuracy on the others beside the overall one."""
    from lab_utils import evaluate, stages, tasks

    records = tasks.eval_records(micro_world, 2)[:6]
    answers = [(r["output"], True) if i % 3 else ("no idea", True) for i, r in enumerate(records)]  # 0 and 3 wrong
    monkeypatch.setattr(evaluate, "generate_ended", lambda *args, **kwargs: answers)
    assert [r["task"] for r in records] == ["capital", "capital", "arithmetic", "arithmetic", "sentiment", "sentiment"]
    seen = {(r["instruction"], r["input"]) for r in records[1:3]}  # the right capital and the right sum
    res = evaluate.evaluate_tasks(None, None, micro_world, records, seen=seen)
    assert (res["n_seen_in_training"], res["task_accuracy"], res["task_accuracy_unseen"]) == (2, 0.6667, 0.3333)
    assert res["per_task_unseen"] == {"capital": 0.0, "arithmetic": 0.0, "sentiment": 1.0}
    # both capital questions seen: a mean over the two other tasks would measure something else
    res = evaluate.evaluate_tasks(None, None, micro_world, records, seen={(r["instruction"], r["input"])
                                                                          for r in records[:2]})
    assert res["task_accuracy_unseen"] is None and res["per_task_unseen"] == {"arithmetic": 0.5, "sentiment": 1.0}
    prompts = stages.training_prompts(micro_run, "micro", micro_world)
    cfg = stages.PPOConfig.for_profile("micro")
    assert {(r["instruction"], r["input"]) for r in tasks.sft_records(micro_world, cfg.n_prompts, seed=cfg.seed + 2)} \
        <= prompts
    assert {(r["instruction"], r["input"]) for r in tasks.sft_records(micro_world, 5)} <= prompts


def test_task_accuracy_counts_every_task_the_same(micro_world, monkeypatch):
    """The held-out countries add capital questions to the 24 per task: a mean over prompts would mostly measure
    capitals. Right capitals and nothing else is 1 task of 6. An empty answer is in no language; nl2sql (SQL has none)
    is not counted in language_match."""
    from lab_utils import evaluate, tasks

    records = tasks.eval_records(micro_world, 2)
    capital = [r["task"] == "capital" for r in records]
    assert sum(capital) > len(records) / 6  # the imbalance this guards against
    answers = [(r["output"], True) if c else ("", True) for r, c in zip(records, capital)]
    monkeypatch.setattr(evaluate, "generate_ended", lambda *args, **kwargs: answers)
    res = evaluate.evaluate_tasks(None, None, micro_world, records)
    assert res["per_task"] == {t: float(t == "capital") for t in tasks.TASKS}
    assert res["task_accuracy"] == round(1 / 6, 4) and res["task_accuracy_unseen"] == round(1 / 6, 4)
    lang = [c for r, c in zip(records, capital) if r["task"] != "nl2sql"]
    assert res["language_match"] == round(sum(lang) / len(lang), 4)


def test_unseen_accuracy_is_none_when_every_prompt_was_seen(micro_world, monkeypatch):
    from lab_utils import evaluate, tasks

    records = tasks.eval_records(micro_world, 1)
    monkeypatch.setattr(evaluate, "generate_ended", lambda *args, **kwargs: [(r["output"], True) for r in records])
    res = evaluate.evaluate_tasks(None, None, micro_world, records,
                                  seen={(r["instruction"], r["input"]) for r in records})
    assert res["task_accuracy"] == 1.0 and res["task_accuracy_unseen"] is None
    assert res["n_seen_in_training"] == len(records)


def test_an_sql_question_is_held_out_only_when_it_names_a_held_out_country():
    """"How many countries are in Europe?" names no country: drawn for a held-out one, it is still a question SFT
    saw, and must not count towards the accuracy on entities SFT never saw."""
    from lab_utils import tasks
    from lab_utils.config import WorldConfig, build_world_from

    w = build_world_from(WorldConfig.for_profile("tiny"))
    sql = [r for r in tasks.eval_records(w) if r["task"] == "nl2sql"]
    by_name = {c.name: c for c in w.countries}
    drawn_for_heldout = [r for r in sql if by_name[r["entity"]].heldout]
    assert any(not r["heldout"] for r in drawn_for_heldout)  # such questions exist in tiny's evaluation set
    for r in drawn_for_heldout:
        c = by_name[r["entity"]]
        assert r["heldout"] == (c.name in r["input"] or c.capital in r["input"]), r["input"]


def test_heldout_entity_accuracy_counts_only_the_held_out_prompts(micro_world):
    """`heldout_entity_accuracy` is the accuracy on entities SFT never saw: a wrong answer to a prompt about a seen
    entity must not lower it (over all prompts it would read as task accuracy again)."""
    from lab_utils import tasks
    from lab_utils.evaluate import grade

    records = tasks.eval_records(micro_world, 2)
    held, seen = next(r for r in records if r["heldout"]), next(r for r in records if not r["heldout"])
    res = grade(micro_world, [held, seen], [held["output"], "no idea"], [True, True])
    assert res["heldout_entity_accuracy"] == 1.0 and res["per_task"][seen["task"]] < 1.0


def test_training_prompts_include_the_reward_stages_prompts(micro_world, tmp_path):
    """The reward stage samples answers to prompts of its own: an evaluation prompt among them was seen in training
    too. Most of them (micro's profile settings, no stage run yet) are in neither SFT's records nor PPO's prompts."""
    from lab_utils import tasks
    from lab_utils.harness import training_prompts
    from lab_utils.runs import CONFIGS, world_records

    def keys(stage: str) -> set[tuple]:
        records = world_records(stage, micro_world, CONFIGS[stage].for_profile("micro"))
        return set().union(*map(tasks.seen_keys, records))

    reward = keys("reward")
    assert reward - keys("sft") - keys("ppo")  # what only the reward stage's prompts add
    assert reward <= training_prompts(tmp_path, "micro", micro_world)


def test_stage_table_keeps_its_columns_for_a_long_model_name():
    from lab_utils.runs import stage_table
    evaluated = {"task_accuracy": 0.5, "per_task": {"capital": 0.5}, "wall_s": 3.0}
    report = {"stages": {"sft": {"method": "qlora", "wall_s": 113.5}},
              "eval": {"sft": evaluated, "a-long-model-name": evaluated},
              "eval_validation": {"a-long-model-name": evaluated}}
    rows = stage_table(report).splitlines()
    end = rows[0].index("wall_s") + len("wall_s")  # wall_s is right-aligned under its header, 9 wide
    for row in rows[2:]:
        label, wall = row[:end - 9], row[end - 9:end]
        assert float(wall) in (113.5, 3.0), row
        assert label.strip() and label.endswith(" "), row
    assert rows[-1].startswith("eval valid. a-long-model-name ")


def test_an_evaluation_of_other_prompts_is_not_ranked_beside_the_sft_models(tmp_path):
    """`lab run --n_per_task 8` evaluated every model on 8 prompts per task; a later stage rebuilt at the profile's
    24 re-evaluates only what it rebuilt. The base model's old numbers answer another test: stale, not ranked."""
    from lab_utils.runs import write_report

    for name, sha in (("base", "8-per-task"), ("sft", "24-per-task"), ("rlhf", "24-per-task")):
        ck.write_json(tmp_path / "eval" / f"{name}.json",
                      {"task_accuracy": 0.5, "per_task": {}, "prompts_sha256": sha})
    report = write_report(tmp_path)
    assert list(report["eval"]) == ["sft", "rlhf"]
    assert report["eval_stale"]["base"].startswith("it answered other evaluation prompts than the sft model's")


def test_each_split_of_your_prompts_keeps_its_own_report_entry(tmp_path):
    """`lab eval --data org/ds` and `lab eval --data org/ds --data_split test` write two files; the report kept one
    entry for both, whichever file came last."""
    from lab_utils.runs import write_report

    for split, reward in (("train", 0.1), ("test", 0.2)):
        ck.write_json(tmp_path / "eval" / "data" / f"ds-{split}.json", {"data": "org/ds", "data_split": split,
                      "n_prompts": 2, "models": {"sft": {"mean_reward": reward}}})
    entries = write_report(tmp_path)["eval_data"]
    assert {k: v["sft"]["mean_reward"] for k, v in entries.items()} == {"org/ds": 0.1, "org/ds (test)": 0.2}


def test_a_stale_sft_evaluation_is_not_what_the_others_are_set_against(tmp_path):
    """SFT rebuilt without an evaluation, then `lab eval --models base` at another --n_per_task: the fresh base
    evaluation is not "other prompts than sft's": sft's own is out of date, and the base one stands."""
    from lab_utils.runs import write_report

    ck.write_json(tmp_path / "sft" / "metrics.json", {"finished_at": "2026-12-02T00:00:00+00:00"})
    ck.write_json(tmp_path / "eval" / "sft.json", {"task_accuracy": 0.5, "per_task": {}, "prompts_sha256": "old",
                                                  "model_finished_at": "2026-12-01T00:00:00+00:00"})
    ck.write_json(tmp_path / "eval" / "base.json", {"task_accuracy": 0.1, "per_task": {}, "prompts_sha256": "new"})
    report = write_report(tmp_path)
    assert list(report["eval"]) == ["base"] and report["eval_stale"]["sft"].startswith("the sft model was rebuilt")


def test_evaluations_at_another_answer_length_or_with_other_seen_prompts_are_not_ranked_beside_sfts(tmp_path):
    """`lab eval --models sft --eval_max_new_tokens 8` rewrote sft.json with 8-token answers while rlhf.json kept its
    24-token ones, and both stood in one table; so did a base evaluation whose unseen-prompt numbers left out the
    training prompts of a PPO stage since rebuilt with others."""
    from lab_utils.runs import write_report

    def evaluation(tokens: int, seen: str) -> dict:
        return {"task_accuracy": 0.5, "per_task": {}, "prompts_sha256": "p", "seen_sha256": seen,
                "config": {"eval_max_new_tokens": tokens}}

    ck.write_json(tmp_path / "eval" / "sft.json", evaluation(8, "now"))
    ck.write_json(tmp_path / "eval" / "rlhf.json", evaluation(24, "now"))
    ck.write_json(tmp_path / "eval" / "base.json", evaluation(8, "before"))
    ck.write_json(tmp_path / "eval" / "mine.json", evaluation(8, "now") | {"model": "/somewhere"})
    report = write_report(tmp_path)
    assert list(report["eval"]) == ["sft", "mine"]
    assert report["eval_stale"]["rlhf"].startswith("it answered with another --eval_max_new_tokens than the sft")
    assert report["eval_stale"]["base"].startswith("its unseen-prompt numbers left out other training prompts")


def test_a_head_to_head_against_other_sft_answers_than_stored_now_is_stale(tmp_path):
    """SFT evaluated again with other answers (another answer length): RLHF's win rate and reward gain were judged
    against the SFT answers eval/sft.json no longer holds."""
    from lab_utils.runs import answers_sha256, write_report

    sft = {"task_accuracy": 0.5, "per_task": {}, "responses": ["Paris.", "4"], "ended": [True, True]}
    rlhf = {"task_accuracy": 0.5, "per_task": {}, "head_to_head_vs_sft": {"win_rate": 0.5}, "win_rate_vs_sft": 0.5}
    ck.write_json(tmp_path / "eval" / "sft.json", sft)
    ck.write_json(tmp_path / "eval" / "rlhf.json", rlhf | {"sft_answers_sha256": answers_sha256(sft)})
    assert list(write_report(tmp_path)["eval"]) == ["sft", "rlhf"]
    ck.write_json(tmp_path / "eval" / "sft.json", sft | {"responses": ["Par", "4"], "ended": [False, True]})
    report = write_report(tmp_path)
    assert list(report["eval"]) == ["sft"]
    assert report["eval_stale"]["rlhf"].startswith("its head-to-head was against other SFT answers")
    ck.write_json(tmp_path / "eval" / "rlhf.json", rlhf)  # recorded before the fingerprint: taken as it is
    assert list(write_report(tmp_path)["eval"]) == ["sft", "rlhf"]


def test_your_prompts_changed_since_their_answers_is_seen_from_any_working_folder(tmp_path, monkeypatch):
    """`lab eval --data p.jsonl` stored the path as typed; a report written from another folder (a notebook in
    labs/, `lab` with --out) found no such file there and kept answers to a changed file as current."""
    from lab_utils.runs import write_report

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = here / "p.jsonl"
    data.parent.mkdir()
    data.write_text('{"instruction": "Hi."}\n')
    ck.write_json(tmp_path / "run" / "eval" / "data" / "p.json",
                  {"data": "p.jsonl", "data_path": str(data), "data_sha256": ck.file_sha256(data), "n_prompts": 1,
                   "models": {"sft": {"mean_reward": 0.1}}})
    monkeypatch.chdir(elsewhere)
    assert "p.jsonl" in write_report(tmp_path / "run")["eval_data"]
    data.write_text('{"instruction": "Hello."}\n')
    report = write_report(tmp_path / "run")
    assert "eval_data" not in report and report["eval_stale"]["p.json"].startswith("p.jsonl changed since")


def test_sfts_stored_evaluation_is_graded_again_too_when_it_is_not_reused(micro_world, tmp_path, monkeypatch):
    """`lab eval --models base --eval_max_new_tokens 8` after a training stage changed its prompts: SFT's stored
    evaluation (another answer length: not reused) was left with the old training prompts while RLHF's was graded
    again, so RLHF was set apart from SFT for "other training prompts"."""
    from lab_utils import harness, tasks
    from lab_utils.evaluate import grade

    for stage, folder in (("pretrain", "base"), ("sft", "sft"), ("ppo", "rlhf")):
        ck.write_json(tmp_path / folder / "metrics.json", {"profile": "micro", "finished_at": stage, "config": {}})
        (tmp_path / folder / "config.json").write_text("{}")
    seen = {"now": set()}
    monkeypatch.setattr(harness, "_load", lambda root, label, spec: (None, None))
    monkeypatch.setattr(harness, "_reward_model", lambda root, profile=None: None)
    monkeypatch.setattr(harness, "training_prompts", lambda root, profile, world: seen["now"])
    monkeypatch.setattr(harness, "evaluate_tasks", lambda lm, tok, world, records, n, b, seen=None: grade(
        world, records, ["Paris."] * len(records), [True] * len(records), seen))
    harness.run_eval("micro", tmp_path)
    seen["now"] = set().union(*map(tasks.seen_keys, tasks.sft_records(micro_world, 50, seed=99)))
    harness.run_eval("micro", tmp_path, models=("base",), eval_max_new_tokens=8)
    report = ck.read_json(tmp_path / "report.json")
    assert list(report["eval"]) == ["sft", "rlhf"]  # base answered with 8 tokens: set apart for that alone
    assert report["eval_stale"]["base"].startswith("it answered with another --eval_max_new_tokens")
    assert len({ck.read_json(tmp_path / "eval" / f"{m}.json")["seen_sha256"] for m in ("base", "sft", "rlhf")}) == 1
