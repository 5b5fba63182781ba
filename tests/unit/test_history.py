"""The history store's pure batching rules: which statements a batch of records becomes (the
store on a real SQLite file is tested in tests/integration/test_history_sqlite.py)."""

from __future__ import annotations

from torchd.store.history import INSERT_FINISHED, INSERT_STARTED, UPDATE_ENDED, statements


def test_a_run_that_ends_in_the_batch_of_its_start_is_one_finished_row() -> None:
    records = [("INSERT INTO hook_calls (at) VALUES (?)", (1.0,)),
               (INSERT_STARTED, ("short", 1)), (INSERT_STARTED, ("long", 2)),
               (UPDATE_ENDED, (3, "short")), (UPDATE_ENDED, (4, "earlier"))]
    assert statements(records) == [
        ("INSERT INTO hook_calls (at) VALUES (?)", (1.0,)),
        (INSERT_FINISHED, ("short", 1, 3)),
        (INSERT_STARTED, ("long", 2)),
        (UPDATE_ENDED, (4, "earlier")),
    ]
