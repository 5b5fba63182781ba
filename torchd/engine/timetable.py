"""The timetable: a heap of (due time, sequence, task, token) entries, and the precise
wait before an instant. The loop sleeps until the earliest entry (or a wake-up) and takes
what is due; it never scans every task. An entry whose token is not its task's current
one was made stale by a reload and is ignored by whoever takes it."""

from __future__ import annotations

import contextlib
import heapq
import time
from collections import deque

from torchd.core.clock import Clock

# The loop wakes this early before a fire and sleeps the rest precisely (the selector's
# timeout is whole milliseconds).
PRECISE_WINDOW = 0.002
# When at least PREPARE_FROM fires are due at the coming instant, the loop wakes
# PREPARE_WINDOW early instead (a wake-up after a long sleep can take 1-3 ms on a shared
# VM), or PREPARE_PER_FIRE for each fire when that is longer (up to PREPARE_WINDOW_MAX),
# settles the coming fires and builds their launch requests, then sleeps the rest, so
# that at the instant only processes are started. It stops preparing PREPARE_MARGIN before
# the instant; the rest is prepared as it starts. With fewer fires it saves little (about
# 0.1 ms each), and the longer sleep costs the loop a colder start afterwards
# (measured with `python -m bench lateness`: see docs/benchmarks.md).
PREPARE_FROM = 4
PREPARE_WINDOW = 0.005
PREPARE_PER_FIRE = 0.00005  # settling a fire and building its request: 40-50 us here
PREPARE_WINDOW_MAX = 0.1
PREPARE_COUNT_MAX = round(PREPARE_WINDOW_MAX / PREPARE_PER_FIRE)  # more wakes no earlier
PREPARE_MARGIN = 0.0002

HeapEntry = tuple[float, int, str, int]  # due time, sequence, task, token


def due_together(heap: list[HeapEntry], limit: int) -> int:
    """How many entries of the timetable share its earliest due time, counted up to
    `limit`.

    In a heap every ancestor of an entry is due no later than it, so the entries due at the
    earliest time form a subtree at the root: a walk from the root that stops at later
    entries finds them, and looks at no more than 2 * limit + 1 entries.
    """
    if not heap:
        return 0
    first = heap[0][0]
    found = 0
    pending = [0]
    while pending and found < limit:
        index = pending.pop()
        if index < len(heap) and heap[index][0] == first:
            found += 1
            pending += (2 * index + 1, 2 * index + 2)
    return found


def wake_window(due_at_once: int) -> float:
    """How long before an instant the loop wakes, for the number of fires due at it."""
    if due_at_once < PREPARE_FROM:
        return PRECISE_WINDOW
    return min(PREPARE_WINDOW_MAX, max(PREPARE_WINDOW, due_at_once * PREPARE_PER_FIRE))


class Timetable:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[HeapEntry] = []
        self._seq = 0

    def push(self, due: float, task: str, token: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, task, token))

    def earliest(self) -> float | None:
        """The earliest instant on the timetable (maybe of a stale entry, which only makes
        it early), or None when nothing is due."""
        return self._heap[0][0] if self._heap else None

    def take_due(self, until: float) -> deque[HeapEntry]:
        """The entries due by `until`, earliest first, off the timetable."""
        heap = self._heap
        taken: deque[HeapEntry] = deque()
        while heap and heap[0][0] <= until:
            taken.append(heapq.heappop(heap))
        return taken

    def wake_window(self) -> float:
        """How long before its earliest instant the loop wakes."""
        return wake_window(due_together(self._heap, PREPARE_COUNT_MAX))


def sleep_until(clock: Clock, instant: float, window: float) -> None:
    """Block until the wall clock reaches `instant`, at most twice the `window` the loop
    woke early by (and 10 ms in any case): fires taken from the timetable for it start
    no sooner, and a clock stepped back meanwhile does not hold them (their instant was
    reached on the clock that was in force)."""
    give_up = time.monotonic() + 2 * max(window, PREPARE_WINDOW)
    while (left := instant - clock.time()) > 0 and time.monotonic() < give_up:
        with contextlib.suppress(OSError):  # EINVAL seen under libfaketime
            time.sleep(left)
