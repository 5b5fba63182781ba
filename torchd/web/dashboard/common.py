"""What the dashboard's pages share: asking a verb with a page for a refusal, local
redirect targets, paging."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.verbs import Request
from torchd.web.api import HTTP_STATUS
from torchd.web.context import call, context_of
from torchd.web.dashboard.shown import Shown
from torchd.web.render import page

PAGE_SIZE = 50


class Refused(Exception):
    """A verb refused: `response` is the page that says so."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def failure_page(request: web.Request, exc: ProtocolError, *,
                 status: int | None = None) -> web.Response:
    return page(request, "error.html", status=status or HTTP_STATUS.get(exc.code, 400),
                message=str(exc), shown=shown(request))


async def ask(request: web.Request, verb: Request, *, missing: int | None = None) -> Any:
    """The verb's reply; a refusal becomes Refused with its page (`missing`: the status
    of a bad-argument, e.g. 404 for a task or run that does not exist)."""
    try:
        return await call(request, verb)
    except ProtocolError as exc:
        status = missing if exc.code == ErrorCode.BAD_ARGUMENT else None
        raise Refused(failure_page(request, exc, status=status)) from None


def shown(request: web.Request) -> Shown:
    return Shown(context_of(request).clock.time())


def local_target(text: object, default: str = "/") -> str:
    """A redirect target that stays on this site: a path, never `//host` or a URL."""
    if (not isinstance(text, str) or not text.startswith("/") or text.startswith("//")
            or "\\" in text or any(ord(c) < 32 for c in text)):
        return default
    return text


def page_number(request: web.Request) -> int:
    text = request.query.get("page", "1")
    return max(int(text), 1) if text.isdigit() else 1


def query_without(request: web.Request, *names: str) -> dict[str, str]:
    """The page's query without `names` (for links that change only those)."""
    return {k: v for k, v in request.query.items() if k not in names and v}
