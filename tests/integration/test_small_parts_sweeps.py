"""The timetable's due_together against a plain count, over many random heaps (the other
small parts are in tests/unit/test_small_parts.py)."""

from __future__ import annotations

import heapq
import random

from torchd.engine.timetable import HeapEntry, due_together


def test_due_together_counts_the_entries_sharing_the_earliest_instant() -> None:
    """Checked against a plain count over every entry, on heaps built by pushes and pops
    with many ties (the case the walk relies on heap order for)."""
    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    assert due_together([], 1) == 0
    for _ in range(2000):
        heap: list[HeapEntry] = []
        for seq in range(rng.randint(1, 60)):
            heapq.heappush(heap, (float(rng.randint(0, 4)), seq, f"t{seq}", 0))
        for _ in range(rng.randint(0, 5)):
            if len(heap) > 1:
                heapq.heappop(heap)
        sharing = sum(1 for entry in heap if entry[0] == heap[0][0])
        for limit in range(1, 30):
            assert due_together(heap, limit) == min(sharing, limit), (heap, limit)
