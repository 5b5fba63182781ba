"""The state dir: the one place that names every file torchd keeps there, and the rules
for creating and opening them.

torchd runs as root on most hosts, and what it reads back from its state dir decides what
it runs (pending submissions) and which processes it signals (the child journal). So the
state dir must be the daemon user's own and writable by nobody else, and so must every
directory above it (else someone could swap it). It is made 0700, or 2750 with
`daemon.socket_group` (whose members may read history and logs: the setgid bit gives
every file made in it that group), every file in it 0600 (0640), and no file in it is
opened through a symlink or a hard link.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from torchd.core.errors import TorchdError
from torchd.system.safefile import UnsafePathError, check_directory, describe_mode, resolve_trusted

# Seconds between tries to open again a state-dir file the daemon keeps open for writing
# (the child journal, the fire ledger) after opening it failed.
REOPEN_EVERY = 10.0
# Files a daemon of an older version made looser are tightened when opened.
PRIVATE_FILE, GROUP_FILE = 0o600, 0o640
PRIVATE_DIR, GROUP_DIR = 0o700, 0o2750


class StateDirError(TorchdError):
    """A state dir the daemon refuses to use; the message names it, its owner and mode,
    and the fix."""


@dataclass(frozen=True, slots=True)
class StatePaths:
    """Every file in a state dir, by name: for the daemon, and for the CLI finding the
    daemon or reading history and logs when none runs."""

    root: Path

    @property
    def pidfile(self) -> Path:
        return self.root / "torchd.pid"

    @property
    def socket(self) -> Path:
        return self.root / "torchd.sock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def children(self) -> Path:
        return self.root / "children.journal"

    @property
    def fires(self) -> Path:
        return self.root / "fires.ledger"

    @property
    def daemon_log(self) -> Path:
        return self.root / "torchd.log"

    @property
    def history(self) -> Path:
        return self.root / "history.db"

    @property
    def workflow(self) -> Path:
        """The satisfied edges of workflows (`after:`): store.edges."""
        return self.root / "workflow.db"

    @property
    def paused(self) -> Path:
        return self.root / "paused.json"

    @property
    def submitted(self) -> Path:
        return self.root / "submitted.json"

    @property
    def http_token(self) -> Path:
        return self.root / "http.token"


@dataclass(frozen=True, slots=True)
class FileModes:
    """The modes of what the daemon makes in its state dir."""

    file: int = PRIVATE_FILE
    directory: int = PRIVATE_DIR
    gid: int | None = None  # daemon.socket_group's

    @classmethod
    def for_group(cls, gid: int | None) -> FileModes:
        return cls() if gid is None else cls(GROUP_FILE, GROUP_DIR, gid)


def trusted_owners() -> frozenset[int]:
    """Who may own the directories above a state dir: root and the daemon's user."""
    return frozenset({0, os.geteuid()})


def prepare(paths: StatePaths, modes: FileModes) -> None:
    """Make the state dir and its logs dir, or check the ones there: each must be a
    directory of the daemon's user that nobody else can write to, under directories that
    only root or that user can change. Raises StateDirError."""
    try:
        _prepare(paths.root, modes, parents=True)
        _prepare(paths.logs, modes, parents=False)
    except UnsafePathError as exc:
        raise StateDirError(f"cannot use the state dir: {exc}") from None
    except OSError as exc:
        raise StateDirError(f"cannot use the state dir {paths.root}: "
                            f"{exc.filename or paths.root}: {exc.strerror}") from None


def _prepare(path: Path, modes: FileModes, *, parents: bool) -> None:
    owners = trusted_owners()
    if parents:
        _make_parents(path.parent, owners)
    resolved = resolve_trusted(path, owners).path  # a symlinked state dir is followed
    with contextlib.suppress(FileExistsError):
        os.mkdir(resolved, 0o700)
    _claim_directory(resolved, modes)


