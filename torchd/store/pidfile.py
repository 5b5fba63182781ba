"""The pidfile, locked with fcntl for the daemon's whole life.

A lock, not the pid, says whether a daemon is alive: a crash releases it, so a stale file
(dead process, or a pid since reused by something else) never blocks the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from torchd.core.errors import AlreadyRunningError
from torchd.store.statedir import FileModes, open_file


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def lock_holder(info: os.stat_result) -> int | None:
    """The pid that holds the flock on this file, as the kernel tells in /proc/locks (None
    if it cannot be told: another pid namespace, a file system that reports otherwise)."""
    want = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                parts = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want:
                    pid = int(parts[4])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        return None
    return None


def _has_open(pid: int, path: Path, info: os.stat_result) -> bool:
    """Whether the process has this file open now. Only descriptors whose link ends in the
    file's name are stat'ed (a stat of each would reach into every file the process
    holds, a hung network mount too; the rest of the link may differ in another mount
    namespace)."""
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    suffix = "/" + path.name
    for fd in names:
        try:
            if not os.readlink(f"{fds}/{fd}").endswith(suffix):
                continue
            held = os.stat(f"{fds}/{fd}")
        except OSError:
            continue
        if (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino):
            return True
    return False


def running_pid(path: Path) -> int | None:
    """The pid of the live daemon holding this pidfile, or None; -1 when a daemon holds it
    but its pid cannot be told (never signal that). The pid comes from the kernel's record
    of who took the lock, not from the file's text, which anyone who could write the file
    could have made up, and only while that process has the file open still (the lock
    outlives its taker in a child it forked, and the taker's pid may be reused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return -1  # unreadable, or a symlink: let the control socket answer (or refuse)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        info = os.fstat(fd)
        holder = lock_holder(info)
        return holder if holder is not None and _has_open(holder, path, info) else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class PidFile:
    def __init__(self, path: Path, modes: FileModes | None = None) -> None:
        self.path = path
        self._modes = modes or FileModes()
        self._fd = -1

    def acquire(self) -> None:
        """Lock and write our pid; raise AlreadyRunningError if another daemon holds it."""
        fd = open_file(self.path, os.O_RDWR | os.O_CREAT, self._modes)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunningError(read_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = -1
