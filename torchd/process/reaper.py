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
thread): at each run's end, in the loop's next pass (orphans of a run are adopted when
its last ancestor in the run exits); while it has live children it did not start, also at each
SIGCHLD (they may exit), and as PID 1 at every SIGCHLD; every STRAY_CHECK seconds while
strays are being ended (their SIGKILL is due at a time of its own); and every IDLE_CHECK
seconds in any case, for an orphan from a run that has not ended (a keep-alive
instance's). SIGCHLD is only listened to when needed: handling it for every run's exit
would cost each fire a tenth of its CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable

from torchd.system.procstat import proc_stat

log = logging.getLogger("torchd.reaper")

PR_SET_CHILD_SUBREAPER = 36
REMEMBERED_RUNS = 10_000  # ended run ids whose strays are still ended if found
STRAY_CHECK = 0.1  # seconds between looks while strays are being ended
IDLE_CHECK = 60.0  # seconds between looks otherwise
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
        self._kill_by = math.inf  # at a stop: the latest SIGKILL
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._listening = False  # to SIGCHLD
        self._pid1 = False
        self.subreaper = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pid1 = os.getpid() == 1
        self.subreaper = self._pid1 or become_subreaper()
        self._listen(self._pid1)
        self._plan(IDLE_CHECK)

    def close(self) -> None:
        self._listen(False)
        for pending in (self._next, self._soon):
            if pending is not None:
                pending.cancel()
        self._next = self._soon = None

    def run_ended(self, run_id: str) -> None:
        """A run has ended: whatever it left is a stray from now on. The look comes in the
        loop's next pass, not now: a run ends amid the start of a batch as well, whose
        processes are started before they are watched, and known() lacks them till then."""
        self._ended[run_id] = None
        if len(self._ended) > REMEMBERED_RUNS:
            self._ended.popitem(last=False)
        if self._loop is not None and self._soon is None:
            self._soon = self._loop.call_soon(self._sweep_soon)

    def _sweep_soon(self) -> None:
        self._soon = None
        self.sweep()

    def _listen(self, on: bool) -> None:
        if self._loop is None or on == self._listening:
            return
        if on:
            self._loop.add_signal_handler(signal.SIGCHLD, self.sweep)
        else:
            self._loop.remove_signal_handler(signal.SIGCHLD)
        self._listening = on

    def _plan(self, delay: float) -> None:
        """The next periodic look, unless an earlier one is planned."""
        if self._loop is None:
            return
        when = self._loop.time() + delay
        if self._next is not None:
            if self._next.when() <= when:
                return
            self._next.cancel()
        self._next = self._loop.call_at(when, self._periodic)

    def _periodic(self) -> None:
        self._next = None
        self.sweep()
        self._plan(IDLE_CHECK)

    def sweep(self, *, include_running: bool = False, grace: float | None = None) -> int:
        """Reap exited children torchd did not start, end strays (TERM, then KILL after
        `grace`, default the daemon's); with `include_running` (at shutdown), of runs
        still going too. Returns how many strays are still being ended."""
        found = children() - self._known()
        now = time.monotonic()
        adopted = False  # a live child torchd did not start: its exit is to be reaped
        for pid in found:
            stat = proc_stat(pid)
            if stat is None or stat.ppid != os.getpid():
                continue
            if stat.state in ("Z", "X"):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                self._ending.pop(pid, None)
                continue
            adopted = True
            if pid in self._ending:
                if now >= self._ending[pid]:
                    self._signal(pid, stat.pgrp, stat.session, signal.SIGKILL)
                continue
            run_id = run_id_of(pid)
            if run_id is None or (run_id not in self._ended and not include_running):
                continue  # not ours, or its run still runs
            if include_running and run_id not in self._ended and not self._running(run_id):
                continue  # a run id this daemon never gave
            log.warning("ending pid %d, left behind by run %s (it moved out of the run's "
                        "process group)", pid, run_id)
            self._signal(pid, stat.pgrp, stat.session, signal.SIGTERM)
            self._ending[pid] = min(now + (self._grace if grace is None else grace),
                                    self._kill_by)
        for pid in set(self._ending) - found:
            del self._ending[pid]  # reaped elsewhere
        self._listen(self._pid1 or adopted)
        if self._ending:  # their SIGKILL is due at a time of its own
            self._plan(STRAY_CHECK)
        return len(self._ending)

    def kill_due_in(self) -> float:
        """Seconds until the last stray being ended is due its SIGKILL (0 if none is)."""
        return max((due - time.monotonic() for due in self._ending.values()), default=0.0)

    def stopping(self, grace: float) -> None:
        """The daemon stops: no stray gets its SIGKILL later than `grace` from now (0: a
        second stop signal, at once)."""
        self._kill_by = time.monotonic() + grace
        for pid, due in self._ending.items():
            self._ending[pid] = min(due, self._kill_by)
        self.sweep()

    @staticmethod
    def _signal(pid: int, pgrp: int, session: int, signum: int) -> None:
        """The stray itself (a child of ours: its pid cannot be reused until reaped), and
        its process group when that is one a run's descendant made."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        if pgrp > 1 and pgrp != os.getpgrp() and session != os.getsid(0):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgrp, signum)
