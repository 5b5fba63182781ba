"""Conditions an operator must know of now, shown by `status`: a full disk, no file
descriptors left, Redis away, a clock that was corrected, a task file that cannot be
watched. Each part of the daemon reports its own under a key of its own, and clears it
when the condition is over; the log says the same once, when it starts and when it ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from torchd.core.timefmt import iso_utc

log = logging.getLogger("torchd.health")


@dataclass(frozen=True, slots=True)
class Problem:
    key: str  # who reports it: descriptors, task-logs, history, fire-ledger, cluster, ...
    message: str
    since: float  # wall clock


class Health:
    """The daemon's current problems; safe to report from any thread."""

    def __init__(self, clock_time: Callable[[], float]) -> None:
        self._time = clock_time
        self._problems: dict[str, Problem] = {}
        self._lock = threading.Lock()

    def report(self, key: str, message: str) -> None:
        """The condition holds (now, still, or again): logged when it begins."""
        with self._lock:
            known = self._problems.get(key)
            since = known.since if known is not None else self._time()
            self._problems[key] = Problem(key, message, since)
        if known is None:
            log.error("%s", message)

    def clear(self, key: str) -> None:
        """The condition is over (if it held): logged."""
        if key not in self._problems:  # the common case, without the lock
            return
        with self._lock:
            problem = self._problems.pop(key, None)
        if problem is not None:
            log.warning("no longer: %s (since %s)", problem.message, iso_utc(problem.since))

    def view(self) -> list[dict[str, str]]:
        with self._lock:
            problems = sorted(self._problems.values(), key=lambda p: p.since)
        return [{"key": p.key, "message": p.message, "since": iso_utc(p.since)}
                for p in problems]
