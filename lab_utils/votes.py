"""The arena's vote store: one SQLite file, `runs/<profile>/votes.db`, safe under many voters at once.

Why it holds up:
- WAL mode: readers never block the writer, and writers queue on a lock for up to `BUSY_TIMEOUT_MS`
  instead of failing with "database is locked" — no vote is lost when many people vote at once.
- The vote id is chosen by the client (one per battle) and is the PRIMARY KEY; a retried request meets
  `ON CONFLICT DO NOTHING`, so a vote is never counted twice.
- Each vote is one INSERT, hence one transaction, with `synchronous=FULL`: a process killed mid-write
  leaves the file as it was after the last committed vote (SQLite rolls the unfinished one back on the
  next open).
- One short-lived connection per call, so any thread or process may call any function here.

A vote compares two answers to one prompt: `choice` is "a", "b", "tie" or "both_bad"; ratings are
optional 1–5 scores per answer; `a_ended`/`b_ended` say whether each answer stopped at EOS (False: cut off
at the token limit; NULL: unknown, as in votes stored before these columns existed). `prompt` is the user's
plain text, not the rendered Alpaca prompt, as in `preferences`. Only "a" and "b" votes become preference
pairs (`pairs`, `export_pairs`), with `chosen_ended`/`rejected_ended` (null where not known) — so the reward
stage appends EOS only to answers that really ended; ties and both-bad votes stay in the database. Every rated
answer, whatever the vote's choice, becomes a rating record (`ratings`): what the reward stage's ratings model
trains on when `lab reward --data` names the store.

A store made before a column existed is brought up to `SCHEMA` when it is opened to write a vote
(`ADDED_COLUMNS`); reading (`rows`, `count`, `pairs`, `ratings`, `export_pairs`, `stored_choice`) never writes the
store, so a store one may only read can still be counted and exported.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from . import checkpoints as ck
from .data import spelled_special_token
from .errors import DISK_FULL, LabError

DB_NAME = "votes.db"  # runs/<profile>/votes.db
CHOICES = ("a", "b", "tie", "both_bad")
BUSY_TIMEOUT_MS = 30_000  # how long a writer waits for the lock before giving up
# SQLite's words when the file or its folder may not be opened (or written) as asked
NO_ACCESS = ("unable to open database file", "attempt to write a readonly database")
FIELDS = ("vote_id", "prompt", "answer_a", "answer_b", "model_a", "model_b", "choice", "rating_a", "rating_b",
          "voter", "created_at", "a_ended", "b_ended")

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    vote_id    TEXT PRIMARY KEY,  -- one per battle, chosen by the client: a retry inserts nothing
    prompt     TEXT NOT NULL,
    answer_a   TEXT NOT NULL,
    answer_b   TEXT NOT NULL,
    model_a    TEXT NOT NULL,
    model_b    TEXT NOT NULL,
    choice     TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    rating_a   INTEGER CHECK (rating_a BETWEEN 1 AND 5),
    rating_b   INTEGER CHECK (rating_b BETWEEN 1 AND 5),
    voter      TEXT NOT NULL,     -- the logged-in user name, or the browser session
    created_at TEXT NOT NULL,     -- ISO 8601, UTC
    a_ended    INTEGER CHECK (a_ended IN (0, 1)),  -- 1: answer A stopped at EOS, 0: cut off, NULL: unknown
    b_ended    INTEGER CHECK (b_ended IN (0, 1))
)"""
# Columns added after the first release, as `ALTER TABLE ... ADD COLUMN` takes them (the same text as in SCHEMA):
# an older store gains them on open, its old rows holding NULL.
ADDED_COLUMNS = {"a_ended": "INTEGER CHECK (a_ended IN (0, 1))", "b_ended": "INTEGER CHECK (b_ended IN (0, 1))"}


def db_path(root: str | os.PathLike) -> Path:
    """Where a run folder keeps its votes."""
    return Path(root) / DB_NAME


