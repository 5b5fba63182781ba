"""The plain reading of a cron expression's fields, shared by the schedule tests in
tests/unit and their sweeps in tests/integration (random expressions to feed them are in
tests/strategies.py, kept apart so that the unit tier does not load hypothesis)."""

from __future__ import annotations

_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = {"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8,
          "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12, "SUN": 0, "MON": 1, "TUE": 2, "WED": 3,
          "THU": 4, "FRI": 5, "SAT": 6}


def _value(text: str) -> int:
    return _NAMES[text.upper()] if text.upper() in _NAMES else int(text)


def _expand(field: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (_value(bound) for bound in span.split("-"))
            if high == 7 and last == 0 < first:  # day of week: MON-SUN is MON-7
                last = 7
        else:
            first = _value(span)
            last = high if step else first
        if first > last:  # wraps around (no step): to the top, then from the bottom
            values.update(range(first, high + 1), range(low, last + 1))
        else:
            values.update(range(first, last + 1, int(step) if step else 1))
    return values


def field_sets(expression: str) -> list[set[int]]:
    """The values each of a 6-field expression's fields allows, by the plain reading."""
    return [_expand(f, lo, hi) for f, (lo, hi) in zip(expression.split(), _RANGES, strict=True)]
