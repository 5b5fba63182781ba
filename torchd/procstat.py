"""When a process started, from /proc/PID/stat: the child journal tells a live child from a
process that reused its pid by it, and the daemon takes its launch instant from it."""

from __future__ import annotations

import os
import time

LAUNCH_WINDOW = 10.0  # a process older than this at the call did not start to run torchd


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22).

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
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])  # field 22 overall; fields after the command name start at 3


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
