"""Preference pairs, ratings and prompts from the files, vote stores and hub datasets people bring.

`pair_records` reads each record, in any accepted shape, into the internal pair `{"prompt", "chosen", "rejected"}`
(its docstring lists the shapes); this module finds the records and filters the pairs. A pair whose chosen and
rejected are identical (same text, same ending) teaches nothing (its Bradley–Terry loss is a constant log 2): it is
skipped with one warning giving the count, since public sets hold a few. A text that spells out a special token of
the model's tokenizer is an error in a file, and left out with a warning from a hub dataset or the vote store.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from . import votes
from .errors import LabError
from .data import (_hub_rows, _is_hub_id, _json_array, _not_loadable, _suffix, read_jsonl,
                   special_token_record, usable_rows, warn_left_out)
from .pair_records import Where, _fail, _literal, _text, parse_pair, prompt_of

VOTE_STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")  # the arena's SQLite store, read through `votes`


# ------------------------------------------------------------------ loading

def load_pairs(spec: str, split: str = "train", limit: int | None = None,
               special_tokens: Sequence[str] = ()) -> list[dict]:
    """Preference pairs from a .json array, a .jsonl file, an arena vote store (.db / .sqlite) or a hub
    dataset id `owner/name[:config]`.

    `limit` keeps the first records before parsing, so a later bad record does not stop a small load. No text may
    spell out one of `special_tokens` (the model's tokenizer's: `data.no_special_tokens`): in a file that is an
    error, and a hub dataset's or the vote store's record that does is left out with a warning.
    """
    rows, where = _rows(spec, split)
    if not rows:
        _fail((spec, None), "no records", "add at least one {\"prompt\", \"chosen\", \"rejected\"} record")
    rows, where = (rows[:limit], where[:limit]) if limit else (rows, where)
    hub = _is_hub_id(spec)  # a hub dataset's own `split` column (if any) is not the lab's field
    uneditable = hub or is_vote_store(spec)  # like a hub dataset, a vote store is not the user's to fix by hand
    parsed = usable_rows(rows, where, spec, uneditable, "preference pairs",
                     lambda row, at: parse_pair(row, (spec, at)) | ({} if hub else _split(row, (spec, at))))
    pairs = [p for p, at in parsed
             if not special_token_record({k: p[k] for k in ("prompt", "input", "chosen", "rejected") if k in p},
                                         special_tokens, spec, at, uneditable)]
    n_parsed = len(parsed)
    warn_left_out(spec, n_parsed - len(pairs), len(pairs))
    kept = [p for p in pairs if not _identical(p)]
    if not kept:
        _fail((spec, None), "every pair has identical chosen and rejected",
              "pair each prompt with two different responses")
    if len(kept) < len(pairs):
        warnings.warn(f"{spec}: skipped {len(pairs) - len(kept)} pair(s) whose chosen and rejected are identical",
                      stacklevel=2)
    return kept


def is_vote_store(spec: str) -> bool:
    """Whether `spec` names an arena vote store (by its extension, as `load_pairs` reads it)."""
    return _suffix(spec) in VOTE_STORE_SUFFIXES


def load_ratings(spec: str, special_tokens: Sequence[str] = ()) -> list[dict]:
    """The 1–5 ratings `spec` holds, as {"prompt", "response", "ended", "rating", "vote_id", "model"} (`prompt` as
    typed, not rendered; `ended` None where the store does not know): the arena vote store's rated answers, every
    vote's (`votes.ratings`); any other source holds pairs only and gives []. Prompt and answer are read as a vote's
    pair reads them (surrounding whitespace stripped), so a rating's prompt is its pair's; a rating whose text spells
    out one of `special_tokens` is left out with a warning, as such a pair is (a model may sample "<|eos|>" as plain
    characters, and no one can fix a stored vote by hand)."""
    if not is_vote_store(spec):
        return []
    found, n_left_out = [], 0
    for r in votes.ratings(spec):
        at = (spec, f"vote {r['vote_id']}")
        try:  # a vote `load_pairs` leaves out (a blank prompt, stored by an older arena) is left out here too
            r = r | {"prompt": _literal(r["prompt"], at), "response": _text(r["response"], "response", at)}
        except LabError as err:
            warnings.warn(f"{spec}: left out the ratings of vote {r['vote_id']} ({err.message})", stacklevel=2)
            continue
        if special_token_record({"prompt": r["prompt"], "response": r["response"]}, special_tokens, *at, True):
            n_left_out += 1
            continue
        found.append(r)
    if n_left_out:  # the store's pairs may all be fine: no error when no rating is left
        warnings.warn(f"{spec}: left out {n_left_out} rating(s) that spell out a special token of the model's "
                      "tokenizer", stacklevel=2)
    return found


def _identical(pair: dict) -> bool:
    """Same text and, when flagged, the same ending: "4" that ended and "4" cut off encode differently."""
    return (pair["chosen"], pair.get("chosen_ended", True)) == (pair["rejected"], pair.get("rejected_ended", True))


def _split(rec: dict, at: Where) -> dict:
    """The optional `split` a record's prompt is kept in by `lab reward`: "train" or "eval" (held out)."""
    if rec.get("split") is None:
        return {}
    if rec["split"] not in ("train", "eval"):
        _fail(at, f"field 'split' is {rec['split']!r}",
              "make 'split' \"train\" or \"eval\" (held out), or leave it out to let `lab reward` split the prompts")
    return {"split": rec["split"]}


