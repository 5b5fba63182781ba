"""A run's output followed live as Server-Sent Events.

Each `data` event carries whole lines of the task's log; its id is the byte offset in the
task's current log file after them, so a client that reconnects with `Last-Event-ID`
gets exactly what follows. A new client first gets the run's last lines (`?lines=N`,
default 100). A comment line every PING seconds keeps proxies from closing an idle
stream; an `end` event (the outcome as JSON) closes it when the run has ended. The file
is read with pread on a descriptor of its own, on the loop (page-cache reads of at most
CHUNK bytes); a client that goes away ends its handler at the next write or poll.

If the log is rotated while a run writes, the stream goes on in the new file from its
start, and offsets from then on are in the new file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from typing import Any

from aiohttp import web

from torchd.control.protocol import ProtocolError
from torchd.control.readpool import in_read_pool
from torchd.control.verbs import RunInfo
from torchd.core.model import RunOutcome
from torchd.store.logview import last_lines, run_output
from torchd.store.tasklog import log_file, start_error_line
from torchd.web.context import call, context_of

POLL = 0.2  # seconds between reads of the file
PING = 15.0
CHUNK = 1 << 20  # bytes read at most per poll
HELD_LINE = 1.0  # a partial line is sent once it is this old (a prompt without newline)
CHECK_ENDED = 10.0  # seconds between looks at the history for a run without a footer
REPLAY_LINES = 100
MAX_REPLAY_LINES = 10_000
REPLAY_BYTES = 1 << 20  # of a run's output read for the replay at most
MAX_PENDING = 64 << 10  # bytes of a line without its newline held back at most
MAX_STREAMS = 256  # open at once per listener; more are refused (503) until some close


class OpenStreams:
    """The live logs one listener has open."""

    def __init__(self) -> None:
        self.count = 0


OPEN_STREAMS: web.AppKey[OpenStreams] = web.AppKey("open_streams", OpenStreams)


def _number(text: str) -> int | None:
    """A header's or query's count: ASCII digits, not absurdly many; else None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


async def follow_run(request: web.Request, run: dict[str, Any]) -> web.StreamResponse:
    streams = request.app[OPEN_STREAMS]
    if streams.count >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(
            text=f"{MAX_STREAMS} live logs are open already; try again later\n",
            headers={"Retry-After": "10"})
    streams.count += 1
    try:
        return await _stream(request, run)
    finally:
        streams.count -= 1


