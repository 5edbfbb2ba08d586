"""The vote store: WAL mode, a retried vote counted once, export that round-trips through `load_pairs`, whether
each answer ended kept through export, an older store migrated in place when written and read as it is, a store one
may only read counted and exported without a write, no vote lost under concurrent writer
processes, and a consistent file after a writer is killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from lab_utils import votes
from lab_utils.errors import LabError
from lab_utils.preferences import load_pairs

# A writer in its own process: `votes` votes (ids "<worker>-<k>"), each sent twice the way a client retries
# after a lost reply; prints how many inserts were new. With a negative count it writes until killed.
WRITER = """
import sys
from itertools import count
from lab_utils import votes
db, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
new = 0
for k in (range(n) if n >= 0 else count()):
    for _ in range(2):
        new += votes.record_vote(db, f"{worker}-{k}", f"prompt {k}", "answer A " * 200, "answer B " * 200,
                                 "sft", "rlhf", "ab"[k % 2], voter=worker)
print(new)
"""

# The table as the first release created it (no a_ended/b_ended): stores in the wild look like this.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    vote_id    TEXT PRIMARY KEY,
    prompt     TEXT NOT NULL,
    answer_a   TEXT NOT NULL,
    answer_b   TEXT NOT NULL,
    model_a    TEXT NOT NULL,
    model_b    TEXT NOT NULL,
    choice     TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    rating_a   INTEGER CHECK (rating_a BETWEEN 1 AND 5),
    rating_b   INTEGER CHECK (rating_b BETWEEN 1 AND 5),
    voter      TEXT NOT NULL,
    created_at TEXT NOT NULL
)"""


def vote(db, vote_id: str, choice: str, **kw) -> bool:
    return votes.record_vote(db, vote_id, f"question {vote_id}?", f"answer A {vote_id}", f"answer B {vote_id}",
                             "sft", "rlhf", choice, **kw)


@pytest.fixture
def db(tmp_path) -> Path:
    return votes.init(tmp_path / "run" / votes.DB_NAME)


def writer(db: Path, worker: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), worker, str(n)], stdout=subprocess.PIPE, text=True)


def test_store_is_in_wal_mode_and_init_is_idempotent(db):
    assert votes.init(db) == db
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert votes.count(db) == {"a": 0, "b": 0, "tie": 0, "both_bad": 0}


def test_a_retried_vote_is_counted_once_and_the_first_stands(db):
    assert vote(db, "battle-1", "a", rating_a=5, rating_b=2, voter="alice") is True
    assert vote(db, "battle-1", "b", voter="alice") is False  # the retry (even with another choice) is dropped
    [row] = votes.rows(db)
    assert row == row | {"vote_id": "battle-1", "prompt": "question battle-1?", "answer_a": "answer A battle-1",
                         "model_a": "sft", "model_b": "rlhf", "choice": "a", "rating_a": 5, "rating_b": 2,
                         "voter": "alice"}
    assert row["created_at"].endswith("+00:00")


@pytest.mark.parametrize("kw, message", [({"choice": "maybe"}, "unknown choice 'maybe'"),
                                         ({"choice": "a", "rating_a": 6}, "rating_a is 6"),
                                         ({"choice": "a", "rating_b": 0}, "rating_b is 0"),
                                         ({"choice": "a", "rating_a": True}, "rating_a is True"),
                                         ({"choice": "a", "rating_b": 3.0}, r"rating_b is 3\.0"),
                                         ({"choice": "a", "rating_a": "3"}, "rating_a is '3'"),
                                         ({"choice": "a", "a_ended": 1}, "a_ended is 1. Fix: pass True"),
                                         ({"choice": "b", "b_ended": "yes"}, "b_ended is 'yes'")])
def test_bad_votes_are_lab_errors_and_store_nothing(db, kw, message):
    with pytest.raises(LabError, match=message):
        vote(db, "x", **kw)
    assert votes.rows(db) == []


