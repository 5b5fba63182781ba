"""Screen 7, the hosts of the cluster: `/hosts`, every live host from the Redis registry
(the `cluster` verb) with its heartbeat's figures, config drift highlighted; a host's
recent runs (`/hosts/HOST/runs`) and a run's log (`/hosts/HOST/runs/RUN/log`), read from
that host's API when the hosts share `daemon.http.token_file`, else linked (see remote)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.verbs import ClusterView, History, Logs, RunInfo
from torchd.store.tokens import address_verifies, peer_token
from torchd.web.auth import TOKENS
from torchd.web.context import call, context_of
from torchd.web.remote import RemoteError, address_of, api_path, fetch
from torchd.web.render import page

RUNS = 50  # a host's runs shown


def add_routes(app: web.Application) -> None:
    app.router.add_get("/hosts", hosts)
    app.router.add_get("/hosts/{host}/runs", host_runs)
    app.router.add_get("/hosts/{host}/runs/{run_id}/log", host_log)


def _shared(request: web.Request) -> bool:
    """Whether the hosts share the admin token (daemon.http.token_file is set)."""
    return context_of(request).settings.token_file is not None


async def _view(request: web.Request) -> tuple[dict[str, Any] | None, str | None]:
    """The cluster view, or None and why there is none."""
    try:
        view = await call(request, ClusterView())
    except ProtocolError as exc:
        if exc.code is ErrorCode.BAD_ARGUMENT:
            return None, str(exc)
        raise
    if "error" in view:
        return None, f"the cluster registry cannot be read: {view['error']}"
    return view, None


def _row(beat: dict[str, Any], here: str, now: float) -> dict[str, Any]:
    seen = beat.get("time")
    age = None
    if isinstance(seen, str):
        age = max(now - datetime.fromisoformat(seen).timestamp(), 0.0)
    return {**beat, "this": beat["host_id"] == here, "address": address_of(beat),
            "age": age, "leases": beat.get("leases") or []}


async def hosts(request: web.Request) -> web.Response:
    view, why = await _view(request)
    if view is None:
        return page(request, "hosts.html", view=None, why=why, rows=[], shared=_shared(request))
    now = datetime.now(UTC).timestamp()
    rows = [_row(beat, view["host_id"], now) for beat in view["hosts"]]
    return page(request, "hosts.html", view=view, why=None, rows=rows,
                shared=_shared(request))


async def _host(request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cluster view and the heartbeat of the host the path names (404 if none)."""
    view, why = await _view(request)
    if view is None:
        raise web.HTTPNotFound(text=f"{why}\n")
    name = request.match_info["host"]
    beat = next((b for b in view["hosts"] if b["host_id"] == name), None)
    if beat is None:
        raise web.HTTPNotFound(text=f"no live host {name!r} in cluster {view['name']}\n")
    return view, beat


async def _remote(request: web.Request, beat: dict[str, Any], path: str,
                  query: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    address = address_of(beat)
    if address is None:
        raise RemoteError(f"host {beat['host_id']} advertises no HTTP address "
                          "(its daemon.http is off)")
    admin = request.app[TOKENS].admin
    if not address_verifies(admin, beat["host_id"], address, beat.get("http_signature")):
        raise RemoteError(f"host {beat['host_id']}'s address {address} is not signed with "
                          "the shared token (daemon.http.token_file); not asked")
    return await fetch(address, path, peer_token(admin), query=query)


def _error_of(status: int, body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:300].decode(errors="replace")
    return f"the host answered {status}: {message}"


async def host_runs(request: web.Request) -> web.Response:
    view, beat = await _host(request)
    host = beat["host_id"]
    address = address_of(beat)
    values: dict[str, Any] = {"host": host, "address": address, "runs": None, "error": None,
                              "link": None}
    if host == view["host_id"]:
        values["runs"] = (await call(request, History(limit=RUNS)))["runs"]
    elif not _shared(request):
        values["link"] = None if address is None else f"{address}hosts/{quote(host, safe='')}/runs"
    else:
        try:
            status, body, cut = await _remote(request, beat, api_path("history"),
                                              {"limit": str(RUNS)})
            if status != 200 or cut:
                values["error"] = _error_of(status, body)
            else:
                values["runs"] = json.loads(body)["result"]["runs"]
        except (RemoteError, ValueError, KeyError, TypeError) as exc:
            values["error"] = str(exc)
    return page(request, "host_runs.html", status=502 if values["error"] else 200, **values)


async def host_log(request: web.Request) -> web.Response:
    view, beat = await _host(request)
    host, run_id = beat["host_id"], request.match_info["run_id"]
    address = address_of(beat)
    values: dict[str, Any] = {"host": host, "run_id": run_id, "text": None, "cut": False,
                              "error": None, "link": None}
    if host == view["host_id"]:
        try:
            run = await call(request, RunInfo(run_id=run_id))
            values["text"] = (await call(request, Logs(task=run["task"], run=run_id)))["text"]
        except ProtocolError as exc:
            values["error"] = str(exc)
    elif not _shared(request):
        values["link"] = (None if address is None else f"{address}hosts/"
                          f"{quote(host, safe='')}/runs/{quote(run_id, safe='')}/log")
    else:
        try:
            status, body, cut = await _remote(request, beat, api_path("runs", run_id, "log"))
        except RemoteError as exc:
            values["error"] = str(exc)
        else:
            if status == 200:
                values["text"], values["cut"] = body.decode(errors="replace"), cut
            else:
                values["error"] = _error_of(status, body)
    failed = 404 if host == view["host_id"] else 502  # no such run here; the other host
    return page(request, "host_log.html", status=failed if values["error"] else 200, **values)