@contextmanager
def _connect(db: str | os.PathLike, *, read_only: bool = False):
    """One connection for one call. Autocommit (`isolation_level=None`): every statement is its own transaction,
    and `timeout` is SQLite's busy timeout. `read_only`: a reader (`_open_reader`) that changes no vote and no
    column, so a store one may only read (a teacher's shared run) can still be counted and exported; an older store
    is not migrated then, its missing columns read as NULL (`_select_fields`)."""
    try:
        conn = _open_reader(db) if read_only else sqlite3.connect(db, timeout=BUSY_TIMEOUT_MS / 1000,
                                                                     isolation_level=None)
        with closing(conn):
            conn.row_factory = sqlite3.Row
            if read_only:
                _arena_columns(conn, db)
            else:
                conn.execute("PRAGMA synchronous = FULL")
                _add_missing_columns(conn, db)
            yield conn
    except sqlite3.DatabaseError as err:
        if str(err) in ("file is not a database", "database disk image is malformed"):
            raise LabError(f"not a SQLite vote store ({err})", path=str(db),
                           fix="pass the votes.db the arena wrote, or move this file away") from None
        if "no such table" in str(err):
            raise LabError("holds no votes table", path=str(db),
                           fix="pass the votes.db the arena wrote (a new store is made with votes.init)") from None
        if str(err) in NO_ACCESS and read_only:
            raise LabError(f"cannot read the vote store ({err})", path=str(db),
                           fix="check that this file and its folder may be read") from None
        if str(err) in NO_ACCESS:
            raise LabError(f"cannot write the vote store ({err})", path=str(db),
                           fix="the arena needs a writable run folder: copy the run, or pass --out") from None
        if str(err) == "database is locked":  # another writer held it past the busy timeout
            raise LabError(f"the vote store stayed locked for {BUSY_TIMEOUT_MS / 1000:g} s", path=str(db),
                           fix="try again; if it persists, close whatever else holds votes.db open (a second arena, "
                               "a sqlite3 shell inside a transaction)") from None
        raise


def _open_reader(db: str | os.PathLike) -> sqlite3.Connection:
    """A connection for reading. Where the store and its folder can be written, an ordinary one: it reads through
    WAL's shared-memory index (`votes.db-shm`) and, as the last connection, removes it and the WAL file on close.
    Elsewhere (a teacher's run shared read-only) `mode=ro`, which cannot create that index when it is missing, as it
    is after every arena call has closed its connection: then `immutable=1`, which reads the file alone — what the
    arena's last connection checkpointed into it. Votes still in a WAL file there (an arena running under another
    account right now, or killed mid-way) are not seen then; nothing can be voting there from this account."""
    path = Path(db).resolve()
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    uri = path.as_uri()  # percent-encoded: a "?" or "#" in the path stays part of the path
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the first read is where WAL opens its index
        return conn
    except sqlite3.OperationalError as err:
        conn.close()
        if str(err) not in NO_ACCESS:
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def _missing_columns(conn: sqlite3.Connection) -> list[str]:
    """The `ADDED_COLUMNS` the votes table lacks (none while there is no votes table)."""
    have = {row["name"] for row in conn.execute("PRAGMA table_info(votes)")}
    return [name for name in ADDED_COLUMNS if have and name not in have]


def _arena_columns(conn: sqlite3.Connection, db) -> set[str]:
    """The votes table's columns (none while there is no votes table), after refusing a table that is not the
    arena's (another program's file, left as it is)."""
    have = {row["name"] for row in conn.execute("PRAGMA table_info(votes)")}
    lost = [name for name in FIELDS if name not in ADDED_COLUMNS and name not in have]
    if have and lost:
        raise LabError(f"its votes table is not the arena's (no column {', '.join(lost)})", path=str(db),
                       fix="pass the votes.db the arena wrote, or move this file away; it was left as it is")
    return have


