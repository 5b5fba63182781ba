"""The HTTP listener's tokens: the admin token (STATE_DIR/http.token, made at the first
start, or `daemon.http.token_file`) and an optional viewer token. A token file is read
from the descriptor that was checked: a regular file of root or the daemon's user that
nobody else may read or write (it is a password)."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torchd.core.errors import TorchdError
from torchd.core.model import HttpSettings
from torchd.store.statedir import FileModes, StatePaths, open_file
from torchd.system.safefile import UnsafePathError, kind_of_file, read_regular

MAX_TOKEN_FILE = 4096
MIN_TOKEN_LENGTH = 16


class TokenError(TorchdError):
    """A token file torchd will not use; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class Tokens:
    admin: str
    viewer: str | None = None


def load_tokens(settings: HttpSettings, paths: StatePaths, modes: FileModes) -> Tokens:
    """The tokens `settings` name; the default admin token is made if it is not there yet."""
    if settings.token_file is None:
        admin = _state_dir_token(paths.http_token, modes)
    else:
        admin = read_token_file(Path(settings.token_file), "daemon.http.token_file")
    viewer = None
    if settings.viewer_token_file is not None:
        viewer = read_token_file(Path(settings.viewer_token_file),
                                 "daemon.http.viewer_token_file")
        if secrets.compare_digest(viewer, admin):
            raise TokenError(f"{settings.viewer_token_file}: the viewer token is the admin "
                             "token; give the viewer a token of its own")
    return Tokens(admin, viewer)


def _state_dir_token(path: Path, modes: FileModes) -> str:
    """STATE_DIR/http.token, made with a new random token if it is not there. The state
    dir's files are private to the daemon's user (0600 even with socket_group: members
    of that group may read history, not act)."""
    private = FileModes(file=0o600, directory=modes.directory, gid=modes.gid)
    try:
        fd = open_file(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, private)
    except FileExistsError:
        pass
    except OSError as exc:
        raise TokenError(f"cannot make {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(fd)
    try:
        fd = open_file(path, os.O_RDONLY, private)
    except OSError as exc:
        raise TokenError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        return _token_text(handle.read(MAX_TOKEN_FILE + 1), path)


def read_token_file(path: Path, key: str, owners: frozenset[int] | None = None) -> str:
    """A token file (`key` names it in messages): its first line. Its owner must be one of
    `owners` (default root and this process's user)."""
    allowed = owners if owners is not None else frozenset({0, os.geteuid()})
    try:
        data = read_regular(path, limit=MAX_TOKEN_FILE, what=f"{key}",
                            check=partial(_private_to, allowed))
    except UnsafePathError as exc:
        raise TokenError(f"{key}: {path} {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise TokenError(f"{key}: {path} does not exist; write a random token into it "
                             "(e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`)") from None
        raise TokenError(f"{key}: cannot read {path}: {exc.strerror}") from None
    return _token_text(data, path)


def read_state_token(path: Path, owners: frozenset[int]) -> str:
    """STATE_DIR/http.token as the CLI reads it (`torchd web`, maybe as root for a daemon
    of its own user): never through a symlink or a hard link, a regular file of one of
    `owners` that nobody else may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        reason = ("a symlink; refused" if exc.errno == errno.ELOOP else exc.strerror)
        raise TokenError(f"cannot read {path}: {reason}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        problem = (f"is {kind_of_file(info.st_mode)}" if not stat.S_ISREG(info.st_mode)
                   else "has another link to it" if info.st_nlink > 1
                   else _private_to(owners, info))
        if problem is not None:
            raise TokenError(f"{path} {problem}; refused")
        return _token_text(handle.read(MAX_TOKEN_FILE + 1), path)


def _private_to(owners: frozenset[int], info: os.stat_result) -> str | None:
    if info.st_uid not in owners:
        return (f"is owned by uid {info.st_uid}; a token file must be root's or the "
                "daemon user's")
    if stat.S_IMODE(info.st_mode) & 0o077:
        return (f"has mode {stat.S_IMODE(info.st_mode):04o}; a token file must be readable by its "
                "owner alone (chmod 600)")
    return None


def _token_text(data: bytes, path: Path) -> str:
    lines = data.decode("utf-8", errors="replace").splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{path}: the token must be at least {MIN_TOKEN_LENGTH} characters "
                         "on the file's first line")
    return token


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def peer_token(admin: str) -> str:
    """The token one host of a cluster sends another for reading (runs, logs), derived
    from the admin token they share: it may read and never act, so a host that receives
    it (or an address planted in Redis that does) cannot act with it."""
    return "peer." + _mac(admin, "torchd peer read")


def address_signature(admin: str, host_id: str, address: str) -> str:
    """What a host puts beside the HTTP address in its heartbeat when the hosts share a
    token: the others ask that address only if it verifies, so an address written into
    Redis by anyone without the token is never sent a token."""
    return _mac(admin, f"torchd address {host_id} {address}")


def address_verifies(admin: str, host_id: str, address: str, signature: object) -> bool:
    return isinstance(signature, str) and hmac.compare_digest(
        signature, address_signature(admin, host_id, address))
