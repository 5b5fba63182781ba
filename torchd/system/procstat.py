"""What /proc says of a process: when it started, its group and session (the child journal
tells a live child from a process that reused its pid by them), and the daemon's own
launch instant."""

from __future__ import annotations

import os
import time
from typing import NamedTuple

LAUNCH_WINDOW = 10.0  # a process older than this at the call did not start to run torchd


class ProcStat(NamedTuple):
    """What /proc/PID/stat says of a process that torchd checks before signalling it."""

    state: str  # R, S, D, Z (zombie), T (stopped), ...
    ppid: int
    pgrp: int
    session: int
    start_ticks: int  # clock ticks since boot


def proc_stat(pid: int) -> ProcStat | None:
    """The process's stat fields, or None if it is gone (or cannot be read).

    Read directly rather than through psutil: this runs once per spawn, on the hot path.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # Fields after the command name (which may hold spaces and parentheses) start at 3.
    fields = data[data.rindex(b")") + 2:].split()
    return ProcStat(state=fields[0].decode(), ppid=int(fields[1]), pgrp=int(fields[2]),
                    session=int(fields[3]), start_ticks=int(fields[19]))


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    stat = proc_stat(pid)
    return None if stat is None else stat.start_ticks


def boot_id() -> str:
    """This boot's id: pids and start times mean nothing across a reboot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def launch_instant(window: float = LAUNCH_WINDOW) -> float:
    """Wall-clock time this process started (to the kernel's 10 ms tick), or now if it
    started more than `window` seconds ago (torchd called from a longer-lived program) or
    its start cannot be read. psutil's create_time is not used: it adds the boot time from
    /proc/stat, which is truncated to the whole second."""
    now = time.time()
    ticks = start_ticks(os.getpid())
    if ticks is None:
        return now
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return now - age if 0.0 <= age <= window else now
