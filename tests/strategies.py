"""Hypothesis strategies for the schedule sweeps in tests/integration: random valid cron
expressions."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from torchd.core.errors import ScheduleError
from torchd.core.schedule.cronexpr import parse_schedule

_UTC_ZONE = ZoneInfo("UTC")


def _field_text(low: int, high: int, *, star: bool) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    step = st.integers(1, max(1, (high - low) // 2))
    bounded_range = st.tuples(value, value).map(lambda ab: (min(ab), max(ab)))
    parts = [
        value.map(str),
        bounded_range.map(lambda ab: f"{ab[0]}-{ab[1]}"),
        st.tuples(bounded_range, step).map(lambda r: f"{r[0][0]}-{r[0][1]}/{r[1]}"),
        bounded_range.filter(lambda ab: ab[0] < ab[1]).map(lambda ab: f"{ab[1]}-{ab[0]}"),
    ]
    if star:
        parts.append(step.map(lambda k: f"*/{k}"))
    single = st.one_of(*parts)
    listed = st.lists(single, min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), listed)


@st.composite
def cron_expressions(draw: st.DrawFn, *, dense: bool = False, day_star_steps: bool = True
                     ) -> str:
    """Random valid 6-field expressions. Dense ones fire often enough for short windows:
    time fields lean to '*' and steps, day fields to '*'."""
    def pick(low: int, high: int, star_weight: float, *, star: bool = True) -> str:
        if draw(st.floats(0, 1)) < star_weight:
            return "*"
        return draw(_field_text(low, high, star=star))

    lean = 0.5 if dense else 0.2
    day_lean = 0.85 if dense else 0.5
    while True:
        fields = [
            pick(0, 59, lean), pick(0, 59, lean), pick(0, 23, lean),
            pick(1, 31, day_lean, star=day_star_steps), pick(1, 12, day_lean),
            pick(0, 7, day_lean, star=day_star_steps),
        ]
        expression = " ".join(fields)
        try:
            parse_schedule(expression, _UTC_ZONE)
        except ScheduleError:
            continue  # e.g. only February 30th; the validator's own tests cover those
        return expression