async def _stream(request: web.Request, run: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await _Follower(request, response, run).follow()
    return response


class _Follower:
    def __init__(self, request: web.Request, response: web.StreamResponse,
                 run: dict[str, Any]) -> None:
        self._request = request
        self._response = response
        self._run = run
        self._path = log_file(context_of(request).paths.logs, run["task"])
        self._footer = f" end run={run['run_id']} ".encode()
        self._header = f" start run={run['run_id']} ".encode()
        self._fd: int | None = None
        self._offset = 0
        self._pending = b""
        self._pending_since = 0.0
        self._last_write = 0.0

    async def follow(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._run["outcome"] is not None and self._run["log_start"] is None:
                await self._end()  # skipped, missed, dropped: no output, ever
                return
            if self._run["outcome"] == RunOutcome.START_ERROR:
                await self._send(start_error_line(self._run["at"], self._run["run_id"],
                                                  self._run["fire_id"] or "",
                                                  self._run["reason"] or ""), None)
                await self._end()
                return
            if await self._start():
                return
            next_check = loop.time() + CHECK_ENDED
            while not self._gone():
                if await self._read_more():
                    return
                now = loop.time()
                if now >= next_check:
                    next_check = now + CHECK_ENDED
                    if await self._ended_without_footer():
                        return
                if now - self._last_write >= PING:
                    await self._write(b": ping\n\n")
                await asyncio.sleep(POLL)
        finally:
            if self._fd is not None:
                os.close(self._fd)

    def _gone(self) -> bool:
        transport = self._request.transport
        return transport is None or transport.is_closing()

    async def _start(self) -> bool:
        """Open the log and send what the client has not seen; True if that was all."""
        self._open()
        resume = _number(self._request.headers.get("Last-Event-ID", ""))
        if resume is not None:
            self._offset = resume
            return False
        count = min(_number(self._request.query.get("lines", "")) or REPLAY_LINES,
                    MAX_REPLAY_LINES)
        start = self._run["log_start"]
        head = self._pread(start, len(self._header) + 200) if start is not None else b""
        if start is not None and self._header in head.split(b"\n", 1)[0]:
            # The last REPLAY_BYTES of the run's output at most: a client asks for its
            # last lines, and a run may have written gigabytes.
            end = self._size() if self._run["log_end"] is None else self._run["log_end"]
            begin = max(start, end - REPLAY_BYTES)
            data = self._pread(begin, end - begin)
            self._offset = begin + len(data)
            if begin > start:
                data = data[data.find(b"\n") + 1:]  # from the first whole line
        else:  # rotated away, or the log cannot be read: what logview finds of it
            data = (await in_read_pool(run_output, context_of(self._request).paths.logs,
                                       self._run))[-REPLAY_BYTES:]
            self._offset = self._size()
        cut = data.find(self._footer)
        ended = cut >= 0 or self._run["outcome"] is not None
        if cut >= 0:
            data = data[: data.find(b"\n", cut) + 1 or len(data)]
        else:  # the partial last line waits for its end
            whole = data.rfind(b"\n") + 1
            self._pending, data = data[whole:], data[:whole]
            self._offset -= len(self._pending)
            self._pending = b""
        await self._send(last_lines(data, count), self._offset)
        if ended:
            await self._end()
        return ended

    def _open(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return
        self._fd = fd

    def _pread(self, offset: int, size: int) -> bytes:
        if self._fd is None:
            return b""
        try:
            return os.pread(self._fd, size, offset)
        except OSError:
            return b""

    def _size(self) -> int:
        return os.fstat(self._fd).st_size if self._fd is not None else 0

    async def _read_more(self) -> bool:
        """Send what the file gained; True once the run's end has been sent."""
        data = self._pread(self._offset, CHUNK)
        if not data:
            self._follow_rotation()
            if self._pending and (asyncio.get_running_loop().time() - self._pending_since
                                  >= HELD_LINE):
                await self._send(self._pending, self._offset)
                self._pending = b""
            return False
        self._offset += len(data)
        if not self._pending:
            self._pending_since = asyncio.get_running_loop().time()
        data = self._pending + data
        cut = data.find(self._footer)
        if cut >= 0:
            end = data.find(b"\n", cut)
            await self._send(data[: end + 1 if end >= 0 else len(data)], self._offset)
            await self._end()
            return True
        whole = data.rfind(b"\n") + 1
        if len(data) - whole > MAX_PENDING:  # a line without end: sent as it is
            whole = len(data)
        self._pending = data[whole:]
        if whole:
            await self._send(data[:whole], self._offset - len(self._pending))
        return False

    def _follow_rotation(self) -> None:
        """The file was replaced (rotated): go on in the new one from its start."""
        try:
            current = os.stat(self._path)
        except OSError:
            return
        if self._fd is None or os.fstat(self._fd).st_ino != current.st_ino:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._open()
            self._offset = 0

    async def _ended_without_footer(self) -> bool:
        try:
            run = await call(self._request, RunInfo(run_id=self._run["run_id"]))
        except ProtocolError:
            return False
        if run["outcome"] is None:
            return False
        await self._read_more()
        self._run = run
        if self._pending:
            await self._send(self._pending, self._offset)
        await self._end()
        return True

    async def _end(self) -> None:
        run = self._run
        if run.get("outcome") is None:
            with contextlib.suppress(ProtocolError):
                run = await call(self._request, RunInfo(run_id=run["run_id"]))
        ending = {key: run.get(key) for key in ("run_id", "outcome", "exit_code", "signal",
                                                "ended", "duration")}
        await self._write(f"event: end\ndata: {json.dumps(ending)}\n\n".encode())

    async def _send(self, data: bytes, offset: int | None) -> None:
        if not data:
            return
        text = data.decode("utf-8", errors="replace").replace("\r", "")
        lines = text[:-1] if text.endswith("\n") else text
        event = "".join(f"data: {line}\n" for line in lines.split("\n"))
        await self._write((f"id: {offset}\n" if offset is not None else "").encode()
                          + event.encode() + b"\n")

    async def _write(self, data: bytes) -> None:
        await self._response.write(data)
        self._last_write = asyncio.get_running_loop().time()