def test_export_keeps_a_and_b_votes_and_round_trips_through_load_pairs(db, tmp_path):
    for vote_id, choice in (("1", "a"), ("2", "b"), ("3", "tie"), ("4", "both_bad")):
        vote(db, vote_id, choice)
    out = tmp_path / "exports" / "votes.jsonl"
    assert votes.export_pairs(db, out) == 2
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {"prompt": "question 1?", "chosen": "answer A 1", "rejected": "answer B 1", "chosen_ended": None,
         "rejected_ended": None, "vote_id": "1", "model_chosen": "sft", "model_rejected": "rlhf"},
        {"prompt": "question 2?", "chosen": "answer B 2", "rejected": "answer A 2", "chosen_ended": None,
         "rejected_ended": None, "vote_id": "2", "model_chosen": "rlhf", "model_rejected": "sft"}]
    expected = [{k: line[k] for k in ("prompt", "chosen", "rejected")} for line in lines]
    assert load_pairs(str(out)) == expected
    assert load_pairs(str(db)) == expected  # `lab reward --data votes.db` reads the store itself
    assert [p.name for p in out.parent.iterdir()] == ["votes.jsonl"]  # no temp file left beside it
    assert votes.count(db) == {"a": 1, "b": 1, "tie": 1, "both_bad": 1}  # ties and both-bad stay in the store


@pytest.mark.parametrize("prompt", ["Human:\n\nAssistant:", "Human: What is 2+2?\n\nAssistant:",
                                    "Assistant: hi\n\nAssistant:"])
def test_a_typed_prompt_that_looks_like_a_transcript_comes_back_as_typed(db, tmp_path, prompt):
    """The arena shows both models the prompt as typed. Read as an Anthropic HH transcript it either broke the whole
    store's export ("message 0 ... is empty") or came back as another prompt than the one the answers are to."""
    votes.record_vote(db, "1", prompt, "4", "5", "sft", "rlhf", "a")
    out = tmp_path / "votes.jsonl"
    votes.export_pairs(db, out)
    for spec in (out, db):
        assert load_pairs(str(spec)) == [{"prompt": prompt.strip(), "chosen": "4", "rejected": "5"}]


def test_whether_each_answer_ended_goes_from_the_vote_to_the_export(db, tmp_path):
    vote(db, "1", "a", a_ended=True, b_ended=False)   # A ended and won over a cut-off B
    vote(db, "2", "b", a_ended=True, b_ended=False)   # the cut-off B won: the flags follow the answers
    vote(db, "3", "a")                                # unknown: exported as null, so every line has the same keys
    vote(db, "4", "tie", a_ended=False, b_ended=False)
    assert [(r["a_ended"], r["b_ended"]) for r in votes.rows(db)] == [(True, False), (True, False), (None, None),
                                                                      (False, False)]
    out = tmp_path / "votes.jsonl"
    assert votes.export_pairs(db, out) == 3
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(p["chosen"], p.get("chosen_ended"), p["rejected"], p.get("rejected_ended")) for p in lines] == [
        ("answer A 1", True, "answer B 1", False),
        ("answer B 2", False, "answer A 2", True),
        ("answer A 3", None, "answer B 3", None)]
    assert {tuple(line) for line in lines} == {tuple(lines[0])}  # datasets reads a JSONL file's columns from its start
    assert votes.pairs(db) == lines  # `lab reward --data votes.db` reads the same records
    from datasets import load_dataset
    loaded = load_dataset("json", data_files=str(out), split="train")  # what `lab reward --data` and TRL use
    assert loaded["chosen_ended"] == [True, False, None]
    from lab_utils.preferences import load_pairs
    assert [(p.get("chosen_ended", True), p.get("rejected_ended", True)) for p in load_pairs(str(out))] == [
        (True, False), (False, True), (True, True)]  # unknown flags read as ended, as before they were recorded


