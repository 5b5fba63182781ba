"""A journal of the children this daemon started, so a successor can end what a crash left.

The first line names the boot (`# boot BOOT_ID`), then come append-only lines
`+ PID START_TICKS SESSION` and `- PID`, one write() each (no fsync: the journal only has
to outlive the daemon process, not the machine; after a reboot there are no children).

A successor believes an entry only as far as the process itself confirms it: the entry is
from this boot, and the process with that pid still has the recorded start time and
session, leads its own session and process group (as every run does), and is neither
pid 1 nor the successor's own group. So a journal that lies (a reused pid, a line someone
planted) cannot make torchd signal a process group it did not create.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from torchd.core.health import Health
from torchd.process.runner import group_alive, signal_group, until_gone
from torchd.store.statedir import REOPEN_EVERY, FileModes, read_lines, rewrite
from torchd.system.procstat import boot_id, proc_stat

log = logging.getLogger("torchd.children")
COMPACT_AFTER = 20000  # lines; then the journal is rewritten with only the live children


class ChildJournal:
    def __init__(self, path: Path, modes: FileModes | None = None,
                 health: Health | None = None) -> None:
        self._path = path
        self._health = health or Health(time.time)
        self._modes = modes or FileModes()
        self._boot = boot_id()
        self._live: dict[int, tuple[int, int]] = {}  # pid -> (start ticks, session)
        self._lines = 0
        self._fd = -1
        self._reopen_at = 0.0  # monotonic: when to try again after the journal failed

    def open(self) -> None:
        """Start a fresh journal; failing that, tried again as children come and go."""
        self._reopen_at = time.monotonic() + REOPEN_EVERY
        try:
            self._fd = self._replace_with_fresh()
        except OSError as exc:
            self._unwritable(exc)
            return
        self._health.clear("child-journal")

    def _unwritable(self, exc: OSError) -> None:
        self._health.report("child-journal", f"cannot write the child journal {self._path}: "
                            f"{exc.strerror}; after a crash, the runs since would not be "
                            "ended by the next start")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def started(self, pid: int | None) -> None:
        if pid is None:
            return  # an HTTP run: no process to end later
        stat = proc_stat(pid)
        if stat is None:
            return  # already gone: nothing to end later
        self._live[pid] = (stat.start_ticks, stat.session)
        self._append(f"+ {pid} {stat.start_ticks} {stat.session}\n")

    def ended(self, pid: int | None) -> None:
        if pid is not None and self._live.pop(pid, None) is not None:
            self._append(f"- {pid}\n")

    def _append(self, line: str) -> None:
        if self._fd < 0:  # a fresh journal holds this line's news as well
            if time.monotonic() >= self._reopen_at:
                self.open()
            return
        try:
            os.write(self._fd, line.encode())
        except OSError as exc:
            self._unwritable(exc)
            return
        self._health.clear("child-journal")
        self._lines += 1
        if self._lines >= COMPACT_AFTER:
            self._compact()

    def _replace_with_fresh(self) -> int:
        """A new journal with the boot line and the live children, put in place of
        whatever is at the path (renamed over it: a planted FIFO or link is not opened)."""
        text = f"# boot {self._boot}\n" + "".join(
            f"+ {pid} {ticks} {session}\n" for pid, (ticks, session) in self._live.items())
        fd = rewrite(self._path, text.encode(), self._modes, durable=False)
        self._lines = len(self._live)
        return fd

    def _compact(self) -> None:
        try:
            fd = self._replace_with_fresh()
        except OSError as exc:
            log.error("cannot compact child journal %s: %s", self._path, exc)
            self._lines = 0  # try again after as many lines
            return
        os.close(self._fd)
        self._fd = fd


def read_leftovers(path: Path, modes: FileModes | None = None) -> dict[int, tuple[int, int]]:
    """Children a previous daemon of this boot recorded as started and not ended: pid ->
    (start ticks, session)."""
    live: dict[int, tuple[int, int]] = {}
    lines = read_lines(path, modes or FileModes(), "child journal", log)
    if not lines or lines[0] != f"# boot {boot_id()}":
        return live  # another boot's (or no boot line): none of its pids are ours
    for line in lines[1:]:
        parts = line.split()
        try:
            if parts[0] == "+" and len(parts) == 4:
                live[int(parts[1])] = (int(parts[2]), int(parts[3]))
            elif parts[0] == "-" and len(parts) == 2:
                live.pop(int(parts[1]), None)
        except (ValueError, IndexError):
            continue  # a torn last line after a crash
    return live


def ours(pid: int, ticks: int, session: int) -> bool:
    """Whether `pid` is still the run a journal entry recorded (see the module's doc)."""
    if pid <= 1 or pid in (os.getpid(), os.getpgrp()):
        return False
    stat = proc_stat(pid)
    return (stat is not None and stat.start_ticks == ticks and stat.session == session
            and session == pid and stat.pgrp == pid)


def leftover_groups(path: Path, modes: FileModes | None = None) -> list[int]:
    """The process groups a previous daemon of this boot left running that are still its
    runs (by `ours`): what the next start ends."""
    return [pid for pid, entry in read_leftovers(path, modes).items() if ours(pid, *entry)]


def _members(pgids: list[int]) -> dict[int, tuple[int, int]]:
    """The processes of these process groups now: pid -> (start ticks, group); a scan of
    /proc."""
    found: dict[int, tuple[int, int]] = {}
    wanted = set(pgids)
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None and stat.pgrp in wanted:
                found[int(name)] = (stat.start_ticks, stat.pgrp)
    return found


async def end_leftovers(path: Path, grace: float,
                        modes: FileModes | None = None) -> list[int]:
    """End the process groups of children a crashed daemon left running. Returns their
    pids. After the grace, SIGKILL goes to each group that still holds one of the
    processes it held at the SIGTERM (while a member is left, its number cannot be
    another group's), and to each of those processes that has left its group since."""
    groups = leftover_groups(path, modes)
    members = _members(groups)
    for pgid in groups:
        log.warning("ending process group %d left behind by a previous torchd", pgid)
        signal_group(pgid, signal.SIGTERM)
    await until_gone(lambda: any(group_alive(pgid) for pgid in groups), grace)
    left: dict[int, int] = {}  # the members still alive -> their group now
    for pid, (ticks, _) in members.items():
        stat = proc_stat(pid)
        if stat is not None and stat.start_ticks == ticks:
            left[pid] = stat.pgrp
    for pgid in groups:
        if pgid in left.values():
            signal_group(pgid, signal.SIGKILL)
    for pid, pgrp in left.items():
        if pgrp not in groups:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return groups
