"""Screens 4 and 5: the runs of every task (`/runs`, filtered by task, outcome, trigger,
host and time, paged), and one run (`/runs/ID`): its timings, its output followed live
(Server-Sent Events, by static/dashboard.js; without JavaScript, the output as it was when
the page was made), its download, Kill."""

from __future__ import annotations

from aiohttp import web

from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.verbs import History, Logs, Ping, RunInfo
from torchd.core.durations import parse_duration
from torchd.core.errors import DurationError
from torchd.core.model import Trigger
from torchd.core.schedule.zones import parse_instant
from torchd.web.context import call, context_of
from torchd.web.dashboard.common import (
    PAGE_SIZE,
    Refused,
    ask,
    failure_page,
    page_number,
    query_without,
    shown,
)
from torchd.web.dashboard.tasks import OUTCOMES
from torchd.web.render import page

TRIGGERS = tuple(str(t) for t in Trigger)
LOG_LINES = 500


def add_routes(app: web.Application) -> None:
    app.router.add_get("/runs", run_list)
    app.router.add_get("/runs/{run_id}", run_detail)


def _instant(text: str, zone: str, now: float, name: str) -> float | None:
    """A time filter: a duration ago (`2h`), or an ISO 8601 time (in the daemon's zone if
    it names none)."""
    if not text:
        return None
    try:
        return now - parse_duration(text)
    except DurationError:
        pass
    try:
        return parse_instant(text, zone)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"{name}: '{text}' is neither a duration "
                            "ago (2h, 1d) nor a time such as 2026-11-22T10:00") from None


async def run_list(request: web.Request) -> web.Response:
    query = request.query
    filters = {key: query.get(key, "").strip() for key in
               ("task", "outcome", "trigger", "host", "since", "until")}
    number = page_number(request)
    now = context_of(request).clock.time()
    try:
        zone = (await ask(request, Ping()))["timezone"] if (
            filters["since"] or filters["until"]) else "UTC"
        try:
            since = _instant(filters["since"], zone, now, "since")
            until = _instant(filters["until"], zone, now, "until")
        except ProtocolError as exc:
            return failure_page(request, exc)
        history = await ask(request, History(
            task=filters["task"] or None, outcome=filters["outcome"] or None,
            trigger=filters["trigger"] or None, host=filters["host"] or None, since=since,
            until=until, limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE))
    except Refused as refused:
        return refused.response
    runs = history["runs"]
    return page(request, "runs.html", runs=runs[:PAGE_SIZE], more=len(runs) > PAGE_SIZE,
                page_no=number, filters=filters, outcomes=OUTCOMES, triggers=TRIGGERS,
                base=query_without(request, "page"), here=request.path_qs,
                enabled=history["enabled"], shown=shown(request))


async def run_detail(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    try:
        run = await ask(request, RunInfo(run_id=run_id), missing=404)
    except Refused as refused:
        return refused.response
    text = ""
    if run["log_start"] is not None or run["outcome"] == "start-error":
        try:
            logs = await call(request, Logs(task=run["task"], run=run_id, lines=LOG_LINES))
            text = logs["text"]
        except ProtocolError:
            text = ""
    return page(request, "run.html", run=run, text=text, here=request.path_qs,
                shown=shown(request))
