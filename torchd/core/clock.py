"""Time sources. The scheduler takes a Clock so tests can drive time deterministically."""

from __future__ import annotations

import time
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

