"""The simulated annotator's verdicts on hand-written cases: correctness >> language >> clean ending >> concision."""

from __future__ import annotations

import random
import sqlite3

import pytest

from lab_utils import annotator as A
from lab_utils import graders as G
from lab_utils import tasks as T


def record(w, task: str, lang: str) -> dict:
    return next(r for r in T.eval_records(w, 2) if r["task"] == task and r["lang"] == lang)


def styled(w, task: str, lang: str, seed: int = 0) -> tuple[dict, dict[str, str]]:
    """One task record and its answer in every style (the same question: only the output differs)."""
    subject = T._subject(random.Random(seed), w, task, "eval")
    recs = {s: T.MAKERS[task](random.Random(seed), w, s, lang, subject) for s in T.STYLES}
    return recs["terse"], {s: r["output"] for s, r in recs.items()}


def verbose_capital(w, rec: dict) -> str:
    return T.make_capital(random.Random(0), w, "verbose", rec["lang"], w.country(rec["entity"]))["output"]


@pytest.fixture(scope="module")
def capital(micro_world):
    """An English capital question, its right answer and a wrong city."""
    rec = record(micro_world, "capital", "en")
    wrong = next(c.capital for c in micro_world.countries if c.capital != rec["answer"])
    return rec, f"{rec['answer']}.", f"{wrong}."


# ------------------------------------------------------------------ the rules, as shown to learners

def test_rubric_text_names_every_term_and_weight():
    for term, weight in A.WEIGHTS.items():
        assert f"{term}" in A.RUBRIC and f"(weight {weight})" in A.RUBRIC


def test_each_weight_beats_all_below_it():
    weights = list(A.WEIGHTS.values())
    assert all(w > sum(weights[i + 1:]) for i, w in enumerate(weights))


# ------------------------------------------------------------------ pairwise verdicts

def test_correct_terse_beats_wrong(micro_world, capital):
    rec, right, wrong = capital
    assert A.compare(micro_world, rec, right, wrong) == "A"
    assert A.compare(micro_world, rec, wrong, right) == "B"
    assert A.judge(micro_world, rec, right)["correct"] and not A.judge(micro_world, rec, wrong)["correct"]


def test_correct_but_verbose_still_beats_terse_but_wrong(micro_world, capital):
    rec, _, wrong = capital
    verbose = verbose_capital(micro_world, rec)
    assert A.judge(micro_world, rec, verbose)["correct"]
    assert A.compare(micro_world, rec, verbose, wrong) == "A"


@pytest.mark.parametrize("task", T.TASKS)
def test_terse_and_sentence_beat_verbose_in_every_task_and_language(micro_world, task):
    for lang in T.LANGS[task]:
        for seed in range(5):
            rec, out = styled(micro_world, task, lang, seed)
            assert A.compare(micro_world, rec, out["terse"], out["verbose"]) == "A", (task, lang, out)
            assert A.compare(micro_world, rec, out["verbose"], out["sentence"]) == "B", (task, lang, out)
            assert A.compare(micro_world, rec, out["terse"], out["sentence"]) == "tie", (task, lang, out)
            assert [A.rate(micro_world, rec, out[s]) for s in T.STYLES] == [5, 5, 4]


def test_chinese_question_answered_in_english_loses(micro_world):
    rec = record(micro_world, "arithmetic", "zh")
    a, b, s = rec["answer"]
    english, chinese = f"The answer is {s}.", f"{a}加{b}等于{s}。"
    j = A.judge(micro_world, rec, english)
    assert j["correct"] and j["language"] is False  # right number, wrong language: only the language term lost
    assert A.compare(micro_world, rec, english, chinese) == "B"
    assert A.compare(micro_world, rec, str(s), english) == "A"
    assert A.rate(micro_world, rec, english) == 2


def test_chinese_capital_question_answered_in_english_loses(micro_world):
    rec = record(micro_world, "capital", "zh")
    english = micro_world.country(rec["entity"]).capital + "."
    assert A.compare(micro_world, rec, english, rec["output"]) == "B"


def test_answer_without_eos_loses_to_the_same_answer_with_eos(micro_world, capital):
    rec, right, _ = capital
    assert A.compare(micro_world, rec, right, right, a_ended=True, b_ended=False) == "A"
    assert A.compare(micro_world, rec, right, right, a_ended=False, b_ended=True) == "B"
    assert A.rate(micro_world, rec, right, ended=False) == 3


def test_identical_answers_tie(micro_world, capital):
    rec, right, _ = capital
    assert A.compare(micro_world, rec, right, right) == "tie"


