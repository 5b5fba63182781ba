"""A local aiohttp server for HTTP tasks' tests, on its own loop in a thread, on a free
loopback port: it answers what a test asks for and counts what it was asked."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.helpers import free_port


@dataclass
class LocalServer:
    port: int
    scheme: str = "http"
    hits: Counter[str] = field(default_factory=Counter)  # path -> requests received
    seen: list[dict[str, str]] = field(default_factory=list)  # each request's headers
    hanging: int = 0  # requests waiting in /hang now
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/ok", self._ok)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/echo", self._echo)
        app.router.add_get("/hang", self._hang)
        app.router.add_get("/flaky/{fails}", self._flaky)
        app.router.add_get("/slow/{seconds}", self._slow)
        app.router.add_get("/big/{size}", self._big)
        return app

    def _hit(self, request: web.Request) -> int:
        with self._lock:
            self.hits[request.path] += 1
            self.seen.append(dict(request.headers))
            return self.hits[request.path]

    async def _ok(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(text="all good\n", headers={"X-Test": "yes"})

    async def _status(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(status=int(request.match_info["code"]), text="as asked\n")

    async def _echo(self, request: web.Request) -> web.Response:
        """Sends the request's Authorization back, in a header and in the body."""
        self._hit(request)
        auth = request.headers.get("Authorization", "")
        return web.Response(text=f"you sent {auth} for {request.query_string}\n",
                            headers={"X-Echo": auth})

    async def _hang(self, request: web.Request) -> web.Response:
        self._hit(request)
        with self._lock:
            self.hanging += 1
        try:
            await asyncio.sleep(3600)
        finally:
            with self._lock:
                self.hanging -= 1
        return web.Response(text="late\n")

    async def _flaky(self, request: web.Request) -> web.Response:
        """Fails (503) the first N times it is asked, then answers 200."""
        count = self._hit(request)
        if count <= int(request.match_info["fails"]):
            return web.Response(status=503, text=f"not yet ({count})\n")
        return web.Response(text=f"fine at {count}\n")

    async def _slow(self, request: web.Request) -> web.Response:
        self._hit(request)
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text="done\n")

    async def _big(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(body=b"x" * int(request.match_info["size"]))


@contextmanager
def local_server(tls: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    """Serve on a free loopback port until the block ends (over TLS with `tls`)."""
    server = LocalServer(free_port(), "http" if tls is None else "https")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app(), handle_signals=False, shutdown_timeout=0.5,
                           handler_cancellation=True)  # a dropped request ends its handler
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", server.port,
                                        ssl_context=tls).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(_cleanup(runner), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _cleanup(runner: web.AppRunner) -> None:
    """The runner's cleanup, then an end to connections still open: a TLS one waits for
    its peer's close_notify (a client that keeps it alive never sends one), and its
    socket would be left for the garbage collector to find in a later test."""
    handlers = runner.server.connections if runner.server is not None else []
    transports = [h.transport for h in handlers if h.transport is not None]
    await runner.cleanup()
    for transport in transports:
        transport.abort()
    for _ in range(3):  # the aborts close their sockets in callbacks of the next rounds
        await asyncio.sleep(0)
