"""Time sources. The scheduler takes a Clock so tests can drive time deterministically."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (may jump)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso_utc(ts: float) -> str:
    """ISO 8601 in UTC with a Z suffix and whole milliseconds."""
    return utc_from_timestamp(ts).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def host_timezone_name() -> str:
    """IANA name of this host's zone: $TZ, else /etc/localtime's target, else /etc/timezone."""
    import os  # noqa: PLC0415 - only the default-zone lookup needs the filesystem
    from pathlib import Path  # noqa: PLC0415

    env = os.environ.get("TZ", "").lstrip(":")
    if env and not env.startswith("/"):
        return env
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        target = ""
    marker = "/zoneinfo/"
    if marker in target:
        return target.split(marker, 1)[1]
    try:
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()
    except OSError:
        name = ""
    return name or "UTC"
