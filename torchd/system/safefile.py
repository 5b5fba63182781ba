"""Paths and files that a daemon running as root must not be tricked with.

A file is only as safe as the directories on the way to it: whoever can write to one of
them can put a file of their own (or a symlink to one) in its place. `resolve_trusted`
follows a path as the kernel does, symlink by symlink, and checks every directory it
passes through, the way sshd's StrictModes checks a user's files. `read_regular` then
reads a file once, from the descriptor it checked, so that nothing can be swapped in
between the check and the read, and never blocks on a FIFO or opens a device.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torchd.core.errors import TorchdError

MAX_SYMLINKS = 40  # as the kernel's limit for one lookup


class UnsafePathError(TorchdError):
    """A path or file that the daemon refuses to use; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A path with its symlinks resolved: the real path, and every symlink passed on the
    way (a file watcher must watch those too: a Kubernetes ConfigMap mount changes its
    content by replacing its `..data` symlink)."""

    path: Path
    links: tuple[Path, ...]


def describe_mode(info: os.stat_result) -> str:
    return f"owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}"


def _read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def directory_problem(path: str, info: os.stat_result, owners: frozenset[int]) -> str | None:
    """Why others could replace what is in this directory, or None if they cannot: it must
    belong to one of `owners`, and not be writable by group or others unless its sticky
    bit is set (as /tmp) or it is on a read-only mount (as a Kubernetes ConfigMap)."""
    if info.st_uid not in owners:
        who = " or ".join(f"uid {uid}" for uid in sorted(owners))
        return (f"directory {path} ({describe_mode(info)}) does not belong to {who}; "
                f"whoever owns it can replace what is in it: chown {min(owners)} {path}")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX and not _read_only_mount(path):
        return (f"directory {path} ({describe_mode(info)}) is writable by group or others, "
                f"who can replace what is in it: chmod go-w {path}")
    return None


def resolve_trusted(path: str | Path, owners: frozenset[int] | None) -> Resolved:
    """Resolve every symlink of `path`, checking each directory on the way (see
    directory_problem), the directory holding each symlink included, and that each
    symlink belongs to one of `owners`; with `owners` None, only resolve. The last
    component, where it is no symlink, is not checked (the caller checks the file or
    directory it opens there), and may be missing (for the caller to make). Raises
    UnsafePathError, or OSError when a directory on the way is missing."""
    pending = deque(Path(os.path.abspath(path)).parts[1:])
    current = "/"
    links: list[Path] = []
    if owners is not None:
        check_directory(current, owners)
    while pending:
        name = pending.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            if pending:
                raise
            return Resolved(Path(candidate), tuple(links))
        if stat.S_ISLNK(info.st_mode):
            links.append(Path(candidate))
            if owners is not None and info.st_uid not in owners:
                # In a sticky directory (as /tmp) anyone may place a symlink, and the
                # kernel's protected_symlinks does not apply to a walk made here.
                raise UnsafePathError(f"symlink {candidate} belongs to uid {info.st_uid}, "
                                      f"who could point it anywhere; refusing to follow it")
            if len(links) > MAX_SYMLINKS:
                raise UnsafePathError(f"{path}: too many symlinks on the way")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            pending.extendleft(reversed(Path(target).parts[1:] if target.startswith("/")
                                        else Path(target).parts))
            continue
        if pending:
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", candidate)
            problem = None if owners is None else directory_problem(candidate, info, owners)
            if problem is not None:
                raise UnsafePathError(problem)
        current = candidate
    return Resolved(Path(current), tuple(links))


def check_directory(path: str, owners: frozenset[int]) -> None:
    """Raise UnsafePathError if others could replace what is in this directory."""
    problem = directory_problem(path, os.lstat(path), owners)
    if problem is not None:
        raise UnsafePathError(problem)


def kind_of_file(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_regular(path: Path, *, limit: int, what: str = "a file",
                 check: Callable[[os.stat_result], str | None] | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, read from the descriptor that
    was checked. A FIFO, a device or a directory is refused before it is opened (and, if
    one is swapped in meanwhile, once opened: the open does not block); `what` names it in
    the message of one too large. `check` may refuse
    the open file by its status (owner, mode) with a reason. Raises UnsafePathError, or
    OSError when the file cannot be read."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePathError(_not_regular(info))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(_not_regular(info))
        problem = check(info) if check is not None else None
        if problem is not None:
            raise UnsafePathError(problem)
        if info.st_size > limit:
            raise UnsafePathError(_too_big(info.st_size, limit, what))
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(limit + 1 - size, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew after the fstat
                raise UnsafePathError(_too_big(size, limit, what))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _not_regular(info: os.stat_result) -> str:
    return f"is {kind_of_file(info.st_mode)}, not a regular file; refusing to read it"


def _too_big(size: int, limit: int, what: str) -> str:
    return f"is {size:,} bytes; {what} may hold at most {limit:,} bytes ({limit >> 20} MiB)"
