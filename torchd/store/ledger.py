"""The last fire of every task, kept in the state dir so missed fires can be caught up
after a restart.

An append-only file of `TASK EPOCH` lines (one write per fire, no rewrite of the whole
table on the hot path), compacted into a fresh file by atomic rename when it grows. A torn
last line after a crash is ignored.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from torchd.core.health import Health
from torchd.store.statedir import REOPEN_EVERY, FileModes, open_file, read_lines, rewrite

log = logging.getLogger("torchd.ledger")

COMPACT_MIN_LINES = 1000


class FireLedger:
    def __init__(self, path: Path, *, modes: FileModes | None = None,
                 defer: Callable[[Callable[[], None]], object] | None = None,
                 health: Health | None = None) -> None:
        """`defer(fn)` runs the compaction later instead of inside record(): the daemon
        passes the event loop's call_soon, so the rewrite and its fsync come after the
        fires being recorded have started, not between a fire's record and its start."""
        self._path = path
        self._modes = modes or FileModes()
        self._health = health or Health(time.time)
        self._fd = -1
        self._last: dict[str, float] = {}
        self._lines = 0
        self._defer = defer
        self._compact_pending = False
        self._reopen_at = 0.0  # monotonic: when to try again after opening the file failed

    def open(self) -> dict[str, float]:
        """Read what earlier daemons recorded, start a compact file, return task -> last
        scheduled fire (epoch seconds)."""
        self._last = read_ledger(self._path, self._modes)
        self._compact_pending = False  # one asked for before a close never ran
        self._compact()
        return dict(self._last)

    def record(self, task: str, scheduled: float) -> None:
        if self._last.get(task, float("-inf")) >= scheduled:
            return
        self._last[task] = scheduled
        if self._fd < 0:  # a rewrite holds this record as well
            if time.monotonic() >= self._reopen_at:
                self._compact()
            return
        try:
            os.write(self._fd, f"{task} {scheduled!r}\n".encode())
        except OSError as exc:
            self._unwritable("write", exc)
            return
        self._health.clear("fire-ledger")
        self._lines += 1
        if self._compact_pending or self._lines < max(COMPACT_MIN_LINES, 4 * len(self._last)):
            return
        if self._defer is None:
            self._compact()
        else:
            self._compact_pending = True
            self._defer(self._deferred_compact)

    def _open_for_append(self) -> None:
        self._reopen_at = time.monotonic() + REOPEN_EVERY
        try:
            self._fd = open_file(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                 self._modes)
        except OSError as exc:
            self._unwritable("open", exc)
        else:
            self._health.clear("fire-ledger")

    def _deferred_compact(self) -> None:
        self._compact_pending = False
        if self._fd >= 0:  # closed meanwhile: the next open() compacts anyway
            self._compact()

    def last(self) -> dict[str, float]:
        """Each task's last recorded fire."""
        return dict(self._last)

    def forget_except(self, tasks: set[str]) -> None:
        """Drop tasks no longer in the file, so a task re-added later starts afresh."""
        for name in set(self._last) - tasks:
            del self._last[name]

    def forget(self, tasks: set[str]) -> None:
        """Drop these tasks' fires at once, from the file too (a clock correction: their
        recorded fires lie ahead of the clock, and must not hold back new records)."""
        for name in tasks:
            self._last.pop(name, None)
        if self._fd >= 0:
            self._compact()

    def _unwritable(self, doing: str, exc: OSError) -> None:
        self._health.report("fire-ledger", f"cannot {doing} the fire ledger {self._path}: "
                            f"{exc.strerror}; a restart may run again or miss the fires since")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _compact(self) -> None:
        """Rewrite the ledger with each task's last fire (fsynced), appending to the new
        file from then on; if that fails, appending to the old file goes on, or (with none
        open) the rewrite is tried again at a record after REOPEN_EVERY."""
        text = "".join(f"{task} {ts!r}\n" for task, ts in self._last.items())
        try:
            fd = rewrite(self._path, text.encode(), self._modes, durable=True)
        except OSError as exc:
            log.error("cannot rewrite the fire ledger %s: %s", self._path, exc)
            if self._fd < 0:  # append to the file there is, if it can be opened
                self._open_for_append()
            self._lines = 0  # compacting is tried again later
            return
        self.close()
        self._fd = fd
        self._health.clear("fire-ledger")
        self._lines = len(self._last)


def read_ledger(path: Path, modes: FileModes | None = None) -> dict[str, float]:
    last: dict[str, float] = {}
    for line in read_lines(path, modes or FileModes(), "fire ledger", log):
        task, _, stamp = line.partition(" ")
        try:
            value = float(stamp)
        except ValueError:
            continue  # a torn last line after a crash
        if task and math.isfinite(value) and value > last.get(task, float("-inf")):
            last[task] = value
    return last
