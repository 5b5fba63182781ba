"""HTML pages from Jinja2 templates, always autoescaped."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from torchd import __version__
from torchd.web.auth import Role, role_of
from torchd.web.context import context_of

HTMX = "htmx-2.0.11.min.js"  # vendored: see static/VENDORED.md


def make_templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("torchd.web", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def page(request: web.Request, template: str, *, status: int = 200,
         **values: Any) -> web.Response:
    """`template` rendered with `values` and what every page shows (the role, whether
    actions are possible, the version)."""
    context = context_of(request)
    role = role_of(request)
    html = context.templates.get_template(template).render(
        htmx=HTMX, version=__version__, role=str(role), path=request.path,
        can_act=role is Role.ADMIN and not context.settings.read_only, **values)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)
