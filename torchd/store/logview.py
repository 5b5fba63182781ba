"""Read a run's output back from its task's log files (rotated ones included)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from torchd.core.errors import TorchdError
from torchd.core.model import RunOutcome
from torchd.store.history import find_run
from torchd.store.statedir import StatePaths
from torchd.store.tasklog import log_paths, start_error_line

MAX_REPLY = 8 << 20  # bytes of output one request returns; the start is cut beyond this


class NoSuchRunError(TorchdError):
    def __init__(self, task: str, run_id: str | None) -> None:
        which = f"run {run_id} of task '{task}'" if run_id else f"a run of task '{task}'"
        super().__init__(f"no record of {which} in the history")


def read_logs(paths: StatePaths, task: str, run_id: str | None, lines: int | None,
              err: bool) -> dict[str, Any]:
    """One run's output (default the latest), from the history's offsets: for the `logs`
    request, and for the CLI directly when no daemon runs."""
    run = find_run(paths.history, task, run_id)
    if run is None:
        raise NoSuchRunError(task, run_id)
    if run["outcome"] == RunOutcome.START_ERROR:  # no output: the reason is all there is
        output = start_error_line(run["at"], run["run_id"], run["fire_id"], run["reason"])
    else:
        output = run_output(paths.logs, run, err=err)
    data = clip(last_lines(output, lines))
    _, offset = follow_chunk(paths.logs, task, None, err=err)
    return {"run_id": run["run_id"], "outcome": run["outcome"], "text":
            data.decode(errors="replace"), "offset": offset}


def _read_from(path: Path, offset: int) -> bytes:
    """The file from `offset` on; nothing if it cannot be read or is a symlink (a log in
    the state dir never is: see statedir)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b""
            handle.seek(offset)
            return handle.read()
        except OSError:
            return b""


def run_output(log_dir: Path, run: dict[str, Any], *, err: bool = False) -> bytes:
    """The log lines of one run, from its start header to its end footer (or to now if it
    runs still). Rotation may have moved its start into TASK.log.N; the footer can be in
    a newer file. Runs of one task that overlap share the file, so their lines interleave."""
    start = run["err_start" if err else "log_start"]
    if start is None:
        return b""
    run_id = run["run_id"]
    header = f" start run={run_id} ".encode()
    footer = f" end run={run_id} ".encode()
    files = log_paths(log_dir, run["task"], err=err)
    for index, path in enumerate(files):
        first = _read_from(path, start)
        if header not in first.split(b"\n", 1)[0]:
            continue
        parts = [first]
        for newer in reversed(files[:index]):
            if footer in parts[-1]:
                break
            parts.append(_read_from(newer, 0))
        data = b"".join(parts)
        cut = data.find(footer)
        if cut >= 0:
            data = data[: data.index(b"\n", cut) + 1 if b"\n" in data[cut:] else len(data)]
        return data
    for path in files:  # the start was rotated away: the footer may still be there
        data = _read_from(path, 0)
        cut = data.find(footer)
        if cut >= 0:
            end = data.find(b"\n", cut)
            return (b"[torchd: the start of this run's output has been rotated away]\n"
                    + data[: len(data) if end < 0 else end + 1])
    return b""


def last_lines(data: bytes, count: int | None) -> bytes:
    if count is None:
        return data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:]) if count > 0 else b""


def clip(data: bytes) -> bytes:
    if len(data) <= MAX_REPLY:
        return data
    return b"[... %d bytes before this are not shown ...]\n" % (len(data) - MAX_REPLY) + \
        data[-MAX_REPLY:]


def follow_chunk(log_dir: Path, task: str, offset: int | None, *,
                 err: bool = False) -> tuple[bytes, int]:
    """New bytes of the task's current log file since `offset` (None: from its end), and
    the offset to ask from next. A file smaller than `offset` was rotated: read it anew."""
    path = log_paths(log_dir, task, err=err)[0]
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return b"", 0
    if offset is None:
        return b"", size
    if size < offset:
        offset = 0
    data = _read_from(path, offset)[:MAX_REPLY]
    return data, offset + len(data)
