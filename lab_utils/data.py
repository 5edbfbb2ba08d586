"""Loading and validating the data users bring. Every problem is one `LabError` naming the file,
the line or record, and the fix — never a stack trace from deep inside a library.

Text for pretraining: `.txt` (one document per non-empty line), `.jsonl` (a "text" string per line), `.json`
(an array of {"text": ...} records), or a hub dataset id `owner/name[:config]` with a "text" column (profile `full`).

What a `--data` string is: a name ending in a known extension (any case: `prefs.JSON`) is a file; an existing
path is a file; otherwise `owner/name` (one slash, hub-legal characters, no leading `.`, `/` or `~`) is a hub
id, dots allowed (`allenai/tulu-2.5-preference-data`); anything else is a missing file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .errors import LabError, cause
from .world import is_chinese

BOM = "\ufeff"  # a byte-order mark: dropped at the start of a file, and of a line (files joined with `cat`)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(:[\w.-]+)?", re.ASCII)  # owner/name[:config]


def _exists(path: str | os.PathLike) -> bool:
    """`Path.exists`, with a path the system cannot even look up (a name too long, say) as one clear error."""
    try:
        return Path(path).exists()
    except OSError as err:
        raise LabError(f"cannot read this path ({err.strerror})", path=str(path)[:200],
                       fix="check the path given with --data") from None


def _read(path: Path) -> str:
    if not _exists(path):
        raise LabError("file not found", path=str(path), fix="check the path given with --data")
    if path.is_dir():  # (which file types a stage takes, its loader says)
        raise LabError("is a folder, not a file", path=str(path), fix="pass the path of the file in it, not the folder")
    try:
        # a byte-order mark (Windows editors) is dropped; line ends are left as they are: the readers split at "\n"
        # (so a stray "\r" inside a line does not end it, as `read_text`'s newline translation made it)
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:  # the line too: a byte offset alone is hard to find in a large file
        line = _line_at(err.object, err.start)
        if err.end == len(err.object) and err.reason == "unexpected end of data":  # UTF-8 up to a cut-off character
            raise LabError(f"the file ends inside a character (line {line}, byte {err.start}): it was cut off",
                           path=str(path), fix="copy or download the whole file again") from None
        raise LabError(f"not UTF-8 text (line {line}, byte {err.start})", path=str(path),
                       fix="save the file as UTF-8") from None
    except OSError as err:  # no permission to read it, an unreadable mount
        raise LabError(f"cannot read this file ({err.strerror})", path=str(path),
                       fix="check its permissions, or copy it somewhere readable") from None
    if "\x00" in text:  # valid UTF-8, but no text file holds NUL: UTF-16 without a byte-order mark, or binary data
        line = _line_at(text, text.index("\x00"))
        raise LabError("holds NUL characters: UTF-16 (without a byte-order mark) or binary, not UTF-8 text",
                       path=str(path), where=f"line {line}", fix="save the file as UTF-8")
    if not text.strip():
        raise LabError("the file is empty", path=str(path), fix="add at least one record (or document)")
    return text


def encodable(text: str, path: str, where: str | None, field: str) -> str:
    """`text` if it can be written as UTF-8; a JSON escape of half a character ("\\ud83d", an emoji cut in two, common
    in scraped text) cannot, and the tokenizer would fail on it with a bare TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise LabError(f"field '{field}' holds half of a character (a lone surrogate {text[err.start]!r} at "
                       f"character {err.start})", path=path, where=where,
                       fix="remove it, or write the whole character (e.g. \\ud83d\\ude00 for one emoji)") from None
    return text


def spelled_special_token(text: str, special_tokens: Sequence[str]) -> str | None:
    """The first of `special_tokens` that `text` spells out, if any."""
    return next((tok for tok in special_tokens if tok and tok in text), None)


