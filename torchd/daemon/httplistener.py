"""The daemon's side of `daemon.http`: the listener started, restarted when a reload
changes its settings or tokens, and closed. A listener that cannot start (the port is
taken, a token file is unsafe) is a problem `status` shows; the scheduler goes on."""

from __future__ import annotations

import logging

from torchd.control.api import ControlApi
from torchd.core.clock import Clock
from torchd.core.health import Health
from torchd.core.model import HttpSettings
from torchd.store.statedir import FileModes, StatePaths
from torchd.store.tokens import TokenError, Tokens, address_signature, load_tokens
from torchd.system.hostinfo import http_url, reachable_host
from torchd.web.context import Scrape, WebContext
from torchd.web.render import make_templates
from torchd.web.server import WebServer

log = logging.getLogger("torchd.http")
PROBLEM = "http"


class HttpListener:
    def __init__(self, *, api: ControlApi, paths: StatePaths, modes: FileModes, clock: Clock,
                 health: Health, metrics: Scrape | None = None) -> None:
        self._api = api
        self._paths = paths
        self._modes = modes
        self._clock = clock
        self._health = health
        self.metrics = metrics
        self._templates = make_templates()
        self._server: WebServer | None = None
        self._advertised: str | None = None
        self._settings: HttpSettings | None = None
        self._tokens: Tokens | None = None

    @property
    def address(self) -> str | None:
        """http://HOST:PORT/ while it listens."""
        if self._server is None:
            return None
        return f"http://{self._server.listen}/"

    @property
    def advertised(self) -> str | None:
        """The address other hosts reach it by (the cluster heartbeat tells it): the
        listen address, or one of this host's when it listens on every address."""
        return None if self._server is None else self._advertised

    def signature(self, host_id: str) -> str | None:
        """The advertised address signed with the shared token (`token_file`), for the
        heartbeat; None without a shared token."""
        if (self._server is None or self._advertised is None or self._settings is None
                or self._settings.token_file is None or self._tokens is None):
            return None
        return address_signature(self._tokens.admin, host_id, self._advertised)

    @property
    def token_file(self) -> str | None:
        if self._server is None or self._settings is None:
            return None
        return self._settings.token_file or str(self._paths.http_token)

    async def apply(self, settings: HttpSettings | None) -> None:
        """Listen as `settings` say (None: not at all); the same settings and tokens as
        now change nothing."""
        try:
            tokens = None if settings is None else load_tokens(settings, self._paths,
                                                               self._modes)
        except TokenError as exc:
            self._health.report(PROBLEM, f"the HTTP listener is off: {exc}")
            await self.close()
            return
        if self._server is not None and self._server.settings_key == (settings, tokens):
            return
        await self.close()
        if settings is None or tokens is None:
            self._health.clear(PROBLEM)
            return
        context = WebContext(api=self._api, paths=self._paths, settings=settings,
                             clock=self._clock, templates=self._templates,
                             metrics=self.metrics)
        server = WebServer(context, tokens)
        try:
            await server.start()
        except OSError as exc:
            self._health.report(PROBLEM, f"the HTTP listener is off: cannot listen on "
                                f"{settings.listen}: {exc.strerror or exc}")
            return
        self._server = server
        self._settings = settings
        self._tokens = tokens
        self._advertised = http_url(reachable_host(settings.host), server.port)
        self._health.clear(PROBLEM)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
