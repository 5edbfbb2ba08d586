"""The synthetic world: one seed gives one world and one corpus, byte for byte."""

from __future__ import annotations

import pytest

from lab_utils.config import WorldConfig
from lab_utils.world import DECOY_CITIES, REAL_COUNTRIES, build_world, generate_corpus

ALPACA_MARKERS = ("### Instruction", "### Response", "Below is an instruction")
REAL_NAMES = {r[0] for r in REAL_COUNTRIES}


def corpus_bytes(seed: int, n_docs: int, corpus_seed: int | None = None) -> bytes:
    return "\n".join(generate_corpus(build_world(seed), n_docs, corpus_seed)).encode("utf-8")


def test_same_seed_same_world_and_corpus():
    assert build_world(3) == build_world(3)
    assert corpus_bytes(3, 2_000) == corpus_bytes(3, 2_000)


def test_other_seed_other_world_and_corpus():
    assert build_world(3).countries != build_world(4).countries
    assert corpus_bytes(3, 2_000) != corpus_bytes(4, 2_000)
    assert corpus_bytes(3, 2_000, corpus_seed=1) != corpus_bytes(3, 2_000, corpus_seed=2)


@pytest.mark.parametrize("n_countries", [24, 200])
def test_heldout_split(n_countries):
    w = build_world(0, n_countries=n_countries, heldout_fraction=0.2)
    assert len(w.countries) == n_countries
    assert len(w.heldout_countries()) == round(0.2 * n_countries)
    assert len(w.train_countries()) + len(w.heldout_countries()) == n_countries
    assert w.country("China").heldout and not w.country("France").heldout


def _fictional_name_clashes(seed: int) -> list[tuple[str, str]]:
    """(a, b) pairs where name a is inside name b and one of them is fictional (checkers use `in`)."""
    w = build_world(seed)
    fictional = {x for c in w.countries if c.name not in REAL_NAMES
                 for x in (c.name, c.capital, c.name_zh, c.capital_zh)}
    names = {x for c in w.countries for x in (c.name, c.capital, c.name_zh, c.capital_zh)}
    names |= {x for d in DECOY_CITIES for x in d}
    return [(a, b) for a in names for b in names if a != b and a in b and (a in fictional or b in fictional)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_fictional_name_contains_another(seed):
    assert _fictional_name_clashes(seed) == []


def test_no_fictional_name_contains_its_own_capital():
    assert _fictional_name_clashes(168) == []


def test_corpus_is_prose_never_alpaca():
    cfg = WorldConfig.for_profile("micro")
    for seed in (0, 1):
        docs = generate_corpus(build_world(seed, n_countries=cfg.n_countries), cfg.n_docs + cfg.val_docs)
        assert not [d for d in docs if any(m in d for m in ALPACA_MARKERS)]


def test_corpus_states_every_capital_in_both_languages(micro_world):
    docs = set(generate_corpus(micro_world, 1_600))
    for c in micro_world.countries:
        assert f"The capital of {c.name} is {c.capital}." in docs
        assert f"{c.name_zh}的首都是{c.capital_zh}。" in docs
