"""How the dashboard writes what it shows: times in a task's zone with how far from now
(core.timefmt's text form), lengths of time, a schedule in words, an outcome's colour
class. One `Shown` per page, made with the page's `now`; templates call its methods."""

from __future__ import annotations

import functools
from datetime import tzinfo
from typing import Any

from cron_descriptor import ExpressionDescriptor, Options

from torchd.core.errors import TorchdError
from torchd.core.model import FAILED_OUTCOMES
from torchd.core.schedule.cronfields import MACROS
from torchd.core.schedule.zones import load_zone
from torchd.core.timefmt import from_iso, local_iso, relative, span

FAILED = FAILED_OUTCOMES  # StrEnum members: equal to their text
NOT_RUN = frozenset({"skipped", "missed", "dropped"})
MACRO_WORDS = {"@reboot": "once, when the daemon starts"}


@functools.lru_cache(maxsize=4096)
def schedule_words(text: str | None) -> str:
    """A schedule in words: `0 30 9 * * MON-FRI` is "At 09:30, Monday through Friday";
    '' when there is nothing to say beyond the text itself."""
    if not text:
        return ""
    stripped = " ".join(text.split())
    lowered = stripped.lower()
    if lowered in MACRO_WORDS:
        return MACRO_WORDS[lowered]
    if lowered.startswith("@every "):
        return f"every {stripped[7:].strip()}, counted from when the task was loaded"
    if lowered.startswith("@random "):
        low, _, high = stripped[8:].strip().partition(" ")
        return f"after a random {low} to {high.strip()}, drawn again after each fire"
    if lowered.startswith("at "):
        return "once"
    expression = MACROS.get(lowered, stripped)
    options = Options()
    options.locale_code = "en_US"
    options.use_24hour_time_format = True
    try:
        return str(ExpressionDescriptor(expression, options).get_description())
    except Exception:  # noqa: BLE001 - a form the library does not know: the text alone
        return ""


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo | None:
    try:
        return load_zone(name)
    except TorchdError:
        return None


class Shown:
    """Formatting for one page, relative to `now` (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def at(self, iso: str | None, zone: str | None = None) -> str:
        """`2026-11-22T11:05:00+01:00` in `zone` (the host's if None or unknown)."""
        if not iso:
            return ""
        return local_iso(from_iso(iso), _zone(zone) if zone else None)

    def ago(self, iso: str | None) -> str:
        """`in 4m 10s`, `2h 5m ago`."""
        return relative(from_iso(iso), self.now) if iso else ""

    def seconds_since(self, iso: str | None) -> float:
        return self.now - from_iso(iso) if iso else 0.0

    def span(self, seconds: float | None) -> str:
        """`45s`, `4m 10s`; under ten seconds to the tenth: `1.3s`."""
        if seconds is None:
            return ""
        return f"{seconds:.1f}s" if seconds < 10 else span(seconds)

    def schedule(self, text: str | None) -> str:
        return schedule_words(text)

    @staticmethod
    def outcome_class(outcome: str | None) -> str:
        """The CSS class of an outcome: ok, bad, skip, running, other."""
        if outcome is None or outcome == "running":
            return "running"
        if outcome == "ok":
            return "ok"
        if outcome in FAILED:
            return "bad"
        if outcome in NOT_RUN:
            return "skip"
        return "other"

    @staticmethod
    def result(run: dict[str, Any]) -> str:
        """`exit 0`, `signal 9`, or ''."""
        if run.get("signal") is not None:
            return f"signal {run['signal']}"
        if run.get("exit_code") is not None:
            return f"exit {run['exit_code']}"
        return ""

    def lateness(self, run: dict[str, Any]) -> str:
        """Start minus scheduled, for a run that started at a scheduled time."""
        if not run.get("started") or not run.get("scheduled"):
            return ""
        late = from_iso(run["started"]) - from_iso(run["scheduled"])
        return f"{late * 1000:.0f} ms" if abs(late) < 10 else span(late)