def _make_parents(path: Path, owners: frozenset[int]) -> None:
    """Make the missing directories above a new state dir, 0755 whatever the umask, in
    the deepest one there, once it and the way to it have passed the checks."""
    missing: list[str] = []
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        missing.append(existing.name)
        existing = existing.parent
    if not missing:
        return
    made = resolve_trusted(existing, owners).path
    check_directory(str(made), owners)
    for name in reversed(missing):
        made = made / name
        with contextlib.suppress(FileExistsError):
            os.mkdir(made, 0o700)
            os.chmod(made, 0o755)  # noqa: S103 - others may pass through to their own dirs


def _claim_directory(path: Path, modes: FileModes) -> None:
    """Check the state dir (or its logs dir) on an open descriptor, then set its mode."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        uid = os.geteuid()
        if info.st_uid != uid:
            raise UnsafePathError(
                f"{path} ({describe_mode(info)}) is not the daemon's own (uid {uid}): "
                f"chown {uid} {path}, or give torchd a state dir of its own")
        if info.st_mode & 0o022:
            raise UnsafePathError(
                f"{path} ({describe_mode(info)}) is writable by group or others, who could "
                f"plant files that torchd acts on: chmod {modes.directory:o} {path} (and "
                "check what is in it)")
        if modes.gid is not None and info.st_gid != modes.gid:
            os.fchown(fd, -1, modes.gid)
        if stat.S_IMODE(info.st_mode) != modes.directory:
            os.fchmod(fd, modes.directory)
    finally:
        os.close(fd)


def open_file(path: Path, flags: int, modes: FileModes) -> int:
    """os.open for a file in the state dir: never through a symlink, created with the
    state dir's file mode whatever the umask; an existing file must be a regular file of
    the daemon's user with no other link to it, and is tightened to that mode. Raises
    OSError (its strerror says why a file was refused)."""
    # O_TRUNC waits for the checks (a hard link to another file must not be emptied),
    # and O_NONBLOCK keeps a FIFO from blocking the open.
    truncate = bool(flags & os.O_TRUNC)
    flags = (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, modes.file)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symlink; torchd does not follow symlinks in its "
                          "state dir", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        refused = _refusal(info)
        if refused is not None:
            raise OSError(errno.EPERM, refused, str(path))
        if stat.S_IMODE(info.st_mode) != modes.file:
            os.fchmod(fd, modes.file)
        if truncate:
            os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_lines(path: Path, modes: FileModes, what: str, log: logging.Logger) -> list[str]:
    """The lines of a state-dir file read back at start (opened as open_file checks it):
    none if it is not there; one that cannot be read is logged to `log`, naming `what`,
    and read as none. Bytes that are not UTF-8 (a torn write) are replaced, not fatal."""
    try:
        fd = open_file(path, os.O_RDONLY, modes)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("%s %s not read: %s", what, path, exc.strerror)
        return []
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace").splitlines()


def fresh_file(path: Path, modes: FileModes) -> int:
    """A new, empty file at `path` for writing, in place of whatever was there (a
    temporary file of a write that did not finish, or one planted: it is unlinked, never
    opened). Meant for a temporary file that is then renamed over the real one."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, modes)


def rewrite(path: Path, text: bytes, modes: FileModes, *, durable: bool) -> int:
    """Put a new file holding `text` in place of `path`: written as PATH.tmp (fsynced
    first if `durable`), then renamed over whatever is at the path, which is never opened
    (a planted FIFO or link included). Returns the new file's descriptor, open for
    writing at its end; on an error nothing is left open and the temporary is removed."""
    tmp = path.with_suffix(".tmp")
    fd = fresh_file(tmp, modes)
    try:
        view = memoryview(text)
        while view:  # a short write (a disk filling up) must not pass for the whole
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return fd


def _refusal(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file; refusing it in the state dir"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not the daemon's; refusing it in the state dir"
    if info.st_nlink > 1:
        return "a hard link to another file; refusing it in the state dir"
    return None
