"""Serve control requests on STATE_DIR/torchd.sock (mode 0600)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
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

log = logging.getLogger("torchd.control")
Handler = Callable[[dict[str, Any]], Awaitable[Any]]
READ_TIMEOUT = 10.0


def claim_socket(path: Path) -> socket.socket:
    """Bind under a temporary name, chmod 0600, then rename over any stale socket."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return sock


class ControlServer:
    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self._path = path
        self._handlers = handlers
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        sock = claim_socket(self._path)
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
            reply = await self._answer(line)
            writer.write(encode(reply))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("control connection dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = decode_request(line)
            return ok(await self._handlers[request["cmd"]](request))
        except ProtocolError as exc:
            return error(exc.code, str(exc))
        except Exception as exc:  # one bad request must never stop the daemon
            log.exception("control request failed: %r", line[:200])
            return error(ErrorCode.INTERNAL, f"internal error: {exc}")
