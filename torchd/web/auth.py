"""Who may do what over HTTP.

Every request but `GET /healthz` (and `/metrics` with `metrics_auth: false`) needs a
token: `Authorization: Bearer TOKEN`, or the session cookie that `/login?token=TOKEN`
sets (HttpOnly, SameSite=Strict; its value is an HMAC of the token, so the token itself
never sits in a cookie and a new token ends every session). The admin token may act; the
viewer token may only read. A request that is not GET or HEAD must be a POST, and one
whose `Origin` names another site is refused (a browser always sends it on a POST; a
session cookie without an `Origin` is refused too)."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from torchd.control.protocol import ErrorCode, error
from torchd.store.tokens import Tokens, peer_token

log = logging.getLogger("torchd.http")
COOKIE = "torchd_session"
SESSION_TTL = 12 * 3600.0  # seconds a login lasts
MAX_SESSIONS = 1000
OPEN_PATHS = frozenset({"/healthz"})
READ_METHODS = frozenset({"GET", "HEAD"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Role(StrEnum):
    ADMIN = "admin"  # may act
    VIEWER = "viewer"  # may read


_ROLE = "torchd.role"
TOKENS: web.AppKey[Tokens] = web.AppKey("tokens", Tokens)
METRICS_OPEN: web.AppKey[bool] = web.AppKey("metrics_open", bool)


class Sessions:
    """Browser sessions: a random id per login, kept in memory (a restart or a new token
    ends them all), each valid SESSION_TTL. Browsers send a host's cookies to every port
    of it, so a session id may reach another service on the same host: it is random, it
    expires, and `/logout` ends it, unlike a value derived from the token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._open: dict[str, tuple[Role, float]] = {}

    def new(self, role: Role) -> str:
        now = self._clock()
        self._open = {sid: held for sid, held in self._open.items() if held[1] > now}
        while len(self._open) >= MAX_SESSIONS:  # the oldest goes first
            del self._open[next(iter(self._open))]
        session = secrets.token_urlsafe(32)
        self._open[session] = (role, now + SESSION_TTL)
        return session

    def role(self, session: str) -> Role | None:
        held = self._open.get(session)
        if held is None or held[1] <= self._clock():
            return None
        return held[0]

    def end(self, session: str) -> None:
        self._open.pop(session, None)


SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)


def role_of_token(tokens: Tokens, given: str) -> Role | None:
    if hmac.compare_digest(given.encode(), tokens.admin.encode()):
        return Role.ADMIN
    if hmac.compare_digest(given.encode(), peer_token(tokens.admin).encode()):
        return Role.VIEWER  # another host of the cluster, reading
    if tokens.viewer is not None and hmac.compare_digest(given.encode(), tokens.viewer.encode()):
        return Role.VIEWER
    return None


def refusal(request: web.Request, status: int, code: ErrorCode, message: str) -> web.Response:
    """An error in the form the client reads: the control API's JSON for /api/, else a
    short page."""
    headers = {"WWW-Authenticate": 'Bearer realm="torchd"'} if status == 401 else None
    if request.path.startswith("/api/"):
        return web.json_response(error(code, message), status=status, headers=headers,
                                 dumps=_dumps)
    return web.Response(status=status, text=f"{status}: {message}\n", headers=headers)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _own_path(target: str) -> bool:
    """Whether `target` is a path of this listener: after the decoding a browser or yarl
    applies (percent escapes, dropped tabs and newlines), it starts with one `/` and names
    no scheme or host."""
    decoded = unquote(target)
    if any(ord(c) < 0x20 or c == "\\" for c in decoded) or not decoded.startswith("/"):
        return False
    parts = urlsplit(decoded)
    return not decoded.startswith("//") and not parts.scheme and not parts.netloc


def same_origin(request: web.Request) -> bool:
    """Whether the request's Origin (if any) is this listener itself."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.host


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in READ_METHODS and request.method != "POST":
        return refusal(request, 405, ErrorCode.BAD_REQUEST,
                       f"method {request.method} is not allowed; reads are GET, actions POST")
    if request.path in OPEN_PATHS or (request.path == "/metrics"
                                      and request.app[METRICS_OPEN]):
        return await handler(request)
    tokens = request.app[TOKENS]
    role: Role | None = None
    by_cookie = False
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        role = role_of_token(tokens, auth.removeprefix("Bearer ").strip())
    elif request.path == "/login":
        return await handler(request)  # it checks the token it is given
    elif COOKIE in request.cookies:
        role = request.app[SESSIONS].role(request.cookies[COOKIE])
        by_cookie = True
    if role is None:
        return refusal(request, 401, ErrorCode.FORBIDDEN,
                       "a token is needed: send 'Authorization: Bearer TOKEN', or open the "
                       "address `torchd web` prints")
    if request.method == "POST" and (not same_origin(request)
                                     or (by_cookie and "Origin" not in request.headers)):
        log.warning("refused a POST to %s from %s: Origin %r is not this listener (Host %r)",
                    request.path, request.remote, request.headers.get("Origin"), request.host)
        return refusal(request, 403, ErrorCode.FORBIDDEN,
                       "this request comes from another site (its Origin is not this "
                       "dashboard's); refused")
    request[_ROLE] = role
    return await handler(request)


def role_of(request: web.Request) -> Role:
    """The role the middleware found (VIEWER for a path it let through unchecked)."""
    role = request.get(_ROLE)
    return role if isinstance(role, Role) else Role.VIEWER


async def login(request: web.Request) -> web.StreamResponse:
    """`/login?token=T[&next=/path]`: sets the session cookie and sends the browser on to
    a clean address (without the token in it)."""
    role = role_of_token(request.app[TOKENS], request.query.get("token", ""))
    if role is None:
        return refusal(request, 401, ErrorCode.FORBIDDEN,
                       "wrong or missing token; `torchd web` prints the address to open")
    target = request.query.get("next", "/")
    if not _own_path(target):
        target = "/"  # never a redirect to another site
    response = web.HTTPSeeOther(target)
    behind_tls = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
    response.set_cookie(COOKIE, request.app[SESSIONS].new(role), httponly=True,
                        samesite="Strict", path="/", secure=behind_tls,
                        max_age=int(SESSION_TTL))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """`POST /logout`: ends this browser's session."""
    request.app[SESSIONS].end(request.cookies.get(COOKIE, ""))
    response = web.Response(text="Logged out. `torchd web` prints the address to log in "
                                 "again.\n")
    response.del_cookie(COOKIE, path="/")
    return response
