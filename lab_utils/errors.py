"""One error type for bad input: it names the file, the record or line, and the fix."""

from __future__ import annotations

import errno

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a write that failed for want of room, not of permission


class LabError(Exception):
    """A problem the user can fix. The CLI prints `str(err)` on one line and exits with status 2.

    >>> str(LabError("field 'text' is missing", path="data.jsonl", where="line 3", fix="add a 'text' string"))
    "data.jsonl, line 3: field 'text' is missing. Fix: add a 'text' string."
    """

    def __init__(self, message: str, *, path: str | None = None, where: str | None = None, fix: str | None = None):
        self.message, self.path, self.where, self.fix = message, path, where, fix
        head = ", ".join(str(x) for x in (path, where) if x)
        text = f"{head}: {message}" if head else message
        super().__init__(f"{text}. Fix: {fix}." if fix else text)


def cause(err: Exception) -> str:
    """A library's exception as "Type: its first line", cut to 200 characters: enough to tell offline from a
    missing id or a torn file, without the library's whole message on the CLI's one line."""
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