def _add_missing_columns(conn: sqlite3.Connection, db) -> None:
    """Migrate an older store in place (`_arena_columns` refuses a foreign table first). Checked again inside a
    write transaction, so two processes opening one old store at once add each column once (the second waits on the
    lock, then finds nothing missing)."""
    have = _arena_columns(conn, db)  # the usual case: this one cheap read
    if not any(have and name not in have for name in ADDED_COLUMNS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name in _missing_columns(conn):  # names and types are constants of this module, never user input
            conn.execute(f"ALTER TABLE votes ADD COLUMN {name} {ADDED_COLUMNS[name]}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _select_fields(conn: sqlite3.Connection) -> str:
    """`FIELDS` as a SELECT list, an `ADDED_COLUMNS` column that an older store (read, not migrated) lacks as NULL.
    Every name is a constant of this module."""
    missing = set(_missing_columns(conn))
    return ", ".join(f"NULL AS {name}" if name in missing else name for name in FIELDS)


def init(db: str | os.PathLike) -> Path:
    """Create the store (folder, WAL mode, table) if needed; return its path. Safe to call again."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    with _connect(db) as conn:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":  # e.g. a network file system, where WAL's shared memory cannot work
            raise LabError(f"SQLite refused WAL mode (journal_mode is {mode!r})", path=str(db),
                           fix="keep the run folder on a local disk")
        conn.execute(SCHEMA)
    return db


def _existing(db: str | os.PathLike) -> Path:
    """The path of a store that must exist already (reading never creates an empty one by accident)."""
    db = Path(db)
    if db.is_dir():
        raise LabError("is a folder, not a file", path=str(db), fix="pass the votes.db file the arena wrote")
    if not db.is_file():
        raise LabError("no vote store", path=str(db), fix="collect votes first with `lab app arena`")
    return db


def record_vote(db: str | os.PathLike, vote_id: str, prompt: str, answer_a: str, answer_b: str, model_a: str,
                model_b: str, choice: str, rating_a: int | None = None, rating_b: int | None = None,
                voter: str = "", *, a_ended: bool | None = None, b_ended: bool | None = None) -> bool:
    """Store one vote; True if it was new, False if this vote id was stored before (a retry).
    `a_ended`/`b_ended`: whether answer A/B stopped at EOS (`serving.Stream.ended`); None = unknown."""
    if choice not in CHOICES:
        raise LabError(f"unknown choice {choice!r}", fix=f"vote one of {', '.join(CHOICES)}")
    for name, rating in (("rating_a", rating_a), ("rating_b", rating_b)):
        if rating is not None and (type(rating) is not int or not 1 <= rating <= 5):  # not True, not 3.0
            raise LabError(f"{name} is {rating!r}", fix="rate an answer with a whole number 1 to 5, or leave the "
                                                        "rating out")
    for name, ended in (("a_ended", a_ended), ("b_ended", b_ended)):
        if ended is not None and not isinstance(ended, bool):
            raise LabError(f"{name} is {ended!r}", fix="pass True (the answer stopped at EOS), False (cut off at "
                                                       "the token limit), or leave it out when unknown")
    if not isinstance(prompt, str) or not prompt.strip():  # it would make every later read of the store fail
        raise LabError(f"the vote's prompt is {prompt!r}", fix="vote on a battle over a non-empty prompt")
    if not Path(db).is_file():  # connecting would create an empty file, and the vote would fail on it
        raise LabError("the vote store is gone (removed since the arena started?)", path=str(db),
                       fix="restart `lab app arena`, which creates a new, empty store (and move the old one back, "
                           "if it was moved)")
    created_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    with _connect(db) as conn:
        cur = conn.execute(
            f"INSERT INTO votes ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))}) "
            "ON CONFLICT (vote_id) DO NOTHING",
            (vote_id, prompt, answer_a, answer_b, model_a, model_b, choice, rating_a, rating_b, voter, created_at,
             a_ended, b_ended))  # sqlite3 stores True/False as 1/0
        return cur.rowcount == 1


def stored_choice(db: str | os.PathLike, vote_id: str) -> str | None:
    """The choice stored under `vote_id` (None if there is no such vote): what a retried vote must report."""
    with _connect(_existing(db), read_only=True) as conn:
        row = conn.execute("SELECT choice FROM votes WHERE vote_id = ?", (vote_id,)).fetchone()
    return row["choice"] if row else None


def rows(db: str | os.PathLike) -> list[dict]:
    """Every vote as a dict (keys: `FIELDS`), oldest first; `a_ended`/`b_ended` are True, False or None."""
    with _connect(_existing(db), read_only=True) as conn:
        found = [dict(r) for r in conn.execute(f"SELECT {_select_fields(conn)} FROM votes ORDER BY rowid")]
    return [v | {k: None if v[k] is None else bool(v[k]) for k in ("a_ended", "b_ended")} for v in found]


def count(db: str | os.PathLike) -> dict[str, int]:
    """Votes per choice, every choice listed: {"a": 3, "b": 1, "tie": 0, "both_bad": 2}."""
    with _connect(_existing(db), read_only=True) as conn:
        found = dict(conn.execute("SELECT choice, COUNT(*) FROM votes GROUP BY choice").fetchall())
    return {c: found.get(c, 0) for c in CHOICES}


def pairs(db: str | os.PathLike) -> list[dict]:
    """The A-better / B-better votes as preference records {prompt, chosen, rejected, chosen_ended, rejected_ended,
    vote_id, model_chosen, model_rejected} — the shape `preferences.load_pairs` reads. `chosen_ended` and
    `rejected_ended` are booleans, or None for a vote stored before they were recorded: every record has the same
    keys, as `datasets` needs (it reads a JSONL file's columns from its first block). Ties and both-bad votes are
    left out."""
    votes = [v for v in rows(db) if v["choice"] in ("a", "b")]
    if not votes:
        raise LabError(f"no 'A is better' or 'B is better' votes yet ({sum(count(db).values())} votes in all)",
                       path=str(db), fix="vote in the arena (`lab app arena`); ties and both-bad votes make no pairs")
    out = []
    for v in votes:
        win, lose = ("a", "b") if v["choice"] == "a" else ("b", "a")
        ended = {key: v[f"{side}_ended"] for key, side in (("chosen_ended", win), ("rejected_ended", lose))}
        out.append({"prompt": v["prompt"], "chosen": v[f"answer_{win}"], "rejected": v[f"answer_{lose}"],
                    **{key: None if flag is None else bool(flag) for key, flag in ended.items()},
                    "vote_id": v["vote_id"], "model_chosen": v[f"model_{win}"], "model_rejected": v[f"model_{lose}"]})
    return out


def ratings(db: str | os.PathLike) -> list[dict]:
    """Every 1–5 rating in the store, one record per rated answer, oldest vote first: {prompt, response, ended,
    rating, vote_id, model}. Ties and both-bad votes count too: a rating says how good one answer is, whichever won.
    `ended` is None for a vote stored before it was recorded. The shape `preferences.load_ratings` reads."""
    return [{"prompt": v["prompt"], "response": v[f"answer_{side}"], "ended": v[f"{side}_ended"],
             "rating": v[f"rating_{side}"], "vote_id": v["vote_id"], "model": v[f"model_{side}"]}
            for v in rows(db) for side in ("a", "b") if v[f"rating_{side}"] is not None]


def export_pairs(db: str | os.PathLike, out: str | os.PathLike, special_tokens: Sequence[str] = ()) -> int:
    """Write the preference pairs as JSONL (temp file, then rename); return how many were written. The store itself
    is never the target: the rename would replace it, and its tie and both-bad votes, which no export holds.

    A pair that spells out one of `special_tokens` (the run's tokenizer's; a model can sample "<|eos|>" as plain
    characters) is left out with a warning, as `lab reward --data votes.db` leaves it out of the store: in a file it
    would be an error that asks the user to edit what the lab wrote."""
    if Path(out).resolve() == Path(db).resolve():
        raise LabError("the export would overwrite the vote store it reads", path=str(out),
                       fix="export to another file, e.g. --to votes.jsonl")
    if Path(out).is_dir():
        raise LabError("the export's target is a folder", path=str(out),
                       fix="name a .jsonl file to write, e.g. --to votes.jsonl")
    if Path(out).suffix.lower() != ".jsonl":
        raise LabError("the export is JSON Lines, one pair per line", path=str(out),
                       fix="name the file with a .jsonl extension (the reward stage reads it by that)")
    from .pair_records import parse_pair

    records = pairs(db)
    usable = []
    for r in records:  # a vote `lab reward --data votes.db` leaves out (a blank prompt from an older store) stays out
        try:
            parse_pair(r, (str(db), f"vote {r['vote_id']}"))
        except LabError as err:
            warnings.warn(f"{db}: left out vote {r['vote_id']}, not a usable preference pair ({err.message})",
                          stacklevel=2)
            continue
        usable.append(r)
    kept = [r for r in usable
            if not any(spelled_special_token(r[k], special_tokens) for k in ("prompt", "chosen", "rejected"))]
    if not kept:
        raise LabError(f"none of the {len(records)} 'A is better' / 'B is better' votes makes a usable pair (each "
                       "spells out a special token of the model's tokenizer, or is not a usable pair)", path=str(db),
                       fix="vote on more battles in the arena (`lab app arena`); nothing was written")
    if len(kept) < len(usable):
        warnings.warn(f"{db}: left out {len(usable) - len(kept)} of {len(records)} pairs that spell out a special "
                      "token of the model's tokenizer (`lab reward --data` leaves them out of the store too)",
                      stacklevel=2)
    try:
        ck.write_jsonl(out, kept)
    except OSError as err:  # said of the target, not of the temporary file beside it
        if err.errno in DISK_FULL:  # the CLI's line for a full disk, with its own fix
            raise
        raise LabError(f"cannot write the export ({err.strerror})", path=str(out),
                       fix="name a .jsonl file in a folder you may write to with --to") from None
    return len(kept)