def test_both_wrong_is_both_bad(micro_world, capital):
    rec, right, wrong = capital
    assert A.compare(micro_world, rec, wrong, "I do not know.") == "both_bad"
    assert A.compare(micro_world, rec, wrong, wrong) == "both_bad"  # checked before "tie"
    assert A.compare(micro_world, rec, "", "   ") == "both_bad"
    assert A.compare(micro_world, rec, wrong, " ".join([right] * 4)) == "both_bad"  # wrong vs looping


def test_an_answer_to_another_task_and_a_wrong_attempt_are_both_bad(micro_world):
    """The rubric grades correctness, not relevance: "The capital of X is Y." to a clustering question and a wrong
    clustering are both unacceptable, so a head-to-head between them is left out of the win rate. That is why the
    harness reports `off_task_rate` beside it (what PPO found on tiny)."""
    rec = record(micro_world, "cluster", "en")
    off, attempt = "The capital of Norway is Oslo.", "Fruits: leek\nVegetables: pear"
    assert G.off_task(rec, off) and not G.off_task(rec, attempt)
    assert A.compare(micro_world, rec, off, attempt) == "both_bad"


def test_signed_or_decimal_sum_is_wrong_and_rated_1(micro_world):
    rec = record(micro_world, "arithmetic", "en")
    s = rec["answer"][-1]
    assert A.rate(micro_world, rec, f"{s}") == A.rate(micro_world, rec, f"{s}.0") == 5
    assert [A.rate(micro_world, rec, r) for r in (f"-{s}", f"{s}.5")] == [1, 1]
    assert A.compare(micro_world, rec, f"{s}", f"-{s}") == "A"


def test_sql_literal_or_second_statement_is_wrong_and_rated_1(micro_world):
    rec = record(micro_world, "nl2sql", "en")
    rows = G.run_sql(micro_world, rec["answer"])
    literal = " UNION ALL ".join("SELECT " + ", ".join(map(repr, row)) for row in rows)  # the right rows, no table
    assert rows and sorted(sqlite3.connect(":memory:").execute(literal).fetchall(), key=repr) == rows
    assert A.rate(micro_world, rec, rec["answer"]) == 5
    assert [A.rate(micro_world, rec, r) for r in (literal, rec["answer"] + " DROP TABLE countries;")] == [1, 1]
    assert A.compare(micro_world, rec, rec["answer"], literal) == "A"


# ------------------------------------------------------------------ degenerate and empty answers

@pytest.mark.parametrize("response", ["{a} {a} {a} {a}", "The capital is {a}. The capital is {a}. The capital is {a}",
                                      "{a}, {a}, {a}"])
def test_repeated_phrase_is_degenerate_and_rated_1(micro_world, capital, response):
    rec, right, _ = capital
    text = response.format(a=rec["answer"])
    j = A.judge(micro_world, rec, text)
    assert j["degenerate"] and j["bad"] and j["score"] == 0.0
    assert A.rate(micro_world, rec, text) == 1  # looping is bad, whatever the loop repeats (`rate`'s rubric)
    assert A.compare(micro_world, rec, right, text) == "A"


def test_chinese_loop_is_degenerate():
    assert A.is_degenerate("巴黎。巴黎。巴黎。")
    assert not A.is_degenerate("哈哈哈")  # a one-character "phrase" is too short to call a loop


def test_empty_answer_is_bad(micro_world, capital):
    rec, right, _ = capital
    assert A.score(micro_world, rec, "") == 0.0 and A.rate(micro_world, rec, "  \n") == 1
    assert A.compare(micro_world, rec, "", right) == "B"


def test_no_model_answer_of_any_style_is_judged_degenerate_or_bad(micro_world):
    for rec in T.sft_records(micro_world, 240):
        assert A.rate(micro_world, rec, rec["output"]) >= 4, rec


# ------------------------------------------------------------------ ratings agree with the ranking

def test_ratings_are_monotone_with_the_ranking(micro_world):
    rec = record(micro_world, "arithmetic", "zh")
    a, b, s = rec["answer"]
    verbose = T.make_arithmetic(random.Random(0), micro_world, "verbose", "zh", (a, b))["output"]
    ranked = [  # best first: (response, ended)
        (f"{a}加{b}等于{s}。", True), (verbose, True), (f"{s}", False), (f"The answer is {s}.", True),
        (f"{s + 1}", True), ("", True)]
    scores = [A.score(micro_world, rec, r, e) for r, e in ranked]
    rates = [A.rate(micro_world, rec, r, e) for r, e in ranked]
    assert rates == [5, 4, 3, 2, 1, 1]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0
    for i in range(len(ranked) - 2):  # every better answer wins against every worse one (the last two: both bad)
        for j in range(i + 1, len(ranked)):
            assert A.compare(micro_world, rec, ranked[i][0], ranked[j][0], ranked[i][1], ranked[j][1]) == "A"


# ------------------------------------------------------------------ prompts without a checker