def no_special_tokens(fields: dict[str, str], special_tokens: Sequence[str], path: str | None,
                      where: str | None) -> None:
    """User text must not spell out one of the model's special tokens ("<|eos|>", "<|im_end|>"): the tokenizer reads
    such text as the control token itself, so a record could end an answer midway, or train the model to write PAD
    or to open a new turn. One `LabError` naming the record and the field."""
    for field, text in fields.items():
        if hit := spelled_special_token(text, special_tokens):
            raise LabError(f"field '{field}' holds {hit!r}, which the tokenizer reads as its special token, not as "
                           "text", path=path, where=where, fix=f"remove {hit!r} or break it up (e.g. with a space)")


def special_token_record(fields: dict[str, str], special_tokens: Sequence[str], path: str, where: str | None,
                         hub: bool) -> bool:
    """Whether to leave a record out because it spells a special token (`no_special_tokens`): in a file it is one
    `LabError` the user can fix; a hub dataset (or the arena's vote store) cannot be edited, and one record of 60,000
    should not stop the stage, so there the record is left out (the loader warns with the count)."""
    try:
        no_special_tokens(fields, special_tokens, path, where)
    except LabError:
        if hub:
            return True
        raise
    return False


def warn_left_out(spec: str, n_left_out: int, n_kept: int) -> None:
    if not n_kept:
        raise LabError("every record spells out a special token of the model's tokenizer", path=spec,
                       fix="use another dataset, or a model whose special tokens the text does not contain")
    if n_left_out:
        warnings.warn(f"{spec}: left out {n_left_out} record(s) that spell out a special token of the model's "
                      "tokenizer", stacklevel=3)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON Lines file; blank lines are skipped, a bad line names its number. Lines end as `text_lines`
    says (at a line feed, CRLF too): `str.splitlines` would also split at U+2028, U+2029 or U+0085, which
    `json.dumps(..., ensure_ascii=False)` writes raw inside a string (text pasted from the web has them)."""
    path = Path(path)
    records = []
    for n, line in enumerate(text_lines(_read(path)), start=1):
        line = line.removesuffix("\r").removeprefix(BOM)  # a BOM here: a file appended with one of its own (cat)
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            array = not records and line.lstrip().startswith("[")  # a JSON array (pretty-printed or not) in a .jsonl
            raise LabError(f"malformed JSON ({err.msg}, column {err.colno})", path=str(path), where=f"line {n}",
                           fix="this looks like one JSON array: name the file .json" if array
                           else "make every line one JSON object") from None
        except RecursionError:
            raise LabError("JSON nested too deeply to read", path=str(path), where=f"line {n}",
                           fix="make every line one flat JSON object") from None
        except ValueError:
            raise _integer_too_long(path, f"line {n}") from None
        if not isinstance(rec, dict):
            raise LabError(f"expected a JSON object, got {type(rec).__name__}", path=str(path), where=f"line {n}",
                           fix="this looks like one JSON array: name the file .json" if isinstance(rec, list)
                           and not records else "make every line one JSON object")
        records.append(rec | {"_line": n})
    return records


def _suffix(spec: str) -> str:
    """The file extension, lower-cased: "prefs.JSON" -> ".json"."""
    return Path(spec).suffix.lower()


def _is_hub_id(spec: str) -> bool:
    """`owner/name[:config]` that is not a local path. Callers ask after their own file extensions."""
    return _HUB_ID.fullmatch(spec) is not None and not _exists(spec)


def read_first(loader, spec: str, split: str) -> None:
    """Read a local --data file with `loader` once before any upstream stage is looked for or any model loaded, so
    that what is wrong with it (one error naming the file, record and field) is said first, not after `lab sft` has
    been run for it; a mistyped path likewise, before "no base model" sends the user to run earlier stages. The
    stage reads it again later (with the model's tokenizer for the special-token check); a hub dataset is read then
    only (a download)."""
    from .preferences import VOTE_STORE_SUFFIXES

    # a path that does not exist is read too (the loader says "file not found"), unless it may be a hub id
    if spec and (not _is_hub_id(spec) or _suffix(spec) in (".txt", ".json", ".jsonl", *VOTE_STORE_SUFFIXES)):
        with warnings.catch_warnings():  # its warnings (pairs skipped, ...) come with the stage's own reading
            warnings.simplefilter("ignore")
            loader(spec, split)


def _not_loadable(spec: str, fix: str) -> NoReturn:
    """The error for a spec that is neither a supported file nor a hub id: missing, or of the wrong type."""
    if not _exists(spec):
        raise LabError("file not found (and not a hub dataset id owner/name)", path=spec,
                       fix="check the path given with --data")
    if Path(spec).is_dir():
        raise LabError("is a folder, not a file", path=spec, fix=fix)
    raise LabError(f"unsupported file type {Path(spec).suffix or '(none)'!r}", path=spec, fix=fix)


def text_lines(text: str) -> list[str]:
    """The lines of a text file: one document each. A line ends at "\n" (a "\r" before it goes with `.strip()`), or
    at "\r" in a file that has no "\n" (classic Mac line ends; so a one-line file without a final "\n" is split at
    a stray "\r"); a "\r" inside a line of any other file is text. `str.splitlines` would also split inside a line
    at "\r", U+2028, U+0085, a form feed and the like, cutting one document into several."""
    return text.split("\n" if "\n" in text else "\r")


def _line_at(text: str | bytes, index: int) -> int:
    """The line (from 1) that `text[index]` is on, lines ended as `text_lines` ends them."""
    nl, cr = ("\n", "\r") if isinstance(text, str) else (b"\n", b"\r")
    return text.count(nl if nl in text else cr, 0, index) + 1


def load_texts(spec: str, split: str = "train") -> list[str]:
    """Documents for pretraining from a .txt or .jsonl file or a hub dataset id."""
    path, suffix = Path(spec), _suffix(spec)
    if _exists(path) and path.is_dir():
        raise LabError("is a folder, not a file", path=spec, fix="pass a .txt, .json or .jsonl file")
    if suffix == ".txt":
        docs = [doc for line in text_lines(_read(path)) if (doc := line.strip().removeprefix(BOM).strip())]
    elif suffix in (".jsonl", ".json"):
        if suffix == ".jsonl":
            rows = read_jsonl(path)
            where, fix = [f"line {r['_line']}" for r in rows], "give every line a \"text\" string"
        else:  # a JSON array of {"text": ...} records
            rows = _json_array(path)
            where, fix = [f"record {i + 1}" for i in range(len(rows))], "make each record {\"text\": \"...\"}"
        docs = []
        for rec, at in zip(rows, where):
            if not isinstance(rec, dict):
                raise LabError(f"expected an object, got {type(rec).__name__}", path=str(path), where=at, fix=fix)
            text = rec.get("text")
            if not isinstance(text, str):
                got = ("null" if "text" in rec else "missing") if text is None else \
                    f"of type {type(text).__name__}, not a string"
                raise LabError(f"field 'text' is {got}", path=str(path), where=at, fix=fix)
            if text.strip():
                docs.append(encodable(text, str(path), at, "text"))
        if 0 < len(docs) < len(rows):  # none at all is the error below
            warnings.warn(f"{spec}: {len(rows) - len(docs)} of {len(rows)} records have an empty 'text' and were left "
                          "out", stacklevel=2)
    elif _is_hub_id(spec):
        docs = _hub_texts(spec, split)
    else:
        _not_loadable(spec, "use .txt (one document per line), .jsonl or a .json array with a 'text' field, or a hub "
                            "dataset id")
    if not docs:
        raise LabError("no non-empty documents", path=spec, fix="add text to the file")
    return docs


def _hub_texts(spec: str, split: str) -> list[str]:
    ds = _hub_dataset(spec, split, local=".txt, .json or .jsonl")
    if "text" not in ds.column_names:
        raise LabError(f"no 'text' column (columns: {ds.column_names})", path=spec, fix="pick a text dataset")
    texts = ds["text"]
    bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)), None)
    if bad is not None:
        raise LabError(f"'text' is {type(texts[bad]).__name__}, not a string", path=spec, where=f"row {bad + 1}",
                       fix="pick a dataset whose 'text' column holds strings")
    if spec.partition(":")[0].split("/")[-1].lower() == "wikitext":  # one row per line: join them into articles
        return wikitext_articles(texts)
    return [t for t in texts if t and t.strip()]


_WIKITEXT_TITLE = re.compile(r" = [^=].* = \n?")  # " = Valkyria Chronicles III = " starts an article


def wikitext_articles(lines: list[str | None]) -> list[str]:
    """wikitext keeps one row per line: a title, a section heading (" = = Gameplay = = "), a paragraph or "". Joined
    at each article's title into one document each, so that pretraining's EOS ends articles, not every paragraph."""
    articles: list[list[str]] = []
    for line in lines:
        if not line or not line.strip():
            continue
        if _WIKITEXT_TITLE.fullmatch(line) or not articles:
            articles.append([])
        articles[-1].append(line.strip())
    return ["\n".join(a) for a in articles if a]


def _hub_dataset(spec: str, split: str, local: str):
    """`name[:config]` from the hub (or its local cache); one clear error when it cannot be had, whose fix names the
    `local` file types the caller reads instead."""
    import datasets

    name, _, config = spec.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # offline, unknown id, missing split: all end the same way for the user
        raise LabError(f"could not load hub dataset ({cause(err)}); no local file has this name "
                       "either", path=spec, fix=f"check the hub id, its split (--data_split, now {split!r}) and your "
                       "network (offline, HF_HUB_OFFLINE=1 reads only the cache), or give the path of a local file "
                       f"with its extension ({local})") from None


# ------------------------------------------------------------------ Alpaca instruction data

ALPACA_FIELDS = ("instruction", "input", "output")


def load_alpaca(spec: str, split: str = "train", limit: int | None = None,
                special_tokens: Sequence[str] = ()) -> list[dict]:
    """Alpaca records {instruction, input, output} from a JSON array, JSONL, or a hub dataset id.

    `input` may be missing (it becomes ""); `instruction` and `output` must be non-empty strings, and no field may
    spell out one of `special_tokens` (the model's tokenizer's: `no_special_tokens`). LLaMA-Factory's optional
    `system` and `history` become part of the instruction (`alpaca_context`). In a file, a record that breaks these
    rules is one `LabError`; a hub dataset's is left out with a warning (it cannot be edited), unless every row is.
    """
    path, suffix = Path(spec), _suffix(spec)
    if suffix == ".json":
        rows = _json_array(path)
        where = [f"record {i + 1}" for i in range(len(rows))]
    elif suffix == ".jsonl":
        rows = read_jsonl(path)
        where = [f"line {r.pop('_line')}" for r in rows]
    elif _is_hub_id(spec):
        rows = _hub_rows(spec, split, local=".json or .jsonl")
        where = [f"row {i + 1}" for i in range(len(rows))]
    else:
        _not_loadable(spec, "use an Alpaca .json array, a .jsonl file, or a hub dataset id")
    if not rows:
        raise LabError("no records", path=spec, fix="add at least one {instruction, input, output} record")
    rows = rows[:limit] if limit else rows
    hub = _is_hub_id(spec)
    valid = usable_rows(rows, where, spec, hub, "Alpaca records", lambda row, w: (_alpaca_record(row, spec, w), row),
                        unit="rows")  # e.g. a hub dataset's few empty outputs: left out, as special tokens are
    kept = [rec for (rec, row), w in valid if not special_token_record(_alpaca_texts(row), special_tokens, spec, w, hub)]
    warn_left_out(spec, len(valid) - len(kept), len(kept))
    return kept


def usable_rows(rows: list, where: list[str], spec: str, uneditable: bool, what: str, parse,
                unit: str = "records") -> list[tuple]:
    """(parse(row, at), at) of each row. A row `parse` refuses is its one `LabError` in a file, which the user can fix;
    a hub dataset's or the vote store's is left out with one warning (neither can be edited, and a public set of
    thousands of rows may hold a few that break a rule, as Anthropic-HH does), unless every row is refused: then it
    is another layout, said with the first row's error."""
    done, refused = [], []
    for row, at in zip(rows, where):
        try:
            done.append((parse(row, at), at))
        except LabError as err:
            if not uneditable:
                raise
            refused.append(err)
    if refused and not done:
        raise refused[0]
    if refused:
        warnings.warn(f"{spec}: left out {len(refused)} of {len(rows)} {unit} that are not usable {what} (the first: "
                      f"{refused[0].where}: {refused[0].message})", stacklevel=3)
    return done


def _alpaca_texts(row: dict) -> dict[str, str]:
    """The text fields of a validated Alpaca record, as the user named them."""
    texts = {name: row.get(name) or "" for name in (*ALPACA_FIELDS, "system")}
    return texts | {f"history[{i}]": " ".join(turn) for i, turn in enumerate(row.get("history") or [])}


def _integer_too_long(path: Path, where: str | None = None) -> LabError:
    """The only ValueError `json.loads` raises besides a JSONDecodeError: an integer with more digits than the
    interpreter converts to an int."""
    return LabError(f"an integer of more than {sys.get_int_max_str_digits():,} digits", path=str(path), where=where,
                    fix="write the number as a string, or shorten it")


def _json_array(path: Path) -> list:
    text = _read(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise LabError(f"malformed JSON ({err.msg}, column {err.colno})", path=str(path), where=f"line {err.lineno}",
                       fix="fix the JSON syntax there (a JSON Lines file should end in .jsonl)") from None
    except RecursionError:
        raise LabError("JSON nested too deeply to read", path=str(path), fix="give a flat array of records") from None
    except ValueError:
        raise _integer_too_long(path) from None
    if not isinstance(data, list):
        raise LabError(f"expected a JSON array of records, got {type(data).__name__}", path=str(path),
                       fix="wrap the records in [ ... ]")
    return data


def render_prompt(turns: list[tuple[str, str]]) -> str:
    """The prompt text: the user's message, a system message first; several turns as a Human/Assistant transcript.

    >>> render_prompt([("system", "Be brief."), ("user", "Hi?")])
    'Be brief.\\n\\nHi?'
    >>> render_prompt([("user", "2+2?"), ("assistant", "4"), ("user", "And 3+3?")])
    'Human: 2+2?\\n\\nAssistant: 4\\n\\nHuman: And 3+3?'
    """
    system = [text for role, text in turns if role == "system"]
    chat = [(role, text) for role, text in turns if role != "system"]
    if len(chat) == 1:
        body = chat[0][1]
    else:
        body = "\n\n".join(f"{'Human' if role == 'user' else 'Assistant'}: {text}" for role, text in chat)
    return "\n\n".join(part for part in [*system, body] if part)


NOT_ALPACA = {  # other datasets' prompt fields beside an Alpaca instruction, and where their text goes
    "context": "move its text into 'input', Alpaca's field for the text the instruction works on (Dolly's "
               "'context')",
    "question": "move its text into 'input' (the text the instruction works on) or into 'instruction'",
    "query": "move its text into 'input' (the text the instruction works on) or into 'instruction'"}


def alpaca_context(rec: dict, instruction: str, spec: str | None, where: str | None) -> str:
    """The instruction with the earlier context of an Alpaca record in LLaMA-Factory's layout: a `system` string and
    a `history` of earlier [instruction, output] turns. They are rendered the way preference prompts are
    (`render_prompt`): the system message as a paragraph first, the turns as a Human/Assistant transcript ending
    with this instruction. Without them the instruction is returned as it is."""
    for field, fix in NOT_ALPACA.items():  # read by no stage, their text would vanish unnoticed
        value = rec.get(field)
        if value and (not isinstance(value, str) or value.strip()):  # as pair_records.PROMPT_LIKE's fields
            raise LabError(f"field '{field}' is not an Alpaca field, and its text would be dropped", path=spec,
                           where=where, fix=fix)
    system, history = rec.get("system"), rec.get("history")
    if system is not None and not isinstance(system, str):
        raise LabError(f"field 'system' is of type {type(system).__name__}, not a string", path=spec, where=where,
                       fix="make 'system' a string, or leave it out")
    if history is not None and not isinstance(history, list):
        raise LabError(f"field 'history' is of type {type(history).__name__}, not a list", path=spec, where=where,
                       fix="make 'history' a list of [instruction, output] pairs, or leave it out")
    if not (system or "").strip() and not history:
        return instruction
    turns = [("system", encodable(system, spec, where, "system").strip())] if (system or "").strip() else []
    for i, turn in enumerate(history or []):
        if not (isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) and t.strip() for t in turn)):
            raise LabError(f"field 'history[{i}]' is not an [instruction, output] pair of non-empty strings",
                           path=spec, where=where, fix="give each earlier turn as [\"question\", \"answer\"]")
        turns += [("user", encodable(turn[0], spec, where, f"history[{i}]").strip()),
                  ("assistant", encodable(turn[1], spec, where, f"history[{i}]").strip())]
    return render_prompt([*turns, ("user", instruction.strip())])


