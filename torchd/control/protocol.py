"""Control messages: one JSON object per line each way. Pure.

Request: {"cmd": "status", ...arguments}
Reply:   {"ok": true, "result": ...} or {"ok": false, "error": {"code": C, "message": M}}
"""

from __future__ import annotations

import json
from collections.abc import Collection
from enum import StrEnum
from typing import Any

MAX_LINE = 1 << 20


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad-request"  # not JSON, not an object, missing or unknown cmd
    BAD_ARGUMENT = "bad-argument"
    CONFIG = "config"  # the task file is invalid
    FORBIDDEN = "forbidden"  # the peer is not root, the daemon's user, or in socket_group
    INTERNAL = "internal"  # a bug: logged by the daemon with its traceback
    STOPPING = "stopping"  # the daemon is stopping and does not take this request
    UNAVAILABLE = "unavailable"  # cannot be done now (no file descriptors, a disk error)


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """The JSON object `raw` holds (`what` names it in a refusal: "a request line", "the
    body"): the socket's and HTTP's one parse of a request."""
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the request is nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what} must be a JSON object")
    return message


def decode_request(line: bytes, known: Collection[str]) -> dict[str, Any]:
    """The request object of one line, whose `cmd` is one of `known`."""
    message = json_object(line, "a request line")
    cmd = message.get("cmd")
    if not isinstance(cmd, str) or cmd not in known:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"unknown cmd {cmd!r}; known: {', '.join(known)}")
    return message


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": str(code), "message": message}}
