"""Requests are parsed into their typed dataclasses, or refused with bad-argument."""

from __future__ import annotations

import pytest

from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.verbs import VERBS, History, Kill, Stop, Submit, Trigger, parse_request


def test_a_request_gets_its_defaults_and_its_values() -> None:
    assert parse_request({"cmd": "trigger", "task": "a", "wait": True}) == Trigger(
        task="a", force=False, wait=True)
    assert parse_request({"cmd": "history"}) == History(task=None, limit=20, failed=False,
                                                        since=None)
    assert parse_request({"cmd": "history", "since": 5}) == History(since=5)
    assert parse_request({"cmd": "history", "outcome": "running", "offset": 40}) == History(
        outcome="running", offset=40)
    assert parse_request({"cmd": "stop", "grace": None}) == Stop(grace=None)
    assert parse_request({"cmd": "submit", "command": ["true"]}) == Submit(command=["true"])
    assert parse_request({"cmd": "kill", "task": "a", "extra": 1}) == Kill(task="a")


@pytest.mark.parametrize(("message", "error"), [
    ({"cmd": "trigger"}, "'task' is required"),
    ({"cmd": "trigger", "task": 5}, "'task' has the wrong type"),
    ({"cmd": "trigger", "task": "a", "force": 1}, "'force' has the wrong type"),
    ({"cmd": "history", "limit": True}, "'limit' has the wrong type"),
    ({"cmd": "history", "limit": -1}, "'limit' must be 0 or more"),
    ({"cmd": "stop", "grace": -1}, "'grace' must be 0 or more"),
    ({"cmd": "stop", "grace": "10s"}, "'grace' has the wrong type"),
    ({"cmd": "submit", "command": ["true", 1]}, "'command' must be a list of text"),
    ({"cmd": "submit", "command": "true"}, "'command' has the wrong type"),
], ids=["missing", "text", "bool", "bool-for-int", "negative", "negative-float", "duration",
        "list-item", "not-a-list"])
def test_a_bad_field_is_a_bad_argument(message: dict[str, object], error: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(message)
    assert (caught.value.code, str(caught.value)) == (ErrorCode.BAD_ARGUMENT, error)


def test_every_verb_is_named_once() -> None:
    assert sorted(VERBS) == sorted({cls.verb for cls in VERBS.values()})
    assert {"reload", "stop"} <= set(VERBS)
