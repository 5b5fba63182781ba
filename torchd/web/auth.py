"""Who may do what over HTTP.

Every request but `GET /healthz` (and `/metrics` with `metrics_auth: false`) needs a
token: `Authorization: Bearer TOKEN`, or the session cookie that `/login?token=TOKEN`
sets (HttpOnly, SameSite=Strict; its value is an HMAC of the token, so the token itself
never sits in a cookie and a new token ends every session). The admin token may act; the
viewer token may only read. A request that is not GET or HEAD must be a POST, and one
whose `Origin` names another site is refused (a browser always sends it on a POST; a
session cookie without an `Origin` is refused too)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from torchd.control.protocol import ErrorCode, error
from torchd.store.tokens import Tokens, peer_token

log = logging.getLogger("torchd.http")
COOKIE = "torchd_session"
OPEN_PATHS = frozenset({"/healthz"})
READ_METHODS = frozenset({"GET", "HEAD"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Role(StrEnum):
    ADMIN = "admin"  # may act
    VIEWER = "viewer"  # may read


_ROLE = "torchd.role"
TOKENS: web.AppKey[Tokens] = web.AppKey("tokens", Tokens)
METRICS_OPEN: web.AppKey[bool] = web.AppKey("metrics_open", bool)


def session_value(token: str, role: Role) -> str:
    mac = hmac.new(token.encode(), f"torchd session {role}".encode(), hashlib.sha256)
    return f"{role}.{mac.hexdigest()}"


def role_of_token(tokens: Tokens, given: str) -> Role | None:
    if hmac.compare_digest(given.encode(), tokens.admin.encode()):
        return Role.ADMIN
    if hmac.compare_digest(given.encode(), peer_token(tokens.admin).encode()):
        return Role.VIEWER  # another host of the cluster, reading
    if tokens.viewer is not None and hmac.compare_digest(given.encode(), tokens.viewer.encode()):
        return Role.VIEWER
    return None


def role_of_cookie(tokens: Tokens, value: str) -> Role | None:
    for role, token in ((Role.ADMIN, tokens.admin), (Role.VIEWER, tokens.viewer)):
        if token is not None and hmac.compare_digest(value.encode(),
                                                     session_value(token, role).encode()):
            return role
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
        role = role_of_cookie(tokens, request.cookies[COOKIE])
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
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"  # never a redirect to another site
    response = web.HTTPSeeOther(target)
    response.set_cookie(COOKIE, session_value(request.app[TOKENS].admin if role is Role.ADMIN
                                              else str(request.app[TOKENS].viewer), role),
                        httponly=True, samesite="Strict", path="/", secure=request.secure)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