def test_free_form_prompt_judges_only_ending_and_length(micro_world):
    j = A.judge(micro_world, None, "Hello there.")
    assert j["correct"] is None and j["language"] is None and j["score"] == 1.0
    assert A.compare(micro_world, None, "Hello there.", "Hello there. " + "I am happy to chat today! " * 12) == "A"
    assert A.rate(micro_world, None, "") == 1


def test_user_record_is_judged_on_language(micro_world):
    rec = {"task": "user", "lang": "zh", "instruction": "你好吗？", "input": "", "output": "我很好。", "answer": None}
    assert A.judge(micro_world, rec, "I am fine.")["language"] is False
    assert A.compare(micro_world, rec, "我很好，谢谢。", "I am fine.") == "A"


# ------------------------------------------------------------------ head-to-head

def test_win_rate_counts(micro_world, capital):
    rec, right, wrong = capital
    verbose = verbose_capital(micro_world, rec)
    pairs = [(right, wrong), (wrong, right), (right, right), (wrong, wrong), (right, verbose)]
    got = A.win_rate(micro_world, [rec] * 5, [p[0] for p in pairs], [p[1] for p in pairs])
    assert got == {"wins": 2, "losses": 1, "ties": 1, "both_bad": 1, "n": 5, "win_rate": round(2 / 3, 4),
                   "per_task": {"capital": round(2 / 3, 4)}, "task_mean": round(2 / 3, 4)}


def test_win_rate_per_task_counts_every_task_the_same(micro_world, capital):
    """Three capital wins and one sum lost: 0.75 over pairs, but a mean of 1.0 and 0.0 over the two tasks."""
    rec, right, wrong = capital
    sums = record(micro_world, "arithmetic", "en")
    s = sums["answer"][-1]
    recs, a, b = [rec] * 3 + [sums], [right] * 3 + [f"{s + 1}"], [wrong] * 3 + [f"{s}"]
    got = A.win_rate(micro_world, recs, a, b)
    assert (got["win_rate"], got["per_task"], got["task_mean"]) == (0.75, {"capital": 1.0, "arithmetic": 0.0}, 0.5)


def test_win_rate_uses_the_ended_flags(micro_world, capital):
    rec, right, _ = capital
    got = A.win_rate(micro_world, [rec, rec], [right, right], [right, right], ended_b=[False, True])
    assert (got["wins"], got["ties"], got["win_rate"]) == (1, 1, 1.0)
    got = A.win_rate(micro_world, [rec, rec], [right, right], [right, right], ended_a=[False, True])  # the model's
    assert (got["losses"], got["ties"], got["win_rate"]) == (1, 1, 0.0)


def test_win_rate_is_none_without_a_decisive_pair(micro_world, capital):
    rec, right, wrong = capital
    got = A.win_rate(micro_world, [rec, rec], [right, wrong], [right, wrong])
    assert got["win_rate"] is None and got["ties"] == 1 and got["both_bad"] == 1


def test_win_rate_rejects_lists_of_different_lengths(micro_world, capital):
    rec, right, _ = capital
    with pytest.raises(ValueError):
        A.win_rate(micro_world, [rec, rec], [right, right], [right])


def test_win_rate_task_mean_leaves_out_a_task_whose_pairs_all_tied(micro_world, capital):
    """A capital win and a tied sum: arithmetic has no decisive pair, so it has no rate (None) and stays out of the
    mean over tasks; counted as 0 it would halve a model's task_mean for answering sums as well as SFT."""
    rec, right, _ = capital
    sums = record(micro_world, "arithmetic", "en")
    s = f"{sums['answer'][-1]}"
    got = A.win_rate(micro_world, [rec, sums], [right, s], [verbose_capital(micro_world, rec), s])
    assert (got["wins"], got["ties"]) == (1, 1)
    assert got["per_task"] == {"capital": 1.0, "arithmetic": None} and got["task_mean"] == 1.0


def test_a_right_answer_a_little_over_its_length_budget_is_rated_4(micro_world, capital):
    """Rating 5 needs the whole concise term: an answer some 5% past `length_budget` is a 4, one within it a 5."""
    rec, right, _ = capital
    budget = A.length_budget(rec)
    over = f"{rec['answer']} is the capital of {rec['entity']}."
    words = iter(["It", "is", "a", "big", "old", "city", "by", "the", "sea", "and", "it", "has", "a", "port"])
    while len(over) <= budget:  # short words: just past the budget
        over += " " + next(words)
    j = A.judge(micro_world, rec, over)
    assert j["correct"] and j["language"] and 0.9 < j["concise"] < 1.0  # right, in English, slightly long
    assert A.rate(micro_world, rec, over) == 4 and A.rate(micro_world, rec, right) == 5
