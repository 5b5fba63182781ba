"""Task log files: `logs/TASK.log` (and `TASK.err.log` when split), shared by all of a task's
runs, rotated by size, and never a reason for a run to fail.

One open descriptor per task while any of its runs is alive (100,000 rare tasks must not
hold 100,000 files open). Rotation renames TASK.log to TASK.log.1 (the older ones shift up,
the oldest beyond `keep` is removed) and opens a fresh file; it happens only between
writes, so a run whose output straddles it continues in the new file. A failing write (a
full disk, a file made unwritable) is reported once, and again when writing recovers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from torchd.core.health import Health
from torchd.core.model import LogPolicy
from torchd.core.timefmt import iso_utc
from torchd.store.statedir import FileModes, open_file

log = logging.getLogger("torchd.tasklog")
_TASK_NAME = re.compile(r"(?:submit:)?[A-Za-z0-9_.-]+")  # core.model's rule, `submit:` tasks


def log_name(task: str, *, err: bool = False) -> str:
    """The name of the task's current log file: TASK.log, or TASK.err.log for split stderr.
    ValueError for what is no task name (a request's `task` could be `../../etc/x`): the
    log of a task is always a file of the logs directory itself."""
    if not _TASK_NAME.fullmatch(task):
        raise ValueError(f"'{task[:100]}' is not a task name")
    return f"{task}.err.log" if err else f"{task}.log"


def start_error_line(at: float, run_id: str, fire_id: str, error: str) -> bytes:
    """What a task's log holds of a fire that could not start, and what `torchd logs`
    shows of it."""
    return (f"--- torchd {iso_utc(at)} start-error run={run_id} fire={fire_id} "
            f"error={error}\n").encode()


def log_file(log_dir: Path, task: str, *, err: bool = False) -> Path:
    """The task's current log file."""
    return log_dir / log_name(task, err=err)


def log_paths(log_dir: Path, task: str, *, err: bool = False) -> list[Path]:
    """The task's log files, newest first: TASK.log, TASK.log.1, TASK.log.2, ..."""
    base = log_file(log_dir, task, err=err)
    rotated = []
    index = 1
    while (candidate := base.with_name(f"{base.name}.{index}")).exists():
        rotated.append(candidate)
        index += 1
    return [base, *rotated]


class Failing:
    """The log files whose failure was reported (this outlives each TaskLog), each once,
    and as one problem in status while any is failing."""

    def __init__(self, health: Health) -> None:
        self.names: set[str] = set()
        self._health = health

    def add(self, name: str, why: str) -> None:
        self.names.add(name)
        self._health.report("task-logs", f"{len(self.names)} task log(s) cannot be "
                            f"written, the latest {name}: {why}; output is lost")

    def discard(self, name: str) -> None:
        self.names.discard(name)
        if not self.names:
            self._health.clear("task-logs")


class TaskLog:
    """One log file, appended to by every run of a task."""

    def __init__(self, path: Path, policy: LogPolicy, task: str,
                 on_idle: Callable[[TaskLog], None], failing: Failing, *,
                 modes: FileModes) -> None:
        self.path = path
        self._modes = modes
        self.name = path.name
        self.policy = policy
        self.task = task
        self._on_idle = on_idle
        self._fd = -1
        self._size = 0
        self._users = 0
        self._failing = failing
        self._open()

    def _open(self) -> None:
        try:
            self._fd = open_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                 self._modes)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            self._fd = -1
            self._fail(f"cannot open it: {exc.strerror}")

    def _fail(self, why: str) -> None:
        if self.name not in self._failing.names:
            log.error("task %s: log %s: %s; runs go on, their output is lost until it can be "
                      "written", self.task, self.path, why)
            self._failing.add(self.name, why)

    @property
    def size(self) -> int:
        return self._size

    def acquire(self) -> TaskLog:
        self._users += 1
        return self

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self.close()
            self._on_idle(self)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def write(self, data: bytes) -> int | None:
        """Append `data` whole; return the offset it starts at, or None if it was lost."""
        if self._fd < 0:
            self._open()
            if self._fd < 0:
                return None
        if self._size and self._size + len(data) > self.policy.max_bytes:
            self._rotate()
            if self._fd < 0:
                return None
        start = self._size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError as exc:
            self._fail(f"write failed: {exc.strerror}")
            return None
        if self.name in self._failing.names:
            log.warning("task %s: log %s is written again", self.task, self.path)
            self._failing.discard(self.name)
        return start

    def _rotate(self) -> None:
        self.close()
        keep = self.policy.keep
        try:
            if keep == 0:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(f"{self.path.name}.{keep}").unlink()
                for index in range(keep - 1, 0, -1):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(self.path.with_name(f"{self.path.name}.{index}"),
                                   self.path.with_name(f"{self.path.name}.{index + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        except OSError as exc:
            self._fail(f"rotation failed: {exc.strerror}")
        self._open()


class LogFiles:
    """The open task logs of one directory, by file name: runs of one task share one
    TaskLog."""

    def __init__(self, log_dir: Path, modes: FileModes | None = None,
                 health: Health | None = None) -> None:
        self.log_dir = log_dir
        self._modes = modes or FileModes()
        self._open: dict[str, TaskLog] = {}
        self._failing = Failing(health or Health(time.time))

    def acquire(self, task: str, policy: LogPolicy, *, err: bool = False) -> TaskLog:
        name = log_name(task, err=err)
        found = self._open.get(name)
        if found is None:
            found = self._open[name] = TaskLog(self.log_dir / name, policy, task, self._forget,
                                               self._failing, modes=self._modes)
        found.policy = policy  # a reload may have changed it
        return found.acquire()

    def _forget(self, task_log: TaskLog) -> None:
        if self._open.get(task_log.name) is task_log:
            del self._open[task_log.name]

    def close_all(self) -> None:
        for task_log in self._open.values():
            task_log.close()
        self._open.clear()
