"""`/api/v1`: every control verb over HTTP, with the socket's request and reply shapes.

`GET /api/v1` lists the verbs and their arguments. `GET /api/v1/VERB?arg=value` runs a
verb that only reads; `POST /api/v1/VERB` with a JSON object runs any verb (actions only
this way). The reply is the socket's `{"ok": true, "result": ...}` or `{"ok": false,
"error": {"code", "message"}}`, with an HTTP status that fits the code. A run's output:
`GET /api/v1/runs/ID/log`, followed live by `.../log/stream` (see `logstream`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from torchd.control.protocol import MAX_LINE, ErrorCode, ProtocolError, error, json_object, ok
from torchd.control.verbs import (
    VERBS,
    Logs,
    RunInfo,
    describe_verbs,
    from_query,
    is_action,
    parse_request,
)
from torchd.web.context import call
from torchd.web.logstream import follow_run

log = logging.getLogger("torchd.http")

HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400, ErrorCode.BAD_ARGUMENT: 400, ErrorCode.CONFIG: 422,
    ErrorCode.FORBIDDEN: 403, ErrorCode.INTERNAL: 500, ErrorCode.STOPPING: 503,
    ErrorCode.UNAVAILABLE: 503,
}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1", index)
    app.router.add_get("/api/v1/runs/{run_id}/log", run_log)
    app.router.add_get("/api/v1/runs/{run_id}/log/stream", run_log_stream)
    app.router.add_route("*", "/api/v1/{verb}", verb)


def reply(result: Any) -> web.Response:
    return web.json_response(ok(result), dumps=_dumps)


def failure(exc: ProtocolError, *, status: int | None = None) -> web.Response:
    return web.json_response(error(exc.code, str(exc)),
                             status=status or HTTP_STATUS.get(exc.code, 400), dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


async def index(_request: web.Request) -> web.Response:
    return reply({"verbs": describe_verbs(), "read": "GET /api/v1/VERB?ARG=VALUE",
                  "act": "POST /api/v1/VERB with a JSON object of arguments",
                  "log": "GET /api/v1/runs/RUN_ID/log, /api/v1/runs/RUN_ID/log/stream"})


async def verb(request: web.Request) -> web.Response:
    name = request.match_info["verb"]
    if name not in VERBS:
        return failure(ProtocolError(ErrorCode.BAD_REQUEST, f"unknown verb {name!r}; known: "
                                     f"{', '.join(VERBS)}"), status=404)
    try:
        if request.method == "POST":
            message = await _body(request)
            message["cmd"] = name
        else:
            message = from_query(name, request.query, request.query.getall)
        parsed = parse_request(message)
        if request.method != "POST" and is_action(parsed):
            return failure(ProtocolError(ErrorCode.BAD_REQUEST,
                                         f"{name} changes something: send it as a POST"),
                           status=405)
        return reply(await call(request, parsed))
    except ProtocolError as exc:
        return failure(exc)
    except Exception as exc:  # one bad request must never stop the daemon
        log.exception("HTTP request failed: %s %s", request.method, request.path)
        return failure(ProtocolError(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); "
                                     "the daemon logged it"))


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_LINE:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the request is too large")
    raw = await request.read()
    return json_object(raw, "the body") if raw.strip() else {}


async def run_log(request: web.Request) -> web.Response:
    """The run's output as text; `?stderr=true` its stderr (with log.stderr: split),
    `?download=true` as a file."""
    try:
        stderr, download = _flag(request, "stderr"), _flag(request, "download")
        run = await call(request, RunInfo(run_id=request.match_info["run_id"]))
        logs = await call(request, Logs(task=run["task"], run=run["run_id"], stderr=stderr))
    except ProtocolError as exc:
        return failure(exc)
    headers = {"X-Torchd-Outcome": str(run["outcome"] or "running")}
    if download:
        headers["Content-Disposition"] = (
            f'attachment; filename="{_safe_name(run["task"])}-{run["run_id"]}.log"')
    return web.Response(text=logs["text"], content_type="text/plain", charset="utf-8",
                        headers=headers)


async def run_log_stream(request: web.Request) -> web.StreamResponse:
    try:
        run = await call(request, RunInfo(run_id=request.match_info["run_id"]))
    except ProtocolError as exc:
        return failure(exc)
    return await follow_run(request, run)


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{name}' must be true or false")
    return text in ("true", "1")


def _safe_name(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task)[:100]
