"""Screen 6, the daily plan: `/plan`, the past and next hours of the tasks as one SVG
(see plansvg), PAGE tasks a page, filtered by name on the server, through the
`timeline` verb. A GET form and links: it works without JavaScript."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from torchd.control.protocol import ProtocolError
from torchd.control.verbs import Timeline
from torchd.core.errors import TorchdError
from torchd.core.schedule.zones import load_zone
from torchd.web.context import call
from torchd.web.dashboard.plansvg import OUTCOME_COLOURS, draw
from torchd.web.render import page

PAGE = 50
# What the window menu offers: its name -> (hours a side, seconds a slot).
WINDOWS = {"6h": (6.0, 60), "24h": (24.0, 300), "72h": (72.0, 900), "7d": (168.0, 3600)}
DEFAULT_WINDOW = "24h"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/plan", plan)


async def plan(request: web.Request) -> web.Response:
    match = request.query.get("match", "")[:200]
    window = request.query.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        window = DEFAULT_WINDOW
    try:
        number = max(int(request.query.get("page", "1")), 1)
    except ValueError:
        number = 1
    hours, slot = WINDOWS[window]
    try:
        reply = await call(request, Timeline(match=match, offset=(number - 1) * PAGE,
                                             count=PAGE, hours=hours, slot=slot))
    except ProtocolError as exc:
        return page(request, "plan.html", status=400, error=str(exc), match=match,
                    window=window, windows=list(WINDOWS), reply=None, svg="", pages=0,
                    number=number, links={}, colours=OUTCOME_COLOURS)
    pages = max((reply["total"] + PAGE - 1) // PAGE, 1)
    if number > pages:
        raise web.HTTPSeeOther(_link(match, window, pages))
    try:
        zone = load_zone(reply["timezone"])
    except (TorchdError, ValueError):
        zone = load_zone("UTC")
    links = {"prev": _link(match, window, number - 1) if number > 1 else None,
             "next": _link(match, window, number + 1) if number < pages else None,
             "first": _link(match, window, 1), "last": _link(match, window, pages)}
    return page(request, "plan.html", error=None, match=match, window=window,
                windows=list(WINDOWS), reply=reply, svg=draw(reply, zone) if reply["tasks"]
                else "", pages=pages, number=number, links=links, colours=OUTCOME_COLOURS)


def _link(match: str, window: str, number: int) -> str:
    query = {"match": match, "window": window if window != DEFAULT_WINDOW else "",
             "page": str(number) if number > 1 else ""}
    return "/plan?" + urlencode({k: v for k, v in query.items() if v})
