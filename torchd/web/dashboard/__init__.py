"""The dashboard's pages: server-rendered HTML, readable without JavaScript; htmx (when
there is JavaScript) refreshes parts and sends actions as POSTs."""

from __future__ import annotations

from aiohttp import web

from torchd.control.verbs import Status
from torchd.web.context import call
from torchd.web.dashboard import hosts, plan
from torchd.web.render import page


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    plan.add_routes(app)
    hosts.add_routes(app)


async def overview(request: web.Request) -> web.Response:
    status = await call(request, Status())
    return page(request, "overview.html", status=status)
