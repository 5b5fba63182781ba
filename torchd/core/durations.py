"""The one parser for durations in the task file and on the command line."""

from __future__ import annotations

import re

from torchd.core.errors import DurationError

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like '90', '30s', '5m', '1h30m', '250ms'."""
    if isinstance(value, bool):
        raise DurationError(value)
    if isinstance(value, int | float):
        if value < 0:
            raise DurationError(value)
        return float(value)
    if not isinstance(value, str):
        raise DurationError(value)
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            raise DurationError(value)
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise DurationError(value)
    return total
