"""Atomic artifacts: write everything into a temporary folder, then rename it into place.

A crash mid-save leaves only a `.tmp-*` folder, which no loader ever picks up; the previous
artifact or checkpoint stays intact. (Replacing a folder takes two renames, the old one out of the way and the new one
in; a crash in the instant between them leaves the old one as `.old-<name>-<host>-<pid>-*` beside a missing folder.)
The next save of the same folder on the same host removes what a dead process left (on Linux and macOS).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import LabError, cause

_STEP = re.compile(r"^step-(\d{7})$")


def _umask() -> int:
    """The process's umask, read without changing it (`os.umask` sets it, racing other threads)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^Umask:\s*([0-7]+)", status, re.MULTILINE).group(1), 8)
    except (OSError, AttributeError):
        return 0o022


def _usual_mode(path: Path, folder: bool) -> None:
    """Give a temp folder or file the permissions a plain `mkdir` or `open` would have: `tempfile` makes them
    private to the owner, which would lock a shared run folder (JupyterHub, an app run as another user)."""
    executable = folder or path.stat().st_mode & 0o111  # a script saved with the artifact stays executable
    os.chmod(path, (0o777 if executable else 0o666) & ~_umask())


_ACTIVE: set[str] = set()  # absolute paths of this process's temp and old folders in use (other threads' saves)


def _host() -> str:
    """This host's name as a temp folder carries it (letters and digits)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _writer() -> str:
    """Who writes a temp folder, in its name: this host and process. A pid says whether its writer still runs only on
    the host (and in the container) that started it: a run folder shared between containers or over NFS holds
    others'."""
    return f"{_host()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (on POSIX; elsewhere every process counts as running)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # another user's process; no valid pid
        return True
    return True


