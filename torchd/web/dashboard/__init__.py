"""The dashboard's pages: server-rendered HTML, readable without JavaScript; htmx (when
there is JavaScript) refreshes parts and sends actions as POSTs. One module per screen or
small group of screens; each adds its own routes here."""

from __future__ import annotations

from aiohttp import web

from torchd.web.dashboard import actions, hosts, overview, plan, runs, tasks


def add_routes(app: web.Application) -> None:
    overview.add_routes(app)
    tasks.add_routes(app)
    runs.add_routes(app)
    actions.add_routes(app)
    plan.add_routes(app)
    hosts.add_routes(app)
