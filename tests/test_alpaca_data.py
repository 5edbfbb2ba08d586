"""`load_alpaca`: Alpaca records from a JSON array or JSON Lines. Every bad file is one `LabError` naming the
file, the record (JSON array, 0-based "record N") or line (JSONL, 1-based "line N"), and the field; through
`lab sft` it is one `error:` line, exit status 2, and no `sft/` folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab_utils.cli import main
from lab_utils.data import ALPACA_FIELDS, load_alpaca
from lab_utils.errors import LabError



def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def alpaca_fields(records: list[dict]) -> list[dict]:
    """Only {instruction, input, output}: the loader adds bookkeeping keys (task, lang, ...) of its own."""
    return [{k: r[k] for k in ALPACA_FIELDS} for r in records]


# ------------------------------------------------------------------ valid files

def test_json_array_with_and_without_input(tmp_path):
    rows = [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
            {"instruction": "Say hello.", "output": "Hello!"}]  # no "input": it becomes ""
    data = write(tmp_path / "data.json", json.dumps(rows))
    records = load_alpaca(str(data))
    assert alpaca_fields(records) == [rows[0], {"instruction": "Say hello.", "input": "", "output": "Hello!"}]
    assert [r["lang"] for r in records] == ["en", "en"]
    assert alpaca_fields(load_alpaca(str(data), limit=1)) == [rows[0]]


def test_jsonl_skips_blank_lines(tmp_path):
    data = write(tmp_path / "data.jsonl", '{"instruction": "Name a colour.", "output": "Blue."}\n\n'
                                          '{"instruction": "Double it.", "input": "4", "output": "8"}\n')
    records = load_alpaca(str(data))
    assert alpaca_fields(records) == [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
                                      {"instruction": "Double it.", "input": "4", "output": "8"}]
    assert all("_line" not in r for r in records)  # the line numbers used for errors do not leak out


def test_chinese_text_round_trips(tmp_path):
    row = {"instruction": "把这句话翻译成英文。", "input": "我爱北京。", "output": "I love Beijing."}
    data = write(tmp_path / "zh.json", json.dumps([row], ensure_ascii=False))  # raw UTF-8, not \u escapes
    (record,) = load_alpaca(str(data))
    assert alpaca_fields([record]) == [row]
    assert record["lang"] == "zh"


# ------------------------------------------------------------------ bad files

def rec(**fields) -> dict:
    return {"instruction": "Say hi.", "input": "", "output": "Hi."} | fields


BAD_FILES = [  # (file name, content, words str(error) must contain besides the path)
    ("malformed.json", '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]',
     ["malformed JSON", "line 3"]),
    ("object.json", json.dumps(rec()), ["expected a JSON array of records, got dict"]),
    ("empty.json", "", ["the file is empty"]),
    ("blank.json", "  \n", ["the file is empty"]),
    ("empty_array.json", "[]", ["no records"]),
    ("not_object.json", json.dumps([rec(), ["Say hi.", "Hi."]]), ["record 2", "expected an object, got list"]),
    ("no_instruction.json", json.dumps([rec(), {"input": "", "output": "Hi."}]),
     ["record 2", "field 'instruction' is missing"]),
    ("no_output.json", json.dumps([{"instruction": "Say hi."}]), ["record 1", "field 'output' is missing"]),
    ("int_output.json", json.dumps([rec(), rec(), rec(output=3)]),
     ["record 3", "field 'output' is of type int, not a string"]),
    ("empty_instruction.json", json.dumps([rec(instruction="  ")]), ["record 1", "field 'instruction' is empty"]),
    ("malformed.jsonl", json.dumps(rec()) + '\n{"instruction": "a", \n', ["malformed JSON", "line 2"]),
    ("not_object.jsonl", json.dumps(rec()) + '\n"just a string"\n', ["line 2", "expected a JSON object"]),
    ("no_output.jsonl", json.dumps(rec()) + "\n\n" + json.dumps({"instruction": "Say hi."}) + "\n",
     ["line 3", "field 'output' is missing"]),  # the blank line still counts
    ("int_output.jsonl", json.dumps(rec(output=3)) + "\n", ["line 1", "field 'output' is of type int"]),
    ("data.csv", "instruction,output\nSay hi.,Hi.\n", ["unsupported file type '.csv'"]),
    ("data.txt", "Say hi.\n", ["unsupported file type '.txt'"]),
    ("pretty_array.jsonl", json.dumps([rec()], indent=2), ["line 1", "one JSON array: name the file .json"]),
    ("array.jsonl", json.dumps([rec()]), ["line 1", "one JSON array: name the file .json"]),
    ("system_int.json", json.dumps([rec(system=3)]), ["record 1", "field 'system' is of type int, not a string"]),
    ("history_str.json", json.dumps([rec(history="Hi")]), ["record 1", "field 'history' is of type str"]),
    ("history_half.json", json.dumps([rec(), rec(history=[["Hi"]])]), ["record 2", "field 'history[0]'"]),
    # databricks-dolly's layout (instruction/context/response): named as such, its text never dropped
    ("dolly.json", json.dumps([{"instruction": "Summarise.", "context": "The sky is blue.", "response": "Blue."}]),
     ["record 1", "field 'output' is missing", "rename 'response' to 'output' and 'context' to 'input'", "Dolly"]),
    ("dolly_response.json", json.dumps([{"instruction": "Say hi.", "response": "Hi."}]),
     ["field 'output' is missing", "rename 'response' to 'output', Alpaca's names"]),
    ("context.json", json.dumps([rec(), rec(context="The sky is blue.")]),
     ["record 2", "field 'context' is not an Alpaca field, and its text would be dropped", "into 'input'"]),
]


@pytest.mark.parametrize("name, content, expected", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_file_is_one_lab_error(tmp_path, name, content, expected):
    data = write(tmp_path / name, content)
    with pytest.raises(LabError) as info:
        load_alpaca(str(data))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{data}"), message
    assert all(word in message for word in expected), message


def test_missing_file(tmp_path):
    with pytest.raises(LabError, match="file not found"):
        load_alpaca(str(tmp_path / "absent.json"))


def test_a_folder_is_named_as_one(tmp_path):
    with pytest.raises(LabError, match="is a folder, not a file"):
        load_alpaca(str(tmp_path))


def test_system_and_history_become_the_instructions_context(tmp_path):
    """LLaMA-Factory's Alpaca fields: they used to be dropped, so the answer was trained without the turns it
    answers ("And in French?" with no hello to translate)."""
    row = rec(instruction="And in French?", output="Bonjour", system="You translate.",
              history=[["Say hello in German.", "Hallo"]])
    records = load_alpaca(str(write(tmp_path / "chat.json", json.dumps([row, rec(history=[], system="")]))))
    assert alpaca_fields(records) == [
        {"instruction": "You translate.\n\nHuman: Say hello in German.\n\nAssistant: Hallo\n\nHuman: And in French?",
         "input": "", "output": "Bonjour"}, rec()]


SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>"]


def test_text_that_spells_a_special_token_names_record_and_field(tmp_path):
    data = write(tmp_path / "data.json", json.dumps([rec(), rec(output="Hi.<|eos|> And more")]))
    assert len(load_alpaca(str(data))) == 2
    with pytest.raises(LabError, match=r"record 2: field 'output' holds '<\|eos\|>'"):
        load_alpaca(str(data), special_tokens=SPECIALS)
    earlier = write(tmp_path / "chat.json", json.dumps([rec(history=[["Say <|eos|>", "No."]])]))
    with pytest.raises(LabError, match=r"record 1: field 'history\[0\]' holds '<\|eos\|>'"):
        load_alpaca(str(earlier), special_tokens=SPECIALS)


def test_a_hub_dataset_leaves_out_records_that_spell_a_special_token(monkeypatch):
    """A hub dataset cannot be edited, and one record in 52,000 should not stop the stage: it is left out, counted."""
    monkeypatch.setattr("lab_utils.data._hub_rows", lambda spec, split, local: [rec(), rec(output="x <|eos|>"), rec()])
    with pytest.warns(UserWarning, match="owner/alpaca: left out 1 record"):
        assert len(load_alpaca("owner/alpaca", special_tokens=SPECIALS)) == 2
    monkeypatch.setattr("lab_utils.data._hub_rows", lambda spec, split, local: [rec(output="<|pad|>")])
    with pytest.raises(LabError, match="every record spells out a special token"):
        load_alpaca("owner/alpaca", special_tokens=SPECIALS)


def test_a_hub_dataset_leaves_out_rows_that_are_not_usable_records(monkeypatch):
    """An empty output in a hub dataset (the original Alpaca has some) cannot be fixed by the user: the row is left
    out and counted, as one spelling a special token is. A dataset whose every row fails has another layout: the
    first row's error, with its fix."""
    rows = [rec(), rec(output=""), rec(), rec(instruction=None)]
    monkeypatch.setattr("lab_utils.data._hub_rows", lambda spec, split, local: rows)
    with pytest.warns(UserWarning, match=r"owner/alpaca: left out 2 of 4 rows .*the first: row 2: field 'output' is "
                                         "empty"):
        assert [r["output"] for r in load_alpaca("owner/alpaca")] == [rec()["output"]] * 2
    monkeypatch.setattr("lab_utils.data._hub_rows", lambda spec, split, local: [{"response": "x", "instruction": "y"}])
    with pytest.raises(LabError, match=r"owner/alpaca, row 1: field 'output' is missing.*Dolly"):
        load_alpaca("owner/alpaca")