def old_store(path: Path) -> Path:
    """A store as the first release left it: WAL, the old table, one A-better vote."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(OLD_SCHEMA)
        conn.execute("INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     ("old", "question old?", "answer A old", "answer B old", "sft", "rlhf", "a", 4, None, "bob",
                      "2025-01-01T00:00:00.000+00:00"))
    return path


def columns(db: Path) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[1:] for row in conn.execute("PRAGMA table_info(votes)")]  # (name, type, notnull, default, pk)


def test_an_old_store_is_migrated_when_written_and_its_old_votes_still_export(tmp_path, db):
    old = old_store(tmp_path / "old.db")
    before = columns(old)
    [row] = votes.rows(old)  # reading leaves it as it is: the missing columns read as NULL
    assert row["vote_id"] == "old" and (row["a_ended"], row["b_ended"]) == (None, None)
    assert votes.count(old)["a"] == 1 and votes.stored_choice(old, "old") == "a"
    assert len(votes.pairs(old)) == 1 and columns(old) == before != columns(db)
    assert votes.init(old) == old and columns(old) == columns(db)  # opening it to write adds them: a new store's table
    assert votes.init(old) == old and columns(old) == columns(db)  # init again changes nothing more
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert vote(old, "new", "b", a_ended=False, b_ended=True)
    out = tmp_path / "old.jsonl"
    assert votes.export_pairs(old, out) == 2
    first, second = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert first == {"prompt": "question old?", "chosen": "answer A old", "rejected": "answer B old",
                     "chosen_ended": None, "rejected_ended": None, "vote_id": "old", "model_chosen": "sft",
                     "model_rejected": "rlhf"}  # not recorded then: null, the same keys as the new vote's
    assert (second["chosen_ended"], second["rejected_ended"]) == (True, False)


def test_every_rated_answer_becomes_a_rating_whatever_the_vote_chose(db, tmp_path):
    """A tie's or a both-bad vote's ratings still say how good each answer was; an unrated answer gives none; an old
    store's rating is read without its ending, which was not recorded then."""
    vote(db, "v1", "a", rating_a=5, rating_b=2, a_ended=True, b_ended=False)
    vote(db, "v2", "tie", rating_b=4)
    vote(db, "v3", "both_bad", rating_a=1, rating_b=1, a_ended=True, b_ended=True)
    vote(db, "v4", "b", a_ended=True, b_ended=True)  # not rated
    assert [(r["vote_id"], r["response"], r["ended"], r["rating"], r["model"]) for r in votes.ratings(db)] == [
        ("v1", "answer A v1", True, 5, "sft"), ("v1", "answer B v1", False, 2, "rlhf"),
        ("v2", "answer B v2", None, 4, "rlhf"),
        ("v3", "answer A v3", True, 1, "sft"), ("v3", "answer B v3", True, 1, "rlhf")]
    assert [r["prompt"] for r in votes.ratings(db)][::2] == ["question v1?", "question v2?", "question v3?"]
    assert votes.ratings(old_store(tmp_path / "old.db")) == [
        {"prompt": "question old?", "response": "answer A old", "ended": None, "rating": 4, "vote_id": "old",
         "model": "sft"}]


def test_writers_opening_one_old_store_at_once_all_succeed(tmp_path):
    old = old_store(tmp_path / "old.db")
    procs = [writer(old, f"w{i}", 5) for i in range(4)]  # each one may be the first to migrate it
    assert [int(p.communicate(timeout=120)[0]) for p in procs] == [5] * 4
    assert [p.returncode for p in procs] == [0] * 4
    assert sum(votes.count(old).values()) == 21


def test_export_without_a_or_b_votes_is_a_lab_error_naming_the_store(db, tmp_path):
    vote(db, "1", "tie")
    with pytest.raises(LabError, match=r"votes\.db: no 'A is better' or 'B is better' votes yet \(1 votes in all\)"):
        votes.export_pairs(db, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_export_to_a_folder_is_a_lab_error_not_a_raw_os_error(db, tmp_path):
    vote(db, "1", "a")
    folder = tmp_path / "pairs.jsonl"
    folder.mkdir()
    with pytest.raises(LabError, match=r"pairs\.jsonl: the export's target is a folder.*Fix: name a \.jsonl file"):
        votes.export_pairs(db, folder)
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".tmp*"))


def test_export_to_a_path_that_cannot_be_written_names_the_target_not_a_temporary_file(db, tmp_path):
    vote(db, "1", "a")
    (tmp_path / "file").write_text("")
    with pytest.raises(LabError, match=r"file/pairs\.jsonl: cannot write the export \(.*\)\. Fix: name a \.jsonl"):
        votes.export_pairs(db, tmp_path / "file" / "pairs.jsonl")  # its folder is a file
    assert (tmp_path / "file").read_text() == "" and not list(tmp_path.glob(".tmp*"))


def test_export_on_a_full_disk_is_left_to_the_cli_s_full_disk_line(db, tmp_path, monkeypatch):
    import errno

    vote(db, "1", "a")
    monkeypatch.setattr(votes.ck, "write_jsonl", lambda *args: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError) as raised:  # not a LabError whose fix is another folder
        votes.export_pairs(db, tmp_path / "pairs.jsonl")
    assert not isinstance(raised.value, LabError) and raised.value.errno == errno.ENOSPC