def _rows(spec: str, split: str) -> tuple[list, list[str]]:
    """The raw records and, for each, where it is (for error messages); the same rules as `data.load_alpaca`."""
    path, suffix = Path(spec), _suffix(spec)
    if suffix == ".json":
        rows = _json_array(path)
        return rows, [f"record {i + 1}" for i in range(len(rows))]
    if suffix == ".jsonl":
        rows = read_jsonl(path)
        return rows, [f"line {r.pop('_line')}" for r in rows]
    if suffix in VOTE_STORE_SUFFIXES:
        rows = votes.pairs(path)
        return rows, [f"vote {r['vote_id']}" for r in rows]
    if _is_hub_id(spec):
        rows = _hub_rows(spec, split, local=".json, .jsonl, or the arena's votes.db")
        return rows, [f"row {i + 1}" for i in range(len(rows))]
    _not_loadable(spec, "use a .json array, a .jsonl file, the arena's votes.db, or a hub dataset id")


def load_prompts(spec: str, split: str = "train", special_tokens: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The distinct prompts of a file or hub dataset, in file order, as (instruction, input) for `render_alpaca`.

    Each record may be an Alpaca record (its `instruction` and optional `input`; any `output` is ignored), a TRL
    prompt-only record (`prompt` alone, or with a `completion`), or any preference pair this module reads (its
    prompt; the replies are ignored). The arena's vote store gives its votes' prompts. A record with none of these
    is one `LabError` naming the file and the record, and so is a prompt that spells out one of `special_tokens`.
    """
    rows, where = _rows(spec, split)
    if not rows:
        _fail((spec, None), "no records", "add at least one {\"instruction\"} or {\"prompt\"} record")
    seen: dict[tuple[str, str], None] = {}
    uneditable, n_left_out = _is_hub_id(spec) or is_vote_store(spec), 0  # as `load_pairs` leaves such records out
    field = lambda row: "instruction" if isinstance(row, dict) and "instruction" in row else "prompt"  # noqa: E731
    parsed = usable_rows(rows, where, spec, uneditable, "prompts",
                     lambda row, at: (*prompt_of(row, (spec, at)), field(row)))
    for (instruction, text, asked), at in parsed:
        if special_token_record({asked: instruction, "input": text}, special_tokens, spec, at, uneditable):
            n_left_out += 1
            continue
        seen.setdefault((instruction, text))
    warn_left_out(spec, n_left_out, len(seen))
    return list(seen)