def _remove_leftovers(final: Path) -> None:
    """Remove what a killed run of this host left beside `final` (SIGKILL, the OOM killer, a power cut: no `finally`
    ran): its temp folder, or the previous artifact it had moved aside, by the host and dead pid in their names, or
    this pid's from an earlier life (containers reuse pids). Another host's, a running process's, and a name
    without a writer (older versions) are left alone."""
    pattern = re.compile(rf"^\.(?:tmp|old)-{re.escape(final.name)}-{re.escape(_host())}-(\d{{1,10}})-[A-Za-z0-9_]+$")
    for path in final.parent.iterdir():
        found = pattern.match(path.name)
        if not found or os.path.abspath(path) in _ACTIVE:
            continue
        pid = int(found.group(1))
        if pid == os.getpid() or not _alive(pid):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:  # a JSON file's temp (`_atomic_write`)
                path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temp folder next to `final`; on success it replaces `final` in one rename. What killed runs of this
    host left beside `final` goes first (it may be what filled the disk)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-{_writer()}-", dir=final.parent))
    _ACTIVE.add(os.path.abspath(tmp))
    try:
        yield tmp
        for path in tmp.rglob("*"):  # `safetensors` and `tempfile` write owner-only files
            if not path.is_symlink():
                _usual_mode(path, folder=path.is_dir())
                _fsync(path)  # on disk before the rename: after a power cut the folder is whole or absent
        _usual_mode(tmp, folder=True)
        _fsync(tmp)
        if final.exists():
            # a name no earlier run can have left behind (a pid alone repeats: containers start at 1)
            old = final.with_name(f".old-{final.name}-{_writer()}-{uuid.uuid4().hex[:8]}")
            _ACTIVE.add(os.path.abspath(old))
            try:
                os.replace(final, old)
                try:
                    os.replace(tmp, final)
                except BaseException:
                    os.replace(old, final)  # the previous artifact back where it was
                    raise
                shutil.rmtree(old, ignore_errors=True)
            finally:
                _ACTIVE.discard(os.path.abspath(old))
        else:
            os.replace(tmp, final)
    finally:
        _ACTIVE.discard(os.path.abspath(tmp))
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') written data to the disk. A folder that cannot be opened or synced
    (Windows; some network and FUSE file systems answer EINVAL) is left to the OS: its files are synced already."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(f)` on a temp file next to `path`, then rename it into place; on any error the temp file goes and
    `path` stays as it was. What killed writers of this host left beside `path` goes first, as in `atomic_dir`
    (a killed `lab votes export` of a large store left tens of megabytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-{_writer()}-", dir=path.parent)
    _ACTIVE.add(os.path.abspath(tmp))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _usual_mode(Path(tmp), folder=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _ACTIVE.discard(os.path.abspath(tmp))


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    _atomic_write(path, lambda f: json.dump(data, f, indent=2, ensure_ascii=False))


# line breaks to `str.splitlines` (and to JavaScript) that `json.dumps(ensure_ascii=False)` leaves raw in a string:
# escaped, a line of the file is one record for every reader (a notebook's `read_text().splitlines()` too)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write JSON lines atomically (temp file + rename), one record per line whichever way a reader splits lines."""
    _atomic_write(path, lambda f: f.writelines(json.dumps(row, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"
                                               for row in rows))


def file_sha256(spec: str | os.PathLike | None) -> str | None:
    """The SHA-256 of a local file's bytes (a `--data` file); None for no spec, a hub id or a folder: what a stage
    records so that the same path with other contents is noticed. None too for a path the system cannot look up (a
    name too long): the stage's own read of it says so, in its words."""
    try:
        if not spec or not Path(spec).is_file():
            return None
    except OSError:
        return None
    digest = hashlib.sha256()
    with open(spec, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DamagedFile(LabError, ValueError):
    """A JSON file the lab wrote (metrics, settings, a checkpoint's state) that no longer holds a JSON object. Still a
    ValueError: readers that skip files which are not the lab's (`runs._readable`) keep skipping it."""


_DAMAGED_FIX = ("the lab writes it whole, so it was changed since: restore it, or delete this file (what it belonged "
                "to then counts as unfinished) and run the command that writes it again")


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object the lab wrote; one that is not (cut short, edited by hand) is one `DamagedFile` naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:  # not JSON, not UTF-8, or an integer too long to read
        raise DamagedFile(f"the file is not JSON ({cause(err)})", path=str(path), fix=_DAMAGED_FIX) from None
    if not isinstance(data, dict):
        raise DamagedFile(f"the file holds a JSON {type(data).__name__}, not an object", path=str(path),
                          fix=_DAMAGED_FIX)
    return data


def torch_save(obj, path: Path) -> None:
    """`torch.save` of a checkpoint's tensors and state, written with Python's own file writes: torch's writer reports
    a full disk as "RuntimeError: [enforce fail at inline_container.cc] unexpected pos", Python's as the OSError
    (errno, file name) the CLI says in one line."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    Path(path).write_bytes(buffer.getbuffer())


def save_training_state(ckpt_root, step: int, model, optimizer, scheduler, extra: dict, scaler=None) -> Path:
    """A resumable checkpoint `step-NNNNNNN/`: weights (safetensors), optimizer, scheduler, RNG, state, and the
    gradient scaler of an fp16 run (its loss scale; without it a resumed run starts at 2^16 again and skips steps)."""
    final = Path(ckpt_root) / f"step-{step:07d}"
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch_save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        if scaler is not None:
            torch_save(scaler.state_dict(), tmp / "scaler.pt")
        write_json(tmp / "state.json", {"step": step, **extra})  # written last: marks the folder complete
    return final


def latest_checkpoint(ckpt_root) -> Path | None:
    """The newest complete checkpoint; temp folders from an interrupted save are ignored."""
    root = Path(ckpt_root)
    done = _complete_steps(root) if root.is_dir() else []
    return done[-1] if done else None


def _step(folder: Path) -> int:
    return int(_STEP.match(folder.name).group(1))


def _complete_steps(root: Path) -> list[Path]:
    """The complete `step-NNNNNNN/` folders of `root` (their state.json is written last), oldest first."""
    return sorted((d for d in root.iterdir() if _STEP.match(d.name) and (d / "state.json").exists()), key=_step)


@contextmanager
def readable_checkpoint(ckpt: Path):
    """A checkpoint file that cannot be read (cut short by a full disk or a killed copy, changed since) as one
    `DamagedFile` naming the step folder, not a library's traceback. Wraps the reading of files only: a file that
    reads but does not fit the model is the caller's error, with its own fix."""
    from safetensors import SafetensorError

    try:
        yield
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, SafetensorError) as err:
        ckpt = Path(ckpt)
        earlier = [d for d in _complete_steps(ckpt.parent) if _step(d) < _step(ckpt)]
        fix = (f"delete {ckpt.name}/ and run the command again: it resumes from {earlier[-1].name}"
               if earlier else f"delete {ckpt.parent.name}/ (this is its only checkpoint) and run the command again: "
                               "it starts at the beginning")
        raise DamagedFile(f"a file of this checkpoint cannot be read ({cause(err)})", path=str(ckpt), fix=fix) from None


def load_training_state(ckpt: Path, optimizer, scheduler, scaler=None) -> dict:
    """Restore optimizer, scheduler, RNG and an fp16 run's gradient scaler (weights are loaded by the caller); returns
    state.json. Tensors load onto the CPU (`accelerator.prepare` moves the optimizer's after): a checkpoint saved on a
    GPU resumes on a machine without one."""
    def load(name: str):
        with readable_checkpoint(ckpt):
            return torch.load(ckpt / name, weights_only=True, map_location="cpu")

    optimizer.load_state_dict(load("optimizer.pt"))
    scheduler.load_state_dict(load("scheduler.pt"))
    torch.set_rng_state(load("rng.pt")["torch"])
    if scaler is not None and (ckpt / "scaler.pt").is_file():
        scaler.load_state_dict(load("scaler.pt"))
    return read_json(ckpt / "state.json")


def prune_checkpoints(ckpt_root, keep: int = 2) -> None:
    """Delete all but the `keep` newest complete checkpoints. Temp folders (a save in progress) and incomplete step
    folders are left alone, so an incomplete newest folder never costs a complete one."""
    done = _complete_steps(Path(ckpt_root))
    for d in done[:-keep]:
        shutil.rmtree(d, ignore_errors=True)


def data_as_named_now(recorded: dict, sha_then: str | None, sha_now: str | None, data: str) -> dict:
    """`recorded` (a stage's or a checkpoint's config) with its --data spelled as `data` is now when the two hashes are
    of the same bytes: the same file by another path (notes.txt, ./notes.txt, its full path) is no change."""
    return recorded | {"data": data} if sha_now and sha_then == sha_now else recorded


def resume_changes(recorded: dict, now: dict, resumable: tuple[str, ...]) -> list[str]:
    """'lr 3e-05 -> 0.0001' for every setting of `now` that differs from the checkpoint's `recorded` one, except
    those a resumed run may change (`resumable`): the optimizer and schedule come back from the checkpoint, so a new
    value would be ignored, or mix two runs."""
    return [f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in now.items() if k not in resumable and recorded.get(k) != v]
