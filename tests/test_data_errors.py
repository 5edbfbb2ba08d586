"""Bad `--data` files end in one `error:` line naming the file, exit status 2, and no half-written model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab_utils.cli import main
from lab_utils.data import load_alpaca, load_texts
from lab_utils.errors import LabError


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def lab_pretrain(data: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--profile", "micro", "--data", str(data), "--max_steps", "2", "--out", str(out),
                 *extra])


def assert_no_model(out: Path):
    assert not (out / "base").exists() and not (out / "base-checkpoints").exists()
    assert not list(out.glob(".tmp-*"))


BAD_FILES = [  # (file name, content or None for absent, words the error line must contain)
    ("missing.txt", None, ["file not found"]),
    ("empty.txt", "", ["the file is empty"]),
    ("blank.jsonl", "\n  \n", ["the file is empty"]),
    ("bad.jsonl", '{"text": "ok"}\n{"text": "unterminated\n', ["line 2", "malformed JSON"]),
    ("number.jsonl", '{"text": "ok"}\n\n{"text": 42}\n', ["line 3", "field 'text' is", "int"]),
    ("missing_field.jsonl", '{"text": "ok"}\n{"body": "hello"}\n', ["line 2", "field 'text' is missing"]),
    ("list.jsonl", '["not", "an", "object"]\n', ["line 1", "expected a JSON object"]),
    ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), ["not UTF-8"]),
    ("latin1.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"), ["not UTF-8"]),
    ("no_extension", None, ["file not found"]),  # neither a file nor an owner/name hub id
    ("table.csv", "text\nhello\n", ["unsupported file type '.csv'"]),
    ("surrogate.jsonl", '{"text": "ok"}\n{"text": "an emoji cut in two: \\ud83d"}\n',
     ["line 2", "field 'text'", "half of a character"]),
    ("deep.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", ["line 1", "nested too deeply"]),
    ("huge.jsonl", '{"text": "ok"}\n{"text": "x", "n": ' + "9" * 5_000 + "}\n", ["line 2", "more than 4,300 digits"]),
    ("huge.json", '[{"text": "x", "n": ' + "9" * 5_000 + "}]", ["more than 4,300 digits"]),
    ("object.json", '{"text": "a whole file as one object"}', ["expected a JSON array"]),
    ("record.json", '[{"text": "ok"}, {"body": "hello"}]', ["record 2", "field 'text' is missing"]),
    ("null.jsonl", '{"text": "ok"}\n{"text": null}\n', ["line 2", "field 'text' is null"]),
    ("lines.json", '{"text": "a"}\n{"text": "b"}\n', ["malformed JSON", "should end in .jsonl"]),
    # valid UTF-8, but UTF-16 saved without a byte-order mark: every other byte is NUL
    ("utf16.txt", "hello\nworld\n".encode("utf-16-le"), ["line 1", "NUL characters", "save the file as UTF-8"]),
    # UTF-8 up to a character cut in two at the end, as an interrupted copy or download leaves it
    ("cut.jsonl", '{"text": "ok"}\n{"text": "世界'.encode("utf-8")[:-1],
     ["line 2", "ends inside a character", "cut off", "copy or download the whole file again"]),
]


@pytest.mark.parametrize("name, content, expected", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_data_is_one_error_line(tmp_path, capsys, name, content, expected):
    data = tmp_path / name
    if content is not None:
        write(data, content)
    out = tmp_path / "run"
    capsys.readouterr()
    assert lab_pretrain(data, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and str(data) in err[0]
    assert all(e in err[0] for e in expected), err[0]
    assert_no_model(out)


@pytest.mark.parametrize("name", ["bom.jsonl", "BOM.JSONL", "bom.txt"])
def test_byte_order_mark_and_upper_case_extension_are_accepted(tmp_path, name):
    line = '{"text": "hello world"}' if name.lower().endswith(".jsonl") else "hello world"
    data = write(tmp_path / name, b"\xef\xbb\xbf" + (line + "\n").encode("utf-8"))
    assert load_texts(str(data)) == ["hello world"]


def test_alpaca_json_with_byte_order_mark_and_upper_case_extension(tmp_path):
    data = write(tmp_path / "data.JSON", b"\xef\xbb\xbf" + b'[{"instruction": "Say hi.", "output": "Hi."}]')
    assert [r["output"] for r in load_alpaca(str(data))] == ["Hi."]


@pytest.mark.parametrize("load, expected", [(load_texts, "hello world"), (load_alpaca, "Hi.")])
def test_hub_id_with_a_dot_goes_to_the_hub(monkeypatch, load, expected):
    from datasets import Dataset

    row = {"text": "hello world", "instruction": "Say hi.", "input": "", "output": "Hi."}
    asked = []
    monkeypatch.setattr("lab_utils.data._hub_dataset",
                        lambda spec, split, local: asked.append(spec) or Dataset.from_list([row]))  # offline stand-in
    got = load("allenai/tulu-2.5-preference-data")
    assert asked == ["allenai/tulu-2.5-preference-data"]
    assert [r["output"] if isinstance(r, dict) else r for r in got] == [expected]


def test_wikitexts_lines_are_joined_into_articles(monkeypatch):
    """wikitext (the full profile's corpus) keeps one row per line; each article becomes one document, so that
    pretraining's EOS ends articles, not every heading and paragraph."""
    from datasets import Dataset

    rows = [" = A = \n", "", " first paragraph \n", " = = Section = = \n", " second \n", "", " = B = \n", " b \n"]
    monkeypatch.setattr("lab_utils.data._hub_dataset", lambda spec, split, local: Dataset.from_dict({"text": rows}))
    assert load_texts("Salesforce/wikitext:wikitext-103-raw-v1") == [
        "= A =\nfirst paragraph\n= = Section = =\nsecond", "= B =\nb"]
    assert load_texts("someone/line-corpus") == [r for r in rows if r.strip()]  # other datasets: a row, a document


def test_a_hub_text_column_that_is_not_strings_is_one_clear_error(monkeypatch):
    from datasets import Dataset

    monkeypatch.setattr("lab_utils.data._hub_dataset",
                        lambda spec, split, local: Dataset.from_dict({"text": [["a"], ["b", "c"]]}))
    with pytest.raises(LabError, match="org/ds, row 1: 'text' is list, not a string. Fix: pick a dataset"):
        load_texts("org/ds")


def test_a_missing_file_without_an_extension_says_so_offline(tmp_path, monkeypatch):
    """"data/pairs" is a hub id by its shape; offline (as in the tests) it cannot be had, and the error names both
    readings: a local file that is not there, and a hub id that could not be loaded."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabError, match=r"could not load hub dataset .*; no local file has this name either"
                                       r".*--data_split.*or give the path of a local file"):
        load_texts("data/pairs")


@pytest.mark.parametrize("load, types", [(load_texts, ".txt, .json or .jsonl"), (load_alpaca, ".json or .jsonl"),
                                         ("pairs", ".json, .jsonl, or the arena's votes.db")])
def test_a_hub_id_that_cannot_be_loaded_names_the_local_files_that_loader_reads(tmp_path, monkeypatch, load, types):
    """The fix offers the file types of the loader that failed: a .txt file is no way to give preference pairs."""
    from lab_utils.preferences import load_pairs

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabError) as err:
        (load_pairs if load == "pairs" else load)("owner/no-such-set")
    assert f"give the path of a local file with its extension ({types})." in str(err.value)


def test_a_text_file_is_split_into_documents_at_line_ends_only(tmp_path):
    """U+2028, U+2029, U+0085 and a form feed end no line of a text file (str.splitlines split there): a pasted
    article keeps its one document. Windows line ends are line ends."""
    data = write(tmp_path / "docs.txt", "one\u2028still one\x85and\x0cone\r\n\r\ntwo\u2029two\n")
    assert load_texts(str(data)) == ["one\u2028still one\x85and\x0cone", "two\u2029two"]


def test_a_stray_carriage_return_is_text_unless_it_is_the_files_line_end(tmp_path):
    """A "\r" inside a line (scraped text has them) split one document into two (newline translation on reading); a
    file with classic Mac line ends, "\r" alone, is still one document per line."""
    assert load_texts(str(write(tmp_path / "stray.txt", "one\rstill one\r\ntwo\n"))) == ["one\rstill one", "two"]
    assert load_texts(str(write(tmp_path / "mac.txt", "one\rtwo\r"))) == ["one", "two"]
    from lab_utils.data import read_jsonl

    rows = read_jsonl(write(tmp_path / "stray.jsonl", '{"text": "a",\r"x": 1}\n{"text": "b"}\n'))
    assert [r["_line"] for r in rows] == [1, 2]  # JSON reads a "\r" between values as a space
    mac = write(tmp_path / "mac.jsonl", '{"text": "a"}\r{"text": "b"}\r')
    assert [r["text"] for r in read_jsonl(mac)] == ["a", "b"]


def test_an_error_in_a_file_with_classic_mac_line_ends_names_its_line(tmp_path):
    """Lines end at "\r" in a file without "\n": an error names the line there too, not line 1."""
    with pytest.raises(LabError, match="line 3"):
        load_texts(str(write(tmp_path / "mac.txt", b"one\rtwo\rth\xffree\r")))
    with pytest.raises(LabError, match="line 2"):
        load_texts(str(write(tmp_path / "nul.txt", "one\rtw\x00o\r")))


def test_files_joined_with_their_byte_order_marks_load(tmp_path):
    """`cat a.jsonl b.jsonl` where b starts with a BOM: line 2 began with U+FEFF, and JSON said "Unexpected UTF-8 BOM
    (decode using utf-8-sig)" under a fix to correct the syntax; in a text file the BOM stayed in the document."""
    bom = b"\xef\xbb\xbf"
    jsonl = write(tmp_path / "joined.jsonl", bom + b'{"text": "a"}\n' + bom + b'{"text": "b"}\n')
    assert load_texts(str(jsonl)) == ["a", "b"]
    assert load_texts(str(write(tmp_path / "joined.txt", bom + b"a\n" + bom + b"b\n"))) == ["a", "b"]


def test_unknown_profile_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "run"
    data = write(tmp_path / "ok.txt", "hello world\n")
    capsys.readouterr()
    assert main(["pretrain", "--profile", "nano", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown profile 'nano'"), err
    assert "micro" in err[0]  # the fix lists the valid profiles
    assert not out.exists()


def test_process_exit_status(tmp_path):
    lab = Path(sys.executable).parent / "lab"
    data, out = tmp_path / "missing.jsonl", tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(lab), "pretrain", "--profile", "micro", "--data", str(data), "--max_steps", "2",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    # Only the last line is ours; third-party import warnings may precede it (see the report).
    assert [line for line in err if line.startswith("error:")] == [err[-1]]
    assert str(data) in err[-1] and "file not found" in err[-1]
    assert "Traceback" not in proc.stderr
    assert_no_model(out)


def test_too_short_file_names_the_file(tmp_path, capsys):
    data = write(tmp_path / "one.txt", "hello world\n")
    capsys.readouterr()
    assert lab_pretrain(data, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(data) in err[0], err
    assert_no_model(tmp_path / "run")


def test_short_first_line_does_not_sink_a_big_file(tmp_path):
    words = ("alpha", "beta", "gamma", "delta")
    long_lines = [" ".join(words[(i + j) % 4] for j in range(400)) for i in range(10)]
    data = write(tmp_path / "small.txt", "\n".join(["A short title."] + long_lines) + "\n")
    assert lab_pretrain(data, tmp_path / "run") == 0


@pytest.mark.parametrize("content", ['[{"text": "one"}, {"text": "two"}]',
                                     '[\n  {"text": "one"},\n  {"text": "two"}\n]\n'])
def test_a_json_array_of_text_records_loads(tmp_path, content):
    assert load_texts(str(write(tmp_path / "docs.json", content))) == ["one", "two"]


def test_half_a_character_in_alpaca_or_preference_data_is_one_clear_error(tmp_path):
    from lab_utils.errors import LabError
    from lab_utils.preferences import load_pairs

    alpaca = write(tmp_path / "a.json", '[{"instruction": "Hi", "output": "ok"}, {"instruction": "Hi", '
                                        '"output": "\\ud83d"}]')
    with pytest.raises(LabError, match=r"record 2: field 'output' holds half of a character"):
        load_alpaca(str(alpaca))
    pairs = write(tmp_path / "p.jsonl", '{"prompt": "Hi \\udc00", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(LabError, match=r"line 1: field 'prompt' holds half of a character"):
        load_pairs(str(pairs))


def test_a_path_too_long_for_the_file_system_is_one_error_line(tmp_path, capsys):
    data = tmp_path / ("x" * 300 + ".txt")
    assert lab_pretrain(data, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read this path" in err[0], err


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path):
    """`json.dumps(..., ensure_ascii=False)` (the lab's own exports) writes U+2028, U+2029 and U+0085 raw inside
    strings; they end no line of a JSON Lines file. `str.splitlines` split there, and the vote export of a prompt
    pasted from the web could not be read back."""
    from lab_utils import checkpoints as ck
    from lab_utils.data import read_jsonl

    rows = [{"text": "first\u2028second\u2029third\x85fourth"}, {"text": "windows\r\nline"}]
    ck.write_jsonl(tmp_path / "a.jsonl", rows)
    assert [{k: v for k, v in r.items() if k != "_line"} for r in read_jsonl(tmp_path / "a.jsonl")] == rows
    write(tmp_path / "crlf.jsonl", '{"text": "a"}\r\n\r\n{"text": "b"}\r\n')
    assert [(r["text"], r["_line"]) for r in read_jsonl(tmp_path / "crlf.jsonl")] == [("a", 1), ("b", 3)]
    assert load_texts(str(tmp_path / "a.jsonl")) == [r["text"] for r in rows]


@pytest.mark.parametrize("stage, record", [("sft", '{"instruction": "Say hi.", "output": "Hi."}'),
                                           ("reward", '{"prompt": "Say hi.", "chosen": "Hi.", "rejected": "No."}'),
                                           ("dpo", '{"prompt": "Say hi.", "chosen": "Hi.", "rejected": "No."}'),
                                           ("ppo", '{"prompt": "Say hi."}')])
def test_a_bad_data_file_is_said_before_a_missing_upstream_stage(tmp_path, capsys, stage, record):
    """In a fresh run folder a malformed --data file used to be reported only once the stage before had been built
    for it ("no SFT model ... run `lab sft` first", then, after `lab sft`, line 2): the file's error comes first."""
    data = tmp_path / "data.jsonl"
    data.write_text(record + "\n{oops\n", encoding="utf-8")
    capsys.readouterr()
    assert main([stage, "--profile", "micro", "--data", str(data), "--out", str(tmp_path / "fresh")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{data}, line 2" in err and "malformed JSON" in err, err
    data.write_text(record + "\n", encoding="utf-8")  # a good file: then the missing stage is what is said
    assert main([stage, "--profile", "micro", "--data", str(data), "--out", str(tmp_path / "fresh")]) == 2
    assert "first" in capsys.readouterr().err


def test_sft_data_in_another_layout_is_named_as_such_and_empty_text_records_are_counted(tmp_path):
    """A chat file given to `lab sft` used to get "field 'instruction' is missing. Fix: give 'instruction' a string",
    as if one record had a gap; text records with an empty 'text' were dropped without a word."""
    chat = tmp_path / "chat.json"
    chat.write_text('[{"conversations": [{"from": "human", "value": "Hi"}]}]', encoding="utf-8")
    with pytest.raises(LabError, match=r"record 1: not an Alpaca record \(keys: 'conversations'\)\. Fix: SFT data is "
                                       r"Alpaca records"):
        load_alpaca(str(chat))
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "one"}\n{"text": "  "}\n{"text": "two"}\n', encoding="utf-8")
    with pytest.warns(UserWarning, match=r"1 of 3 records have an empty 'text' and were left out"):
        assert load_texts(str(texts)) == ["one", "two"]
    latin = tmp_path / "l.txt"
    latin.write_bytes("first\nsecond caf\xe9\n".encode("latin-1"))
    with pytest.raises(LabError, match=r"not UTF-8 text \(line 2, byte 16\)"):
        load_texts(str(latin))


@pytest.mark.parametrize("command", ["pretrain", "sft", "reward", "ppo", "dpo", "eval"])
def test_a_mistyped_data_path_is_said_before_a_missing_earlier_stage(tmp_path, tok_root, capsys, command):
    """`--data` with a typo in a run folder that lacks the earlier stages: the file is named first, not "no base
    model" (or "no SFT model", "no model to evaluate"), which sends the user to run those stages before learning the
    path was wrong. For pretraining, in a folder whose tokenizer was learned from other text, no advice about that
    text comes first."""
    out = tmp_path / "run"
    if command == "pretrain":
        shutil.copytree(tok_root / "tokenizer", out / "tokenizer")
    for data in (tmp_path / "typo.json", tmp_path / "data" / "typo.jsonl"):  # data/typo.jsonl: shaped like a hub id
        capsys.readouterr()
        assert main([command, "--profile", "micro", "--data", str(data), "--out", str(out)]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {data}") and "file not found" in err[0], err
        assert "[lab]" not in captured.out, captured.out
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == (["tokenizer"] if command == "pretrain" else [])


def test_a_folder_is_not_taken_for_a_data_file_or_a_vote_store(tmp_path):
    from lab_utils.preferences import load_pairs

    for name in ("records.json", "votes.db"):
        (tmp_path / name).mkdir()
    with pytest.raises(LabError, match=r"records\.json: is a folder, not a file\. Fix: pass the path of the file in"):
        load_alpaca(str(tmp_path / "records.json"))
    with pytest.raises(LabError, match=r"votes\.db: is a folder, not a file\. Fix: pass the votes\.db file"):
        load_pairs(str(tmp_path / "votes.db"))
