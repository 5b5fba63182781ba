"""How torchd writes an instant: one rule for every output. Pure.

Every instant is ISO 8601 with its offset:

- in JSON (every control reply, every `--json`) and in files: UTC to the millisecond,
  `2026-11-22T10:05:00.000Z`. Always that width, so such times sort as text.
- in text for people: to the second in the zone of the task it belongs to (the
  daemon's zone for the daemon's own times; UTC with `--utc`), `2026-11-22T11:05:00+01:00`,
  and where it helps, the distance from now beside it: `in 4m 10s`, `2h 5m ago`.

Both truncate: a time is never written later than it was.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

_UNITS = (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1))


def iso_utc(ts: float) -> str:
    """The JSON form: UTC, whole milliseconds, `Z`."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def from_iso(text: str) -> float:
    """Epoch seconds of an ISO 8601 time with an offset (`Z` included), as replies carry.
    ValueError if it is not one."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"'{text}' has no UTC offset")
    return moment.timestamp()


def local_iso(ts: float, zone: tzinfo | None) -> str:
    """The text form: to the second, in `zone` (None: this host's), with its offset."""
    moment = (datetime.fromtimestamp(ts).astimezone() if zone is None
              else datetime.fromtimestamp(ts, zone))
    return moment.isoformat(timespec="seconds")


def span(seconds: float) -> str:
    """A length of time in its two largest units, whole seconds: `45s`, `4m 10s`, `2h 5m`,
    `3d`."""
    left = max(int(seconds), 0)
    for big, size, small, small_size in _UNITS:
        if left >= size:
            count, rest = divmod(left, size)
            part = rest // small_size
            return f"{count}{big} {part}{small}" if part else f"{count}{big}"
    return f"{left}s"


def relative(ts: float, now: float) -> str:
    """`in 4m 10s`, `2h 5m ago`, or `now` within a second."""
    if abs(ts - now) < 1:
        return "now"
    return f"in {span(ts - now)}" if ts > now else f"{span(now - ts)} ago"
