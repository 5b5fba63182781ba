"""The guard of a leased instance: ends it when its lease may have passed to another host.

A `run_on: one` daemon-type task runs on the host holding its lease in Redis. A daemon
that is frozen (SIGSTOP, a stalled VM) or cut off cannot renew the lease, nor stop its
instance before the lease expires and another host starts the task. So the instance runs
under this guard, a process of its own: the daemon writes the lease's expiry to the
guard's stdin after each renewal (a line: seconds on CLOCK_BOOTTIME, which counts a
suspend too), and the guard ends the instance, TERM then KILL, before that expiry less a
safety margin, unless a renewal came first. If the daemon dies (stdin closes), the guard
ends the instance at once.

Run as `python -I -S leaseguard.py GRACE MARGIN -- COMMAND...` (standard library only, so
it starts fast). It leads the run's session and group; the command is its child in the
same group, and the guard exits as the command did.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def read_expiry(fd: int, buffer: bytearray) -> tuple[float | None, bool]:
    """The latest expiry the daemon wrote (None if none is whole yet), and whether the
    daemon's end of the pipe has closed."""
    try:
        chunk = os.read(fd, 4096)
    except BlockingIOError:
        return None, False
    if not chunk:
        return None, True
    buffer.extend(chunk)
    *lines, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    values = [float(line) for line in lines if line.strip()]
    return (values[-1] if values else None), False


def kill_everything() -> None:
    """KILL the whole run: its cgroup where it has one (strays included; the cgroup must
    be the run's own, named after its run id, never the daemon's), its group. (It
    finds its cgroup as cgroups.py does, with the standard library alone: the guard must
    start fast and import nothing of torchd.)"""
    with contextlib.suppress(OSError):
        with open("/proc/self/cgroup", encoding="ascii") as groups:
            own = next((line[3:].strip() for line in groups if line.startswith("0::")), "")
        with open("/proc/self/mountinfo", encoding="ascii") as mounts:
            mount = next((line.split()[4] for line in mounts if " - cgroup2 " in line), "")
        if mount and os.path.basename(own) == f"run-{os.environ.get('TORCHD_RUN_ID')}":
            with open(f"{mount}{own}/cgroup.kill", "w", encoding="ascii") as kill:
                kill.write("1")
    os.killpg(0, signal.SIGKILL)


def exit_like(status: int) -> None:
    """Exit as the command did: with its code, or killed by its signal."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # their handling cannot be set
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(os.waitstatus_to_exitcode(status))


def main(argv: list[str]) -> None:
    grace, margin = float(argv[1]), float(argv[2])
    command = argv[4:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)  # the command decides; the guard waits
    devnull = os.open(os.devnull, os.O_RDONLY)
    child = os.posix_spawnp(command[0], command, os.environ,
                            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0)],
                            setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                       signal.SIGPIPE))
    os.close(devnull)
    watch = os.pidfd_open(child)
    os.set_blocking(0, False)
    buffer = bytearray()
    expiry = now() + 3600.0  # until the daemon's first line, which it writes at once
    term_sent = daemon_gone = False
    while True:
        end_by = expiry - margin
        term_at = end_by - grace
        wait = max(0.0, (end_by if term_sent else term_at) - now())
        readable, _, _ = select.select([watch] + ([] if daemon_gone else [0]), [], [], wait)
        if watch in readable:
            _, status = os.waitpid(child, 0)
            exit_like(status)
        if 0 in readable:
            latest, daemon_gone = read_expiry(0, buffer)
            if daemon_gone:  # no more renewals: end the instance now
                expiry = min(expiry, now() + margin + grace)
            elif latest is not None and not term_sent:
                expiry = latest
        if now() >= end_by:
            kill_everything()
        elif now() >= term_at and not term_sent:
            term_sent = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(0, signal.SIGTERM)


if __name__ == "__main__":
    main(sys.argv)
