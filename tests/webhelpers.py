"""A real daemon with its HTTP listener on a free loopback port, and a small client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.helpers import Daemon, wait_for

ADMIN = object()  # `token=ADMIN`: the daemon's own admin token


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is what a test checks, not something to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass
class WebDaemon:
    daemon: Daemon
    url: str  # http://127.0.0.1:PORT, no trailing slash

    @property
    def token(self) -> str:
        return (self.daemon.state_dir / "http.token").read_text().strip()

    def request(self, path: str, *, method: str = "GET", body: Any = None,
                token: object = ADMIN, headers: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; `token` None sends none."""
        sent = dict(headers or {})
        if token is ADMIN:
            token = self.token
        if isinstance(token, str):
            sent["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data,  # noqa: S310 - http
                                         method=method, headers=sent)
        try:
            with _OPENER.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def api(self, verb: str, method: str = "GET", **args: Any) -> dict[str, Any]:
        """The JSON reply of /api/v1/VERB (GET with a query, or POST with a body)."""
        if method == "GET":
            query = "&".join(f"{k}={v}" for k, v in args.items())
            _, _, body = self.request(f"/api/v1/{verb}" + (f"?{query}" if query else ""))
        else:
            _, _, body = self.request(f"/api/v1/{verb}", method="POST", body=args)
        reply: dict[str, Any] = json.loads(body)
        return reply


def start_web_daemon(daemon: Daemon, port: int) -> WebDaemon:
    """Start `daemon` (its task file has `http: {listen: 127.0.0.1:PORT}`) and wait until
    its listener answers."""
    daemon.start()
    web = WebDaemon(daemon, f"http://127.0.0.1:{port}")

    def answers() -> bool:
        try:
            return web.request("/healthz", token=None)[0] == 200
        except OSError:
            return False

    wait_for(answers, timeout=20, message="the HTTP listener")
    return web
