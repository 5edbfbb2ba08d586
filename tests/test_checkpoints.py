"""An interrupted save never becomes the checkpoint a resume picks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lab_utils import checkpoints as ck
from lab_utils.config import PretrainConfig
from lab_utils.errors import LabError
from lab_utils.modeling import build_model


def complete_step(root, step: int):
    d = root / f"step-{step:07d}"
    d.mkdir(parents=True)
    ck.write_json(d / "state.json", {"step": step})
    return d


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-")))


def test_latest_checkpoint_ignores_temp_and_incomplete_folders(tmp_path):
    assert ck.latest_checkpoint(tmp_path / "absent") is None
    good = complete_step(tmp_path, 20)
    tmp = tmp_path / ".tmp-step-0000040-abc123"  # a save killed after state.json, before the rename
    tmp.mkdir()
    ck.write_json(tmp / "state.json", {"step": 40})
    (tmp_path / "step-0000030").mkdir()  # no state.json: not complete
    (tmp_path / "step-50").mkdir()  # not the step-NNNNNNN pattern
    ck.write_json(tmp_path / "step-50" / "state.json", {"step": 50})
    assert ck.latest_checkpoint(tmp_path) == good


def test_latest_checkpoint_orders_by_step_number(tmp_path):
    for step in (9, 100, 20):
        complete_step(tmp_path, step)
    assert ck.latest_checkpoint(tmp_path).name == "step-0000100"


def test_prune_keeps_the_two_newest_complete_checkpoints_and_touches_nothing_else(tmp_path):
    for step in (100, 9, 20, 3, 50):
        complete_step(tmp_path, step)
    (tmp_path / "step-0000200").mkdir()  # incomplete: does not count as one of the two kept
    (tmp_path / ".tmp-step-0000300-abc123").mkdir()  # a save in progress
    ck.prune_checkpoints(tmp_path, keep=2)
    assert sorted(d.name for d in tmp_path.iterdir()) == [".tmp-step-0000300-abc123", "step-0000050", "step-0000100",
                                                          "step-0000200"]
    assert ck.latest_checkpoint(tmp_path).name == "step-0000100"


def test_atomic_dir_failure_leaves_no_final_and_no_temp(tmp_path):
    final = tmp_path / "step-0000010"
    with pytest.raises(RuntimeError, match="disk full"):
        with ck.atomic_dir(final) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_failure_keeps_the_previous_artifact(tmp_path):
    final = tmp_path / "base"
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with ck.atomic_dir(final) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new, half written")
            raise RuntimeError("killed")
    assert [p.name for p in final.iterdir()] == ["model.safetensors"]
    assert (final / "model.safetensors").read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_dir_replaces_a_folder_whatever_an_earlier_run_left_beside_it(tmp_path, monkeypatch):
    """A crash between the two renames leaves a `.old-` folder; a later run with the same pid (containers reuse
    them) could not move the artifact aside onto it, every time. And when the second rename fails, the previous
    artifact is put back rather than left under its temporary name."""
    final = tmp_path / "sft"
    final.mkdir()
    (final / "v").write_text("1")
    stale = tmp_path / f".old-sft-{os.getpid()}"
    stale.mkdir()
    (stale / "left").write_text("by a crash")
    with ck.atomic_dir(final) as tmp:
        (tmp / "v").write_text("2")
    assert (final / "v").read_text() == "2"
    replace = os.replace

    def second_rename_fails(src, dst):
        if Path(src).name.startswith(".tmp-"):
            raise OSError("disk gone")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="disk gone"):
        with ck.atomic_dir(final) as tmp:
            (tmp / "v").write_text("3")
    assert (final / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [stale.name, "sft"]  # no temp or old folder of ours left


@pytest.mark.skipif(os.name != "posix", reason="whether a pid runs is read with os.kill(pid, 0), POSIX only")
def test_atomic_dir_removes_what_a_killed_run_left_and_nothing_of_a_live_one(tmp_path):
    """SIGKILL (the OOM killer) runs no `finally`: the temp folder, or the artifact moved aside, stays. The next save of
    the same folder removes, before it writes, those of a dead process of this host and of this pid from an earlier
    life (containers reuse pids); it leaves a running process's, another host's (a shared volume), another folder's,
    and names without a writer."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, running = int(child.stdout), os.getppid()  # a process that has exited; pytest's parent, alive
    host = ck._writer().rsplit("-", 1)[0]
    gone = [f".tmp-sft-{host}-{dead}-k1ll3d_", f".old-sft-{host}-{dead}-0a1b2c3d", f".tmp-sft-{ck._writer()}-earlier"]
    kept = [f".tmp-sft-{host}-{running}-inflight", f".tmp-sft-otherhost-{dead}-x", f".tmp-sft-lora-{host}-{dead}-x",
            ".tmp-sft-nopid", f".old-sft-{dead}", f".tmp-sft-{host}-9999999999-x"]  # (no pid os.kill takes)
    final = tmp_path / "sft"
    for name in gone + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"gigabytes")
    with ck.atomic_dir(final) as tmp:
        assert leftovers(tmp_path) == sorted(kept + [tmp.name])  # removed before the save writes anything
        assert tmp.name.startswith(f".tmp-sft-{ck._writer()}-")  # what a later save checks
        (tmp / "v").write_text("1")
    assert leftovers(tmp_path) == sorted(kept) and (final / "v").read_text() == "1"


