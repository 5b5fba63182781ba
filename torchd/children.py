"""A journal of the children this daemon started, so a successor can end what a crash left.

Append-only lines `+ PID START_TICKS` / `- PID`, one write() each (no fsync: the journal only
has to outlive the daemon process, not the machine; after a reboot there are no children).
The start time (clock ticks since boot) guards against ending an unrelated process that
reused a pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from torchd.procstat import start_ticks
from torchd.runner import group_alive, signal_group

log = logging.getLogger("torchd.children")
COMPACT_AFTER = 20000  # lines; then the journal is rewritten with only the live children


class ChildJournal:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._live: dict[int, int] = {}
        self._lines = 0
        self._fd = -1

    def open(self) -> None:
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC
                           | os.O_CLOEXEC, 0o600)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def started(self, pid: int) -> None:
        ticks = start_ticks(pid)
        if ticks is None:
            return  # already gone: nothing to end later
        self._live[pid] = ticks
        self._append(f"+ {pid} {ticks}\n")

    def ended(self, pid: int) -> None:
        if self._live.pop(pid, None) is not None:
            self._append(f"- {pid}\n")

    def _append(self, line: str) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, line.encode())
        except OSError as exc:
            log.error("cannot write child journal %s: %s", self._path, exc)
            return
        self._lines += 1
        if self._lines >= COMPACT_AFTER:
            self._compact()

    def _compact(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        text = "".join(f"+ {pid} {ticks}\n" for pid, ticks in self._live.items())
        tmp.write_text(text, encoding="ascii")
        os.replace(tmp, self._path)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._lines = len(self._live)


def read_leftovers(path: Path) -> dict[int, int]:
    """Children a previous daemon recorded as started and not ended."""
    live: dict[int, int] = {}
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return live
    for line in text.splitlines():
        parts = line.split()
        try:
            if parts[0] == "+" and len(parts) == 3:
                live[int(parts[1])] = int(parts[2])
            elif parts[0] == "-" and len(parts) == 2:
                live.pop(int(parts[1]), None)
        except (ValueError, IndexError):
            continue  # a torn last line after a crash
    return live


def end_leftovers(path: Path, grace: float) -> list[int]:
    """End the process groups of children a crashed daemon left running. Returns their pids."""
    groups = [pid for pid, ticks in read_leftovers(path).items()
              if start_ticks(pid) == ticks]  # a different start time: the pid was reused
    for pgid in groups:
        log.warning("ending process group %d left behind by a previous torchd", pgid)
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        if not any(group_alive(pgid) for pgid in groups):
            break
        time.sleep(0.05)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
    return groups
