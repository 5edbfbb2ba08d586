"""The task generators: every record graded right by its own grader, held-out countries kept out, the evaluation
and validation prompts apart, and prompts counted as seen in any wording."""

from __future__ import annotations

import random

import pytest

from lab_utils import graders as G
from lab_utils import tasks as T
from lab_utils.errors import LabError
from lab_utils.world import build_world


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def capital_record(world, country: str, lang: str) -> dict:
    return T.make_capital(random.Random(0), world, "terse", lang, world.country(country))


def arithmetic_record(world, a: int, b: int, lang: str = "en") -> dict:
    return T.make_arithmetic(random.Random(0), world, "terse", lang, (a, b))


# ------------------------------------------------------------------ generated records

@pytest.mark.parametrize("style", T.STYLES)
def test_every_sft_record_passes_its_checker(world, style):
    records = T.sft_records(world, 600, styles=(style,))
    assert {r["task"] for r in records} == set(T.TASKS)
    assert [r for r in records if not G.check(world, r, r["output"])] == []
    assert all(G.language_matches(r, r["output"]) for r in records)


def test_mixed_style_sft_records_pass_and_keep_heldout_out(world):
    records = T.sft_records(world, 600)
    assert {r["style"] for r in records} == set(T.STYLES)
    assert [r for r in records if not G.check(world, r, r["output"])] == []
    assert not any(r["heldout"] for r in records)
    heldout_names = {x for c in world.heldout_countries() for x in (c.name, c.name_zh)}
    leaks = [(name, r) for r in records for name in heldout_names
             if name in r["instruction"] + r["input"] + r["output"]]
    assert leaks == []


def test_eval_records_cover_every_task_and_every_heldout_country(world):
    records = T.eval_records(world, n_per_task=4)
    assert {r["task"] for r in records} == set(T.TASKS)
    heldout_capital = {(r["entity"], r["lang"]) for r in records if r["task"] == "capital" and r["heldout"]}
    assert heldout_capital == {(c.name, lang) for c in world.heldout_countries() for lang in ("en", "zh")}
    assert [r for r in records if not G.check(world, r, r["output"])] == []


def test_validation_records_are_apart_from_the_evaluation_prompts(world):
    """Settings are chosen on the validation prompts: none of them may ask what an evaluation prompt asks (the same
    text, a sum with its operands swapped, the same country's capital in any wording)."""
    records = T.validation_records(world, n_per_task=24, n_eval_per_task=24)
    asked = set().union(*map(T.seen_keys, T.eval_records(world, 24)))
    assert [r for r in records if T.seen_keys(r) & asked] == []
    assert len({(r["instruction"], r["input"]) for r in records}) == len(records) == 24 * len(T.TASKS)
    assert {(t, lang): sum(r["task"] == t and r["lang"] == lang for r in records)
            for t in T.TASKS for lang in T.LANGS[t]} == {(t, lang): 24 // len(T.LANGS[t])
                                                         for t in T.TASKS for lang in T.LANGS[t]}
    assert not any(r["heldout"] and r["task"] == "capital" for r in records)  # every one is an evaluation question
    assert [r for r in records if not G.check(world, r, r["output"])] == []
    assert records == T.validation_records(world, n_per_task=24, n_eval_per_task=24)  # the same prompts every time


def test_a_world_too_small_for_the_validation_prompts_is_one_clear_error(world):
    with pytest.raises(LabError, match=r"too few arithmetic prompts in zh .* "
                                       r"Fix: lower --n_validation_per_task \(or --n_per_task\)"):
        T.validation_records(world, n_per_task=400)


# ------------------------------------------------------------------ seen prompts

def test_a_sum_drilled_with_its_operands_swapped_counts_as_seen(world):
    en = arithmetic_record(world, 3, 5)
    zh = arithmetic_record(world, 5, 3, "zh")
    assert T.seen_keys(en) & T.seen_keys(zh) == {("sum", 3, 5)}
    assert not T.seen_keys(en) & T.seen_keys(arithmetic_record(world, 3, 6))
    cap = capital_record(world, "France", "en")  # a capital question: the country, in any wording or language
    assert T.seen_keys(cap) & T.seen_keys(capital_record(world, "France", "zh")) == {("capital", "France")}
    assert not T.seen_keys(cap) & T.seen_keys(capital_record(world, "Spain", "en"))


@pytest.mark.parametrize("typed", ["What's 3+5", "Add 3 and 5.", "5 added to 3?", "3加5是几？", "３加上５",
                                   "Add 3 to 5.", "What do you get if you add 5 to 3?", "5 more than 3?",
                                   "What is the sum of 3 and 5?", "three plus five", "Add five to 3.", "3与5相加",
                                   "3和5的和是多少？", "三加五等于几？", "三与五相加"])
def test_a_typed_sum_is_the_sum_in_any_wording(world, typed):
    """The arena refuses a typed prompt that asks an evaluation sum (votes on it would train the next reward model
    on it): "Add 3 to 5", the corpus's own wording, and Chinese numerals got through when only a sign or word
    between the two numbers counted."""
    sums = {k for k in T.typed_keys(world, typed) if k[0] == "sum"}
    assert ("sum", 3, 5) in sums, sums


def test_chinese_numerals_up_to_99_are_read():
    assert [T._chinese_number(s) for s in ("零", "七", "两", "十", "十二", "二十", "九十九")] == [0, 7, 2, 10, 12, 20, 99]
    assert not {k for k in T.typed_keys(build_world(0), "九十九个人") if k[0] == "sum"}  # no word asks for a sum
