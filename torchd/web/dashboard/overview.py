"""Screen 1, the overview (`/`): what needs attention, what runs now, what fires next,
the last 24 hours in counts, and the operators' latest actions. `/?part=live` is the same
page; htmx refreshes its live part every few seconds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from torchd.control.protocol import ProtocolError
from torchd.control.verbs import Audit, ClusterView, Glance, History, Recent, Status
from torchd.core.timefmt import from_iso, span
from torchd.web.context import call, context_of
from torchd.web.dashboard.common import Refused, ask, shown
from torchd.web.dashboard.shown import FAILED, NOT_RUN
from torchd.web.render import page

NEXT_FIRES = 10
SHOWN_PER_KIND = 8  # names listed per kind of attention item; the rest are counted
LONG_RUN = 1.5  # a run this many times its typical duration (and LONG_RUN_MIN more)
LONG_RUN_MIN = 5.0  # seconds
MAX_ASKED = 100  # tasks of each kind whose recent runs the overview asks for
HEARTBEAT_LATE = 10.0  # seconds without a cluster heartbeat that mark a host down
SEEN_HEADER = "X-Torchd-Seen"
UNCHANGED_FOR = 60.0  # seconds an unchanged overview is kept by its poll at most


@dataclass(frozen=True, slots=True)
class Attention:
    kind: str  # failing | missed | never ran | running long | host down | problem
    names: list[str]  # tasks (or hosts) concerned, the first SHOWN_PER_KIND
    more: int  # how many more
    detail: str
    link: str | None  # where to see them all


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)


async def overview(request: web.Request) -> web.Response:
    context = context_of(request)
    now = context.clock.time()
    # htmx polls the live part every few seconds with the token of what it shows: while
    # nothing notable happened (a failure, a skip, an action: ControlApi.notable) and the
    # minute is the same, the answer is 204 and htmx keeps the page. Routine runs and the
    # countdowns are so refreshed once a minute, failures at the next poll, and an open
    # dashboard costs a busy daemon one render a minute.
    seen = f"{context.api.notable}-{int(now // UNCHANGED_FOR)}"
    if request.headers.get(SEEN_HEADER) == seen:
        return web.Response(status=204)
    try:
        glance, running, missed, failures, audit = await asyncio.gather(
            ask(request, Glance(count=NEXT_FIRES)),
            ask(request, History(outcome="running", limit=200)),
            ask(request, History(outcome="missed", since=now - 86400, limit=200)),
            ask(request, History(failed=True, since=now - 86400, limit=500)),
            ask(request, Audit(limit=15)))
        running, missed, failures = running["runs"], missed["runs"], failures["runs"]
        idle = glance["never_ran"]
        suspects = sorted({r["task"] for r in failures} | set(glance["failing"]))
        status, latest, recent = await asyncio.gather(
            ask(request, Status(tasks=glance["next"])),
            ask(request, Recent(tasks=suspects[:MAX_ASKED] + idle[:MAX_ASKED], count=3)),
            ask(request, Recent(tasks=sorted({r["task"] for r in running}), count=20,
                                hours=0)))
    except Refused as refused:
        return refused.response
    cluster = await _cluster(request)
    typical = {name: entry["typical_duration"] for name, entry in recent["tasks"].items()}
    failing = [name for name, entry in latest["tasks"].items()
               if _last_outcome(entry["runs"]) in FAILED]
    never = [name for name in idle if name in latest["tasks"]
             and not latest["tasks"][name]["runs"]]
    for run in running:
        run["elapsed"] = max(now - from_iso(run["started"] or run["at"]), 0.0)
        run["typical"] = typical.get(run["task"])
    next_fires = sorted(status["tasks"], key=lambda t: (t["next_fire"] or "", t["name"]))
    return page(request, "overview.html", daemon=status, task_count=glance["tasks"], seen=seen,
                shown=shown(request),
                attention=_attention(status, failing=failing, never=never,
                                           running=running, missed=missed, cluster=cluster),
                running=running, next_fires=next_fires,
                counts=latest["counts"], audit=audit["actions"], cluster=cluster)


async def _cluster(request: web.Request) -> dict[str, Any] | None:
    try:
        view: dict[str, Any] = await call(request, ClusterView())
    except ProtocolError:
        return None  # not in cluster mode
    return view


def _last_outcome(runs: list[dict[str, Any]]) -> str | None:
    """The outcome of the newest record that is a run (not a fire skipped or missed)."""
    return next((r["outcome"] for r in runs if r["outcome"] not in NOT_RUN), None)


def _attention(status: dict[str, Any], *, failing: list[str], never: list[str],
               running: list[dict[str, Any]], missed: list[dict[str, Any]],
               cluster: dict[str, Any] | None) -> list[Attention]:
    found: list[Attention] = []

    def add(kind: str, names: list[str], detail: str, link: str | None) -> None:
        if names:
            found.append(Attention(kind, names[:SHOWN_PER_KIND],
                                   max(len(names) - SHOWN_PER_KIND, 0), detail, link))

    for problem in status["problems"]:
        add("problem", [problem["key"]], problem["message"], None)
    add("failing", sorted(failing), "the last run failed", "/tasks?state=failing")
    add("missed", sorted({r["task"] for r in missed}), "fires missed in the last 24 h",
        "/runs?outcome=missed")
    add("never ran", sorted(never), "no run recorded, and no fire to come", None)
    long_runs = [r for r in running if r["typical"] is not None
                 and r["elapsed"] > max(r["typical"] * LONG_RUN, r["typical"] + LONG_RUN_MIN)]
    add("running long", [r["task"] for r in long_runs],
        "running longer than its usual duration", "/runs?outcome=running")
    if cluster is not None:
        if "error" in cluster:
            add("host down", [cluster["host_id"]], f"Redis: {cluster['error']}", "/hosts")
        now = from_iso(status["started"]) + status["uptime"]
        late = [f"{h['host_id']} ({span(now - from_iso(h['time']))})"
                for h in cluster.get("hosts", [])
                if isinstance(h.get("time"), str) and now - from_iso(h["time"]) > HEARTBEAT_LATE]
        add("host down", late, "no heartbeat lately", "/hosts")
    return found