def test_a_blank_prompt_is_refused_and_a_store_removed_under_the_arena_is_not_silently_recreated(db):
    """A whitespace-only prompt would make every later read of the store fail ("field 'prompt' is empty"), with a
    fix no one can apply to a database. A store deleted while the arena runs used to come back as an empty file
    (sqlite3 creates one) on which every later vote failed with "holds no votes table"."""
    for blank in ("", "  \n "):
        with pytest.raises(LabError, match="the vote's prompt is"):
            votes.record_vote(db, "x", blank, "4", "5", "sft", "rlhf", "a")
    assert votes.rows(db) == []
    db.unlink()
    with pytest.raises(LabError, match=r"the vote store is gone .*Fix: restart `lab app arena`"):
        vote(db, "y", "a")
    assert not db.exists()


def test_missing_or_foreign_files_are_lab_errors(tmp_path):
    with pytest.raises(LabError, match=r"nothing\.db: no vote store\. Fix: collect votes"):
        load_pairs(str(tmp_path / "nothing.db"))
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all, " * 100)
    with pytest.raises(LabError, match=r"junk\.db: not a SQLite vote store"):
        votes.rows(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LabError, match=r"other\.sqlite: holds no votes table"):
        load_pairs(str(other))
    foreign = tmp_path / "foreign.db"  # a votes table of another program's: refused, and not migrated
    sqlite3.connect(foreign).execute("CREATE TABLE votes (a)").connection.close()
    for read in (votes.count, votes.rows, lambda db: load_pairs(str(db))):
        with pytest.raises(LabError, match=r"foreign\.db: its votes table is not the arena's \(no column vote_id"):
            read(foreign)
    with closing(sqlite3.connect(foreign)) as conn:
        assert [row[1] for row in conn.execute("PRAGMA table_info(votes)")] == ["a"]


def test_eight_writer_processes_lose_nothing_and_retries_add_nothing(db):
    procs = [writer(db, f"w{i}", 25) for i in range(8)]  # each sends every one of its 25 votes twice
    new = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    assert new == [25] * 8
    rows = votes.rows(db)
    assert len(rows) == 200 and len({r["vote_id"] for r in rows}) == 200
    assert sum(votes.count(db).values()) == 200


def test_a_writer_killed_mid_way_leaves_a_consistent_store(db, tmp_path):
    proc = writer(db, "doomed", -1)
    deadline = time.monotonic() + 60
    while (n := sum(votes.count(db).values())) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert n >= 20
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = votes.rows(db)
    assert all(r["answer_a"] == "answer A " * 200 and r["answer_b"] == "answer B " * 200 for r in rows)
    assert [r["vote_id"] for r in rows] == [f"doomed-{k}" for k in range(len(rows))]  # no gap, nothing torn
    assert vote(db, "after", "a")  # the store takes new votes, and exports
    assert votes.export_pairs(db, tmp_path / "after.jsonl") == len(rows) + 1  # the writer voted only a or b


