"""Serve control requests on STATE_DIR/torchd.sock: mode 0600, or 0660 with
`daemon.socket_group`. Every connection's peer is checked as well (SO_PEERCRED): root, the
daemon's own user, or a member of the socket group; anyone else gets an error reply."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from torchd.control.protocol import (
    MAX_LINE,
    ErrorCode,
    ProtocolError,
    decode_request,
    encode,
    error,
    ok,
)
from torchd.control.verbs import VERBS, Peer, Request, parse_request

log = logging.getLogger("torchd.control")
Handler = Callable[[Request, Peer], Awaitable[Any]]
READ_TIMEOUT = 10.0


def claim_socket(path: Path, gid: int | None = None) -> socket.socket:
    """Bind under a temporary name, set its mode (and group), then rename over any stale
    socket, so it is never reachable with looser permissions."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        if gid is not None:
            os.chown(tmp, -1, gid)
            os.chmod(tmp, 0o660)
        os.replace(tmp, path)
    except OSError:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return sock


def _peer_groups(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def peer_allowed(sock: socket.socket, gid: int | None) -> int | None:
    """The peer's uid if it may use the socket, else None."""
    pid, uid, peer_gid = struct.unpack("3i", sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    uid = int(uid)
    if uid in (0, os.geteuid()):
        return uid
    return uid if gid is not None and (peer_gid == gid or gid in _peer_groups(pid)) else None


class ControlServer:
    def __init__(self, path: Path, handle: Handler, *, group: str | None = None) -> None:
        self._path = path
        self._handle = handle
        self._gid = None if group is None else grp.getgrnam(group).gr_gid
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        sock = claim_socket(self._path, self._gid)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                line = await reader.readline()
            sock = writer.get_extra_info("socket")
            uid = peer_allowed(sock, self._gid) if sock is not None else os.geteuid()
            if uid is None:
                reply = error(ErrorCode.FORBIDDEN, "permission denied: this user may not use "
                              "the torchd control socket (see daemon.socket_group)")
            else:
                reply = await self._answer(line, Peer("socket", f"uid={uid}"))
            writer.write(encode(reply))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("control connection dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            request = parse_request(decode_request(line, VERBS))
            return ok(await self._handle(request, peer))
        except ProtocolError as exc:
            return error(exc.code, str(exc))
        except Exception as exc:  # one bad request must never stop the daemon
            log.exception("control request failed: %r", line[:200])
            return error(ErrorCode.INTERNAL, f"internal error: {exc}")
