"""What every HTTP handler reaches through its app: the control API, the state dir, the
listener's settings, the templates; and `call`, the one way a handler runs a verb."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from torchd.control.api import ControlApi
from torchd.control.protocol import ErrorCode
from torchd.control.verbs import Peer, Request, is_action
from torchd.core.clock import Clock
from torchd.core.model import HttpSettings
from torchd.store.statedir import StatePaths
from torchd.web.auth import Role, role_of

Scrape = Callable[[], Awaitable[tuple[bytes, str]]]  # the body and content type of /metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class WebContext:
    api: ControlApi
    paths: StatePaths
    settings: HttpSettings
    clock: Clock
    templates: jinja2.Environment
    metrics: Scrape | None = None
    peers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None  # cluster hosts


CONTEXT: web.AppKey[WebContext] = web.AppKey("torchd", WebContext)


def context_of(request: web.Request) -> WebContext:
    return request.app[CONTEXT]


def peer_of(request: web.Request) -> Peer:
    return Peer("http", f"{role_of(request)}@{request.remote or '?'}")


async def call(request: web.Request, verb: Request) -> Any:
    """Run `verb` for this HTTP request: an action needs the admin token and a listener
    that is not read-only (a refusal is audited like any other). ProtocolError to refuse."""
    context = context_of(request)
    peer = peer_of(request)
    if is_action(verb):
        if context.settings.read_only:
            context.api.refuse(verb, peer, ErrorCode.FORBIDDEN, "this listener is read-only "
                               "(daemon.http.read_only); use the CLI on the host")
        if role_of(request) is not Role.ADMIN:
            context.api.refuse(verb, peer, ErrorCode.FORBIDDEN,
                               "the viewer token may read, not act")
    return await context.api.handle(verb, peer)