def _alpaca_record(rec, spec: str, where: str) -> dict:
    if not isinstance(rec, dict):
        raise LabError(f"expected an object, got {type(rec).__name__}", path=spec, where=where,
                       fix="make each record {\"instruction\": ..., \"input\": ..., \"output\": ...}")
    out = {}
    if "instruction" not in rec and "output" not in rec:  # another layout, not an Alpaca record with a gap
        raise LabError(f"not an Alpaca record (keys: {', '.join(map(repr, sorted(rec))) or 'none'})", path=spec,
                       where=where, fix="SFT data is Alpaca records {\"instruction\", \"input\", \"output\"}: "
                                        "convert the file (chat or preference layouts are not read here)")
    for name in ALPACA_FIELDS:
        value = rec.get(name)
        if value is None and name == "input":
            value = ""  # Alpaca's "no input" may be missing, null or empty
        if value is None:
            said = "is null" if name in rec else "is missing"
            dolly = name == "output" and "response" in rec  # databricks-dolly's layout: instruction/context/response
            fix = (f"give '{name}' a string" if not dolly else "rename 'response' to 'output'"
                   + (" and 'context' to 'input'" if "context" in rec else "") + ", Alpaca's names for them (this "
                   "looks like Dolly's layout)")
            raise LabError(f"field '{name}' {said}", path=spec, where=where, fix=fix)
        if not isinstance(value, str):
            raise LabError(f"field '{name}' is of type {type(value).__name__}, not a string", path=spec, where=where,
                           fix=f"make '{name}' a string")
        if name != "input" and not value.strip():
            raise LabError(f"field '{name}' is empty", path=spec, where=where, fix=f"give '{name}' some text")
        out[name] = encodable(value, spec, where, name)
    # surrounding whitespace goes, as `preferences.load_prompts` drops it for PPO: a whitespace-only input is no
    # input (the template without "### Input:") in every stage
    out["instruction"], out["input"] = out["instruction"].strip(), out["input"].strip()
    # the response starts right after the template's "### Response:\n": a leading newline would merge with that one
    # into one token the model never sees at inference, where the prompt ends in "\n" (an indent stays)
    out["output"] = out["output"].lstrip("\r\n")
    lang = "zh" if is_chinese(out["instruction"]) else "en"
    out["instruction"] = alpaca_context(rec, out["instruction"], spec, where)
    return out | {"task": "user", "lang": lang, "style": None,
                  "answer": None, "entity": None, "heldout": False}


def _hub_rows(spec: str, split: str, local: str) -> list[dict]:
    return list(_hub_dataset(spec, split, local))
