"""`lab pretrain` end to end on real text nobody on the team wrote (skipped when the sample is absent)."""

from __future__ import annotations

from lab_utils import checkpoints as ck
from lab_utils.cli import main


def test_pretrain_on_real_text(wiki_demo, tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--profile", "micro", "--data", str(wiki_demo), "--max_steps", "3",
                 "--out", str(out)]) == 0
    assert (out / "base" / "model.safetensors").is_file()
    metrics = ck.read_json(out / "report.json")["stages"]["pretrain"]
    assert metrics["fact_accuracy"] is None  # world facts say nothing about a model trained on Wikipedia
    assert metrics["steps"] == 3 and metrics["train_tokens"] == 3 * 8 * 64
    saved = ck.read_json(out / "base" / "lab_config.json")["pretrain"]
    assert saved["data"] == str(wiki_demo) and saved["max_steps"] == 3


def test_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "lab pretrain" in capsys.readouterr().out
    assert main(["pretrian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown command 'pretrian'")


def test_eval_of_an_unknown_model_is_one_clear_error(tmp_path, capsys):
    assert main(["eval", "--profile", "micro", "--out", str(tmp_path), "--models", "sft,foo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'foo'") and "base, sft, rlhf" in err[0], err


def test_app_on_a_busy_port_is_one_clear_error(micro_run, capsys, monkeypatch):
    import socket

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "compare", "--profile", "micro", "--out", str(micro_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}") and "--port" in err[-1], err