@pytest.mark.skipif(os.name != "posix", reason="whether a pid runs is read with os.kill(pid, 0), POSIX only")
def test_a_json_write_removes_the_temp_file_a_killed_writer_left_and_nothing_of_a_live_one(tmp_path):
    """SIGKILL in the middle of `lab votes export` left a 56 MB `.tmp-votes.jsonl-*` that no later export removed."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, running = int(child.stdout), os.getppid()
    host = ck._writer().rsplit("-", 1)[0]
    gone = [f".tmp-votes.jsonl-{host}-{dead}-k1ll3d_", f".tmp-votes.jsonl-{ck._writer()}-earlier"]
    kept = [f".tmp-votes.jsonl-{host}-{running}-inflight", f".tmp-votes.jsonl-otherhost-{dead}-x",
            f".tmp-report.json-{host}-{dead}-x"]  # another host's, another file's: left alone
    for name in gone + kept:
        (tmp_path / name).write_text('{"half": ')
    ck.write_jsonl(tmp_path / "votes.jsonl", [{"a": 1}])
    assert leftovers(tmp_path) == sorted(kept) and (tmp_path / "votes.jsonl").read_text() == '{"a": 1}\n'
    ck.write_json(tmp_path / "report.json", {"b": 2})  # report.json's own leftover goes with its next write
    assert leftovers(tmp_path) == sorted(kept[:2])
    seen = []
    ck._atomic_write(tmp_path / "x.json", lambda f: seen.extend(n for n in leftovers(tmp_path) if "x.json" in n))
    assert len(seen) == 1 and seen[0].startswith(f".tmp-x.json-{ck._writer()}-")  # what a later write checks


def test_atomic_dir_success_replaces_the_whole_folder(tmp_path):
    final = tmp_path / "base"
    final.mkdir()
    (final / "stale.txt").write_text("from the previous run")
    with ck.atomic_dir(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"new")
    assert [p.name for p in final.iterdir()] == ["model.safetensors"]
    assert leftovers(tmp_path) == []


def test_crash_while_saving_training_state_keeps_the_previous_checkpoint(tokenizer, tmp_path, monkeypatch):
    model = build_model(PretrainConfig.for_profile("micro"), tokenizer)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    first = ck.save_training_state(tmp_path, 10, model, optimizer, scheduler, {"history": {}})
    assert ck.latest_checkpoint(tmp_path) == first

    def crash(*args, **kwargs):  # state.json is written last: die just before it
        raise RuntimeError("killed")

    monkeypatch.setattr(ck, "write_json", crash)
    with pytest.raises(RuntimeError, match="killed"):
        ck.save_training_state(tmp_path, 20, model, optimizer, scheduler, {"history": {}})
    assert ck.latest_checkpoint(tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000010"]


def test_artifacts_get_the_permissions_of_a_plain_mkdir_and_open(tmp_path):
    """`tempfile` makes its folders and files private to the owner; renamed into place as they were, a shared run
    folder (JupyterHub, an app run as another user) could not be read."""
    import os
    import stat

    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with ck.atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights.txt").write_text("w")
            (tmp / "sub").mkdir()
            save_file({"w": torch.zeros(2)}, tmp / "sub" / "model.safetensors")  # written owner-only (0600)
        ck.write_json(tmp_path / "metrics.json", {"a": 1})
        ck.write_jsonl(tmp_path / "pairs.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "model") == 0o755 and mode(tmp_path / "model" / "weights.txt") == 0o644
    assert mode(tmp_path / "model" / "sub") == 0o755 and mode(tmp_path / "model" / "sub" / "model.safetensors") == 0o644
    assert mode(tmp_path / "metrics.json") == mode(tmp_path / "pairs.jsonl") == 0o644


def test_a_json_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    ck.write_json(tmp_path / "metrics.json", {"a": 1})
    with pytest.raises(TypeError):
        ck.write_json(tmp_path / "metrics.json", {"a": 2, "b": object()})  # not JSON: fails after "a" is written
    with pytest.raises(TypeError):
        ck.write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}, {"b": object()}])
    assert ck.read_json(tmp_path / "metrics.json") == {"a": 1}
    assert leftovers(tmp_path) == [] and not (tmp_path / "rows.jsonl").exists()


def test_a_json_file_is_renamed_into_place_never_written_over(tmp_path):
    """A reader that opened metrics.json or pairs.jsonl before a rewrite (the app's pages, a second `lab` command)
    reads the old file whole: the new one is written beside it and renamed into place. Written over in place, that
    reader (and one killed midway) would see the new bytes, or half of them."""
    for path, write, old, new in ((tmp_path / "metrics.json", ck.write_json, {"a": 1}, {"a": 2, "b": "x" * 100}),
                                  (tmp_path / "pairs.jsonl", ck.write_jsonl, [{"a": 1}], [{"a": 2}, {"b": 3}])):
        write(path, old)
        text, inode = path.read_text(encoding="utf-8"), path.stat().st_ino
        with open(path, encoding="utf-8") as reader:
            write(path, new)
            assert reader.read() == text
        assert path.stat().st_ino != inode  # a new file, not the old one's bytes replaced
    assert ck.read_json(tmp_path / "metrics.json") == {"a": 2, "b": "x" * 100}
    assert (tmp_path / "pairs.jsonl").read_text().splitlines() == ['{"a": 2}', '{"b": 3}']
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content, said", [(b'{"profile": "tiny", "wall_', "the file is not JSON (JSONDecodeError"),
                                            (b'{"a": "\xff"}', "the file is not JSON (UnicodeDecodeError"),
                                            (b'["tiny"]', "the file holds a JSON list, not an object")])
def test_a_damaged_json_file_is_one_error_naming_it(tmp_path, content, said):
    """A metrics or state file cut short or edited by hand: one LabError naming the file and the fix (it used to be a
    raw JSONDecodeError, or an AttributeError at the first `.get`). Still a ValueError, for readers that skip files
    that are not the lab's."""
    path = tmp_path / "sft" / "metrics.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(LabError) as info:
        ck.read_json(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{path}: {said}") and "run the command that writes it again" in str(info.value)


def test_training_state_keeps_an_fp16_runs_loss_scale_and_loads_onto_the_cpu(tokenizer, tmp_path, monkeypatch):
    """An fp16 run's gradient scaler is saved with the checkpoint (restarted at 2^16, a resumed run would skip steps an
    uninterrupted one takes), and every tensor loads onto the CPU: a checkpoint saved on a GPU resumes without one."""
    model = build_model(PretrainConfig.for_profile("micro"), tokenizer)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu")
    scaler.load_state_dict({"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                            "_growth_tracker": 7})  # where a run of many steps left it
    ckpt = ck.save_training_state(tmp_path, 10, model, optimizer, scheduler, {"history": {}}, scaler)
    load, places = torch.load, []
    monkeypatch.setattr(torch, "load", lambda *a, **kw: places.append(kw.get("map_location")) or load(*a, **kw))
    fresh = torch.amp.GradScaler("cpu")
    ck.load_training_state(ckpt, optimizer, scheduler, fresh)
    assert fresh.state_dict() == scaler.state_dict()
    assert places == ["cpu"] * 4  # optimizer, scheduler, RNG, scaler


class _RunsCode:
    """Unpickled, this object calls os.mkdir(marker): what a crafted or swapped checkpoint file could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    """A checkpoint's .pt files are read as tensors and plain containers only (`weights_only`): a resume from a
    folder someone shared must not run the code a pickle can carry; such a file is one DamagedFile naming the step."""
    ckpt = tmp_path / "ckpt" / "step-0000010"
    ckpt.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"state": {0: _RunsCode(marker)}, "param_groups": []}, ckpt / "optimizer.pt")  # loaded first
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(ck.DamagedFile, match="a file of this checkpoint cannot be read") as info:
        ck.load_training_state(ckpt, optimizer, scheduler)
    assert str(info.value).startswith(str(ckpt)) and not marker.exists()


def test_an_atomic_folder_is_on_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    """After a power cut the folder must be whole or absent: every file in it, and the folder, are flushed to the disk
    before the rename (without it, a checkpoint could hold state.json beside an empty model.safetensors)."""
    synced, rename = [], ck.os.replace
    monkeypatch.setattr(ck, "_fsync", lambda path: synced.append(path.name))
    monkeypatch.setattr(ck.os, "replace", lambda a, b: synced.append("<rename>") or rename(a, b))
    with ck.atomic_dir(tmp_path / "step-0000010") as tmp:
        (tmp / "model.safetensors").write_bytes(b"weights")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "optimizer.pt").write_bytes(b"state")
    assert synced[-1] == "<rename>" and sorted(synced[:-1]) == sorted(["model.safetensors", "sub", "optimizer.pt",
                                                                        tmp.name])


def test_a_folder_the_file_system_will_not_sync_is_left_to_it(tmp_path, monkeypatch):
    """fsync on a folder fails on some file systems (EINVAL on network and FUSE mounts; no folder handles on Windows):
    the save, at the end of a long run, goes on; a file that cannot be synced is still an error."""
    import errno

    def refuse(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(ck.os, "fsync", refuse)
    with ck.atomic_dir(tmp_path / "empty") as tmp:
        (tmp / "sub").mkdir()
    assert (tmp_path / "empty" / "sub").is_dir()
    with pytest.raises(OSError, match="Invalid argument"):
        with ck.atomic_dir(tmp_path / "model") as tmp:
            (tmp / "model.safetensors").write_bytes(b"weights")
    assert not (tmp_path / "model").exists()


def test_a_jsonl_line_is_one_record_whichever_way_a_reader_splits_lines(tmp_path):
    """`str.splitlines` (notebooks 04-06 read reward/pairs.jsonl with it) also splits at U+0085, U+2028 and U+2029,
    which `json.dumps(ensure_ascii=False)` wrote raw inside a string: a vote's answer holding one broke the file for
    every such reader. Escaped, the file reads back the same either way."""
    import json

    from lab_utils.data import read_jsonl

    rows = [{"prompt": "p", "chosen": "line\u2028sep\x85nel\u2029par", "rejected": "中文"}, {"prompt": "q"}]
    ck.write_jsonl(tmp_path / "pairs.jsonl", rows)
    text = (tmp_path / "pairs.jsonl").read_text(encoding="utf-8")
    assert [json.loads(line) for line in text.splitlines()] == rows
    assert [{k: v for k, v in r.items() if k != "_line"} for r in read_jsonl(tmp_path / "pairs.jsonl")] == rows
    assert "中文" in text  # still written as UTF-8, not escaped
