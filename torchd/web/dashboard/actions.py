"""The dashboard's actions: `POST /act/VERB` with the verb's fields as a form (run now,
pause, resume, kill). Without JavaScript the answer is a 303 back to the page the form
names (`next`), or to the new run's page for a run started now; htmx posts the same form
and swaps the part of that page the form names. Every action goes through `call`, so a
viewer or a read-only listener is refused and the action is audited."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDict

from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.verbs import from_query, parse_request
from torchd.web.dashboard.common import Refused, ask, failure_page, local_target

ACTIONS = frozenset({"trigger", "kill", "pause", "resume"})
FORM_ONLY = frozenset({"next"})  # fields of the form that are not the verb's


def add_routes(app: web.Application) -> None:
    app.router.add_post("/act/{verb}", act)


async def act(request: web.Request) -> web.StreamResponse:
    name = request.match_info["verb"]
    if name not in ACTIONS:
        return failure_page(request, ProtocolError(
            ErrorCode.BAD_REQUEST, f"no action {name!r}; actions: {', '.join(sorted(ACTIONS))}"),
            status=404)
    form = await request.post()
    fields: MultiDict[str] = MultiDict(
        (key, value) for key, value in form.items()
        if isinstance(value, str) and key not in FORM_ONLY and value != "")
    back = local_target(form.get("next"))
    try:
        verb = parse_request(from_query(name, fields, fields.getall))
    except ProtocolError as exc:
        return failure_page(request, exc)
    try:
        reply = await ask(request, verb)
    except Refused as refused:
        return refused.response
    if name == "trigger" and reply.get("status") == "started" and not form.get("next"):
        back = f"/runs/{reply['run_id']}"
    raise web.HTTPSeeOther(back)
