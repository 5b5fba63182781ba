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


LAUNCH_WINDOW = 10.0  # a process older than this at the call did not start to run torchd


def launch_instant(window: float = LAUNCH_WINDOW) -> float:
    """Wall-clock time this process started (to the kernel's 10 ms tick), or now if it
    started more than `window` seconds ago (torchd called from a longer-lived program) or
    its age cannot be read. psutil's create_time is not used: it adds the boot time from
    /proc/stat, which is truncated to the whole second."""
    import os  # noqa: PLC0415 - only start-up reads /proc

    now = time.time()
    try:
        with open("/proc/self/stat", "rb") as stat:
            # Field 22, counted after the command name, which may hold blanks and ')'.
            fields = stat.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return now
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    return now - age if 0.0 <= age <= window else now


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
