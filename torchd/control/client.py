"""Blocking client for the control socket (the CLI does not need an event loop)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from torchd.control.protocol import encode
from torchd.core.errors import ControlError


def call(socket_path: Path, cmd: str, *, timeout: float | None = 30.0, **args: Any) -> Any:
    """Send one request and return its result; raise ControlError on any failure.
    `timeout` None waits as long as the daemon takes (`trigger --wait`)."""
    request = {"cmd": cmd, **args}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(encode(request))
            chunks: list[bytes] = []
            while True:  # replies are not capped: status of 100,000 tasks is large
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\n"):
                    break
            data = b"".join(chunks)
    except FileNotFoundError:
        raise ControlError(f"no control socket at {socket_path}") from None
    except OSError as exc:
        raise ControlError(f"cannot talk to the daemon at {socket_path}: {exc}") from None
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        raise ControlError("the daemon sent an unreadable reply") from None
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise ControlError(str(err.get("message", "unknown error")), err.get("code"))
    return reply.get("result")