# ------------------------------------------------------------------ through `lab sft`

def lab_sft(data: Path, out: Path) -> int:
    return main(["sft", "--profile", "micro", "--data", str(data), "--out", str(out)])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def assert_no_sft(out: Path):
    assert not (out / "sft").exists() and not (out / "sft-adapter").exists()
    assert not list(out.glob(".tmp-*")) and not list(out.glob("*/.tmp-*"))


def test_cli_bad_data_is_one_error_line(micro_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(micro_run / "base", out / "base")  # a real base model, so the data is what fails
    data = write(tmp_path / "bad.json", json.dumps([rec(), rec(output=3)]))
    capsys.readouterr()
    assert lab_sft(data, out) == 2
    line = one_error_line(capsys)
    assert str(data) in line and "record 2" in line and "field 'output'" in line, line
    assert_no_sft(out)


def test_cli_refuses_text_that_spells_the_models_special_tokens(micro_run, tmp_path, capsys):
    """`lab sft` checks against the base model's own tokenizer: "<|eos|>" in an answer would train the model to end
    its answers there."""
    out = tmp_path / "run"
    shutil.copytree(micro_run / "base", out / "base")
    data = write(tmp_path / "eos.json", json.dumps([rec(), rec(instruction="Repeat: <|eos|>")]))
    capsys.readouterr()
    assert lab_sft(data, out) == 2
    line = one_error_line(capsys)
    assert "record 2: field 'instruction' holds '<|eos|>'" in line, line
    assert_no_sft(out)


def test_cli_a_data_name_too_long_to_look_up_says_so(micro_run, tmp_path, capsys):
    """Not the CLI's catch-all for a file it cannot write ("check ... --out"): the path given with --data is wrong."""
    out = tmp_path / "run"
    shutil.copytree(micro_run / "base", out / "base")
    capsys.readouterr()
    assert lab_sft(tmp_path / ("a" * 300 + ".json"), out) == 2
    line = one_error_line(capsys)
    assert "cannot read this path (File name too long). Fix: check the path given with --data" in line, line
    assert_no_sft(out)


def test_cli_without_base_model(tmp_path, capsys):
    out = tmp_path / "run"  # no base/ in it
    data = write(tmp_path / "good.json", json.dumps([rec()]))
    capsys.readouterr()
    assert lab_sft(data, out) == 2
    line = one_error_line(capsys)
    assert "no base model" in line and str(out / "base") in line and "lab pretrain" in line, line
    assert_no_sft(out)


# ------------------------------------------------------------------ real data nobody on the team wrote

def test_real_alpaca_demo(alpaca_demo):
    records = load_alpaca(str(alpaca_demo))
    assert len(records) == len(json.loads(alpaca_demo.read_text(encoding="utf-8"))) == 999
    assert all(isinstance(r[k], str) for r in records for k in ALPACA_FIELDS)
    assert all(r["instruction"].strip() and r["output"].strip() for r in records)
    assert any(r["input"] for r in records) and any(not r["input"] for r in records)


def test_brought_data_is_not_capped_by_the_worlds_record_count(micro_run, tmp_path):
    """--n_records sizes the world's generated data (64 on micro); a file is trained on whole, or up to --data_limit."""
    from lab_utils import stages

    out = tmp_path / "run"
    shutil.copytree(micro_run / "base", out / "base")
    data = write(tmp_path / "many.json", json.dumps([rec(instruction=f"Say hi {i} times.") for i in range(70)]))
    m = stages.run_sft("micro", out, progress=False, data=str(data), max_steps=1)
    assert m["n_train_records"] == 70
    m = stages.run_sft("micro", out, progress=False, data=str(data), max_steps=1, data_limit=10)
    assert m["n_train_records"] == 10
    with pytest.raises(LabError, match="--n_records would be ignored: it counts the world's generated records") as e:
        stages.run_sft("micro", out, progress=False, data=str(data), max_steps=1, n_records=5)
    assert "--data_limit 5 keeps the first 5 records" in str(e.value)  # the flag that does it, before any training


def test_an_output_starts_where_the_template_leaves_off(tmp_path):
    """"### Response:\\n" + "\\nHi." would tokenize its two newlines as one token the model never sees at inference."""
    data = write(tmp_path / "lead.json", json.dumps([rec(output="\n\nHi."), rec(output="\n    x = 1")]))
    assert [r["output"] for r in load_alpaca(str(data))] == ["Hi.", "    x = 1"]  # an indented first line keeps it


def test_surrounding_whitespace_is_dropped_as_for_ppos_prompts(tmp_path):
    """SFT and `lab ppo --data` read one record the same way: a whitespace-only input is no input (the template
    without "### Input:"), not a blank one."""
    from lab_utils.preferences import load_prompts

    data = write(tmp_path / "ws.json", json.dumps([{"instruction": " Q?\n", "input": "  ", "output": "A"},
                                                   {"instruction": "Sum.", "input": "\t2 3 ", "output": "5"}]))
    records = load_alpaca(str(data))
    assert [(r["instruction"], r["input"]) for r in records] == load_prompts(str(data)) == [("Q?", ""), ("Sum.", "2 3")]
