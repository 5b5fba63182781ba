"""Screens 2 and 3: every task (`/tasks`, filtered and paged on the server, so that ten
thousand tasks cost one page of rows), and one task (`/tasks/NAME`): its definition, next
fires, durations, history and log."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

from aiohttp import web

from torchd.control.listing import idle_reason
from torchd.control.protocol import ProtocolError
from torchd.control.verbs import History, Logs, Recent, Status, TaskIndex, TaskInfo
from torchd.web.context import call
from torchd.web.dashboard.charts import duration_chart
from torchd.web.dashboard.common import (
    PAGE_SIZE,
    Refused,
    ask,
    page_number,
    query_without,
    shown,
)
from torchd.web.dashboard.shown import FAILED
from torchd.web.render import page

SQUARES = 20  # the last runs shown per task
STATES = ("all", "running", "paused", "failing", "disabled", "other host")
HISTORY_PAGE = 50
CHART_RUNS = 60
LOG_LINES = 200
OUTCOMES = ("ok", "failed", "timeout", "killed", "start-error", "lost", "skipped", "missed",
            "dropped", "running")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/tasks", task_list)
    app.router.add_get("/tasks/{name}", task_detail)


def _source_text(source: str | None) -> str | None:
    """A task's text as the file has it, its later lines dedented to line up with the first
    (which starts after the list's `- `)."""
    if not source:
        return source
    first, _, rest = source.partition("\n")
    return first + ("\n" + textwrap.dedent(rest) if rest else "")


def _state(task: dict[str, Any]) -> list[str]:
    """The words of a task's state column."""
    words = []
    if not task["enabled"]:
        words.append("disabled")
    if not task["for_this_host"]:
        words.append("not for this host")
    if task["paused"]:
        words.append("paused")
    if task["runs"]:
        words.append("running")
    return words


def _matches(task: dict[str, Any], needle: str, state: str) -> bool:
    """Whether a task of the `index` reply passes the filter box and the state menu."""
    if needle and needle not in task["name"].lower() and needle not in (
            task["schedule"] or "").lower():
        return False
    return (state == "all"
            or (state == "running" and bool(task["running"]))
            or (state == "paused" and task["paused"])
            or (state == "failing" and task["last_outcome"] in FAILED)
            or (state == "disabled" and not task["enabled"])
            or (state == "other host" and not task["for_this_host"]))


async def task_list(request: web.Request) -> web.Response:
    needle = request.query.get("q", "").strip()
    state = request.query.get("state", "all")
    state = state if state in STATES else "all"
    number = page_number(request)
    try:
        index = (await ask(request, TaskIndex()))["tasks"]
        lowered = needle.lower()
        chosen = [t["name"] for t in index if _matches(t, lowered, state)]
        pages = max((len(chosen) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        number = min(number, pages)
        names = chosen[(number - 1) * PAGE_SIZE: number * PAGE_SIZE]
        rows, recent = await asyncio.gather(
            ask(request, Status(tasks=names)),
            ask(request, Recent(tasks=names, count=SQUARES, hours=0)))
        rows = rows["tasks"]
    except Refused as refused:
        return refused.response
    for row in rows:
        row["recent"] = list(reversed(recent["tasks"].get(row["name"], {}).get("runs", [])))
        row["state_words"] = _state(row)
        row["idle"] = idle_reason(row)  # why there is no next fire, as `list` says it
    here = request.path_qs
    return page(request, "tasks.html", rows=rows, total=len(index),
                matched=len(chosen), q=needle, state=state, states=STATES, page_no=number,
                pages=pages, base=query_without(request, "page"), here=here,
                shown=shown(request))


async def task_detail(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    outcome = request.query.get("outcome", "")
    outcome = outcome if outcome in OUTCOMES else ""
    number = page_number(request)
    try:
        info = await ask(request, TaskInfo(task=name, count=10), missing=404)
        recent = await ask(request, Recent(tasks=[name], count=CHART_RUNS, hours=0))
        history = await ask(request, History(task=name, outcome=outcome or None,
                                             limit=HISTORY_PAGE + 1,
                                             offset=(number - 1) * HISTORY_PAGE))
    except Refused as refused:
        return refused.response
    try:
        logs = await call(request, Logs(task=name, lines=LOG_LINES))
    except ProtocolError:
        logs = None  # no run yet
    runs = history["runs"]
    mine = recent["tasks"][name]
    seen = shown(request)
    task = info["task"]
    task["state_words"] = _state(task)
    linked = [*task.get("upstreams", []), *task.get("downstreams", [])]
    try:
        neighbours = {t["name"]: t for t in (
            await ask(request, Status(tasks=linked)))["tasks"]} if linked else {}
    except Refused as refused:
        return refused.response
    return page(request, "task.html", info=info, task=task, source=_source_text(info["source"]),
                chart=duration_chart(mine["runs"], mine["typical_duration"], seen),
                typical=mine["typical_duration"], runs=runs[:HISTORY_PAGE],
                more=len(runs) > HISTORY_PAGE, page_no=number, outcome=outcome,
                outcomes=OUTCOMES, logs=logs, base=query_without(request, "page"),
                here=request.path_qs, shown=seen, neighbours=neighbours)
