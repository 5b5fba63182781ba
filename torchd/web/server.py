"""The HTTP listener (`daemon.http`): the API, the dashboard, `/metrics`, `/healthz`."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from torchd.store.tokens import Tokens
from torchd.web import api, dashboard
from torchd.web.auth import (
    METRICS_OPEN,
    SESSIONS,
    TOKENS,
    Handler,
    Sessions,
    authenticate,
    login,
    logout,
)
from torchd.web.context import CONTEXT, WebContext
from torchd.web.logstream import OPEN_STREAMS, OpenStreams

log = logging.getLogger("torchd.http")
STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20
SHUTDOWN_WAIT = 1.0  # seconds open streams get at a stop before they are cut
MAX_CONNECTIONS = 512  # open at once (live logs: at most MAX_STREAMS of them)
KEEPALIVE = 15.0  # seconds an idle keep-alive connection stays open
REFUSAL_LOG_EVERY = 60.0
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it a browser sends `Origin: null` on the dashboard's own form
    # POSTs, which auth must refuse. same-origin tells another site nothing either.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
}


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if not response.prepared:  # a stream sends its headers itself, before this
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    if isinstance(response, web.HTTPException) and response.status >= 300:
        raise response
    return response


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    scrape = request.app[CONTEXT].metrics
    if scrape is None:
        raise web.HTTPNotFound(text="metrics are not available\n")
    body, content_type = await scrape()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def make_app(context: WebContext, tokens: Tokens) -> web.Application:
    app = web.Application(middlewares=[_security_headers, authenticate],
                          client_max_size=MAX_BODY)
    app[CONTEXT] = context
    app[TOKENS] = tokens
    app[SESSIONS] = Sessions()
    app[METRICS_OPEN] = not context.settings.metrics_auth
    app[OPEN_STREAMS] = OpenStreams()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/metrics", _metrics)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    api.add_routes(app)
    dashboard.add_routes(app)
    return app


class _Refused(asyncio.Protocol):
    """A connection over MAX_CONNECTIONS: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _CappedSite(web.BaseSite):
    """aiohttp's TCP site with a cap on open connections. aiohttp has none, nor a timeout
    for a request's headers, so without it anyone who reaches the port could hold enough
    half-sent requests open to use up the daemon's descriptors, and fires would fail to
    start. Over the cap a connection is closed at once; the scheduler keeps its
    descriptors (the daemon raises its soft limit to the hard one, thousands)."""

    __slots__ = ("_refused_at", "_sock")

    def __init__(self, runner: web.AppRunner, sock: socket.socket) -> None:
        super().__init__(runner)
        self._sock = sock
        self._refused_at = 0.0

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # noqa: S101 - the runner is set up before its sites

        def accepted() -> asyncio.BaseProtocol:
            if len(server.connections) < MAX_CONNECTIONS:
                return server()
            now = time.monotonic()
            if now - self._refused_at > REFUSAL_LOG_EVERY:
                self._refused_at = now
                log.warning("HTTP: %d connections are open, the most there may be; refusing "
                            "more (logged once a minute)", MAX_CONNECTIONS)
            return _Refused()

        self._server = await asyncio.get_running_loop().create_server(accepted,
                                                                      sock=self._sock)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


class WebServer:
    """One listener; start() raises OSError when the address cannot be bound."""

    def __init__(self, context: WebContext, tokens: Tokens) -> None:
        self._context = context
        self._tokens = tokens
        self._runner: web.AppRunner | None = None
        self.port = context.settings.port  # the port bound, once started (listen: HOST:0)

    @property
    def listen(self) -> str:
        """HOST:PORT as bound."""
        return replace(self._context.settings, port=self.port).listen

    @property
    def settings_key(self) -> tuple[object, ...]:
        return (self._context.settings, self._tokens)

    async def start(self) -> None:
        settings = self._context.settings
        runner = web.AppRunner(make_app(self._context, self._tokens), access_log=None,
                               handle_signals=False, shutdown_timeout=SHUTDOWN_WAIT,
                               keepalive_timeout=KEEPALIVE)
        await runner.setup()
        try:
            await _CappedSite(runner, _listening_socket(settings.host, settings.port)).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("HTTP API and dashboard on http://%s/%s", self.listen,
                 "" if settings.loopback else " (reachable from other hosts)")
        if not settings.loopback:
            log.warning("daemon.http listens on %s, not a loopback address, without TLS: "
                        "tokens and cookies cross the network in clear text; put it behind "
                        "a reverse proxy that terminates TLS (see the README)", self.listen)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
