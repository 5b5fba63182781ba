"""The daemon as child subreaper: what becomes of a run's descendants whose parent died.

Without it they would go to init, out of torchd's reach: a `setsid cmd &` or a double fork
outlives the run's process group, its timeout, `kill` and `stop`. As a subreaper
(PR_SET_CHILD_SUBREAPER; or as PID 1 in a container, where every orphan comes to it
anyway) torchd becomes their parent instead, and:

- reaps every child it did not start itself once it exits, so no zombies pile up;
- ends (TERM, the run's grace, KILL) those that belong to a run of this daemon that has
  ended: a run's descendants carry its TORCHD_RUN_ID in their environment;
- leaves alone the others (one of a run still going, or an orphan from elsewhere when it
  is PID 1), reaping them when they exit.

Its child processes are read from /proc/self/task/PID/children (orphans go to the main
thread), at each SIGCHLD and at each run's end, at most every SWEEP_DELAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable

from torchd.procstat import proc_stat

log = logging.getLogger("torchd.reaper")

PR_SET_CHILD_SUBREAPER = 36
SWEEP_DELAY = 0.05  # coalesces a burst of exits into one look at the children
REMEMBERED_RUNS = 10_000  # ended run ids whose strays are still ended if found
ENVIRON_LIMIT = 1 << 20


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children; False where refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children() -> set[int]:
    """The daemon's child processes, as its main thread's children file lists them."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as listing:
            return {int(child) for child in listing.read().split()}
    except OSError:
        return set()


def run_id_of(pid: int) -> str | None:
    """The TORCHD_RUN_ID a process was started with (its environment at exec)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            data = environ.read(ENVIRON_LIMIT)
    except OSError:
        return None
    for entry in data.split(b"\0"):
        if entry.startswith(b"TORCHD_RUN_ID="):
            return entry[len(b"TORCHD_RUN_ID="):].decode("ascii", errors="replace")
    return None


class Reaper:
    def __init__(self, *, known: Callable[[], set[int]], running: Callable[[str], bool],
                 grace: float) -> None:
        """`known()`: the pids of the children torchd started and watches itself (runs,
        hook commands); `running(run_id)`: whether that run of this daemon still runs."""
        self._known = known
        self._running = running
        self._grace = grace
        self._ended: OrderedDict[str, None] = OrderedDict()  # run ids, oldest first
        self._ending: dict[int, float] = {}  # stray pid -> when it gets SIGKILL (monotonic)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.TimerHandle | None = None
        self.subreaper = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.subreaper = os.getpid() == 1 or become_subreaper()
        self._loop.add_signal_handler(signal.SIGCHLD, self.soon)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
        if self._pending is not None:
            self._pending.cancel()

    def run_ended(self, run_id: str) -> None:
        """A run has ended: whatever it left is a stray from now on."""
        self._ended[run_id] = None
        if len(self._ended) > REMEMBERED_RUNS:
            self._ended.popitem(last=False)
        self.soon()

    def soon(self) -> None:
        if self._pending is None and self._loop is not None:
            self._pending = self._loop.call_later(SWEEP_DELAY, self.sweep)

    def sweep(self, *, everything: bool = False, grace: float | None = None) -> int:
        """Reap exited children torchd did not start, end strays (TERM, then KILL after
        `grace`, default the daemon's); with `everything` (at shutdown), end every child
        of one of this daemon's runs. Returns how many strays are still being ended."""
        self._pending = None
        found = children() - self._known()
        now = time.monotonic()
        for pid in found:
            stat = proc_stat(pid)
            if stat is None or stat.ppid != os.getpid():
                continue
            if stat.state in ("Z", "X"):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                self._ending.pop(pid, None)
                continue
            if pid in self._ending:
                if now >= self._ending[pid]:
                    self._signal(pid, stat.pgrp, stat.session, signal.SIGKILL)
                continue
            run_id = run_id_of(pid)
            if run_id is None or (run_id not in self._ended and not everything):
                continue  # not ours, or its run still runs
            if everything and run_id not in self._ended and not self._running(run_id):
                continue  # a run id this daemon never gave
            log.warning("ending pid %d, left behind by run %s (it moved out of the run's "
                        "process group)", pid, run_id)
            self._signal(pid, stat.pgrp, stat.session, signal.SIGTERM)
            self._ending[pid] = now + (self._grace if grace is None else grace)
        for pid in set(self._ending) - found:
            del self._ending[pid]  # reaped elsewhere
        if self._ending and self._loop is not None and self._pending is None:
            self._pending = self._loop.call_later(0.1, self.sweep)
        return len(self._ending)

    @staticmethod
    def _signal(pid: int, pgrp: int, session: int, signum: int) -> None:
        """The stray itself (a child of ours: its pid cannot be reused until reaped), and
        its process group when that is one a run's descendant made."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        if pgrp > 1 and pgrp != os.getpgrp() and session != os.getsid(0):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgrp, signum)