def test_a_store_locked_past_the_busy_timeout_is_a_lab_error(db, monkeypatch):
    """Another process held the write lock for the whole busy timeout: one line saying so and what to do, not a
    bare sqlite3 traceback (the arena shows a LabError's text in the browser)."""
    real = sqlite3.connect
    holder = real(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held until the test ends
    try:
        monkeypatch.setattr(votes, "BUSY_TIMEOUT_MS", 100)
        with pytest.raises(LabError, match=r"votes.db: the vote store stayed locked .*Fix: try again"):
            vote(db, "1", "a")
    finally:
        holder.rollback()
        holder.close()
    assert vote(db, "1", "a")  # free again: the same vote goes in


def read_only(monkeypatch, fail_mode_ro: bool) -> list[str]:
    """Make `votes` see a store it may not write, as another account sees a teacher's shared run (the tests run as
    root, whom no file mode stops): `os.access` denies writing, and with `fail_mode_ro` a `mode=ro` connection fails
    on its first read the way SQLite fails when it cannot create the WAL index next to the store. Returns the URIs
    opened."""
    opened, real_connect = [], sqlite3.connect
    monkeypatch.setattr(votes.os, "access", lambda path, mode: mode != os.W_OK)

    class NoIndex:  # a `mode=ro` connection where SQLite cannot create votes.db-shm
        def execute(self, *args):
            raise sqlite3.OperationalError("attempt to write a readonly database")

        def close(self):
            pass

    def connect(target, *args, **kwargs):
        opened.append(str(target))
        if fail_mode_ro and str(target).endswith("?mode=ro"):
            return NoIndex()
        return real_connect(target, *args, **kwargs)

    monkeypatch.setattr(votes.sqlite3, "connect", connect)
    return opened


def test_a_store_one_may_only_read_is_read_without_writing_it(tmp_path, db, monkeypatch):
    vote(db, "1", "a", a_ended=True, b_ended=False)
    vote(db, "2", "tie")
    old = old_store(tmp_path / "old.db")
    before = {p: p.read_bytes() for p in (db, old)}
    opened = read_only(monkeypatch, fail_mode_ro=False)
    assert votes.count(db) == {"a": 1, "b": 0, "tie": 1, "both_bad": 0}
    assert votes.export_pairs(db, tmp_path / "out.jsonl") == 1 and votes.stored_choice(db, "2") == "tie"
    [row] = votes.rows(old)  # an old store is read, not migrated
    assert (row["vote_id"], row["a_ended"]) == ("old", None) and votes.count(old)["a"] == 1
    assert opened and all(uri.startswith("file:") and uri.endswith("?mode=ro") for uri in opened)
    assert {p: p.read_bytes() for p in (db, old)} == before


def test_a_read_only_store_whose_wal_index_cannot_be_made_is_read_immutable(tmp_path, db, monkeypatch):
    vote(db, "1", "b")
    opened = read_only(monkeypatch, fail_mode_ro=True)
    assert votes.count(db)["b"] == 1 and [r["vote_id"] for r in votes.rows(db)] == ["1"]
    assert opened[-2].endswith("?mode=ro") and opened[-1].endswith("?immutable=1")


def test_a_store_that_cannot_be_written_is_a_lab_error(tmp_path, monkeypatch):
    """A run folder shared read-only: the arena says so in one line instead of a sqlite3 traceback."""
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    with pytest.raises(LabError, match=r"cannot write the vote store .* writable run folder"):
        votes.init(tmp_path / "votes.db")


def test_an_export_with_no_usable_pair_is_an_error_not_an_empty_file(tmp_path):
    """Every A/B vote spells a special token: the export wrote an empty file and printed the `lab reward` that then
    failed on it ("the file is empty. Fix: add at least one record")."""
    db = votes.init(tmp_path / "votes.db")
    votes.record_vote(db, "v1", "Say hi", "hi<|eos|>", "hello", "sft", "rlhf", "a")
    votes.record_vote(db, "v2", "Say bye", "bye", "<|pad|>", "sft", "rlhf", "b")
    with pytest.raises(LabError, match="none of the 2 'A is better' / 'B is better' votes makes a usable pair"):
        votes.export_pairs(db, tmp_path / "votes.jsonl", ["<|eos|>", "<|pad|>"])
    assert not (tmp_path / "votes.jsonl").exists()


def test_a_vote_the_pairs_loader_leaves_out_is_left_out_of_the_ratings_and_the_export(tmp_path):
    """A blank prompt, as an older arena could store it: `lab reward --data votes.db` left its pair out with a warning
    but then stopped in the ratings ("give 'prompt' the user's question", which nobody can do for a stored vote), and
    the export wrote it, so that `lab reward --data votes.jsonl` failed on it."""
    from lab_utils.preferences import load_ratings

    db = votes.init(tmp_path / "votes.db")
    votes.record_vote(db, "v1", "What is 2+2?", "4", "5", "sft", "rlhf", "a", 5, 1)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO votes (vote_id, prompt, answer_a, answer_b, model_a, model_b, choice, rating_a, "
                     "rating_b, voter, created_at) VALUES ('old', '  ', 'x', 'y', 'sft', 'rlhf', 'a', 5, 1, '', '')")
    with pytest.warns(UserWarning, match="vote old"):
        assert len(load_pairs(str(db))) == 1
    with pytest.warns(UserWarning, match="left out the ratings of vote old"):
        assert [r["vote_id"] for r in load_ratings(str(db))] == ["v1", "v1"]
    with pytest.warns(UserWarning, match="left out vote old"):
        assert votes.export_pairs(db, tmp_path / "votes.jsonl") == 1
    assert [p["prompt"] for p in load_pairs(str(tmp_path / "votes.jsonl"))] == ["What is 2+2?"]
