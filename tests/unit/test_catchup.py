"""The catchup policy over missed fires, and the ledger that remembers last fires."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from torchd.core.catchup import COUNT_LIMIT, decide
from torchd.core.model import CATCHUP_LIMIT, Catchup
from torchd.core.schedule.cronexpr import parse_schedule
from torchd.store.ledger import COMPACT_MIN_LINES, FireLedger, read_ledger

MINUTELY = parse_schedule("0 * * * * *", ZoneInfo("UTC"))
EVERY_SECOND = parse_schedule("* * * * * *", ZoneInfo("UTC"))
T0 = 1_800_000_000.0  # a whole minute (2027-01-15T08:00:00Z)


def test_none_runs_nothing_and_counts_every_missed_fire() -> None:
    decision = decide(MINUTELY, T0, T0 + 9 * 60, now=T0 + 9 * 60 + 30, policy=Catchup.NONE,
                      deadline=None)
    assert decision.run == ()
    assert (decision.missed, decision.counted_all) == (10, True)
    assert (decision.first, decision.last) == (T0, T0 + 9 * 60)
    assert decision.note == "catchup is none"


def test_last_runs_the_most_recent_once() -> None:
    decision = decide(MINUTELY, T0, T0 + 9 * 60, now=T0 + 9 * 60 + 30, policy=Catchup.LAST,
                      deadline=None)
    assert decision.run == (T0 + 9 * 60,)
    assert decision.missed == 9


@pytest.mark.parametrize(("policy", "deadline", "last_missed"), [
    (Catchup.NONE, None, T0 + 9 * 60),
    (Catchup.LAST, None, T0 + 8 * 60),  # the newest runs: the one before is the last missed
    (Catchup.ALL, 150, T0 + 7 * 60),  # 8 and 9 run (within 150 s of now)
    (Catchup.LAST, 30, T0 + 9 * 60),  # all too old: none runs
], ids=["none", "last", "all-deadline", "last-too-old"])
def test_the_last_missed_fire_is_the_last_one_not_run(policy: Catchup, deadline: float | None,
                                                      last_missed: float) -> None:
    """Log lines and history rows say "missed from FIRST to LAST": LAST must be a fire
    that did not run (issue 21)."""
    decision = decide(MINUTELY, T0, T0 + 9 * 60, now=T0 + 9 * 60 + 40, policy=policy,
                      deadline=deadline)
    assert decision.last_missed == last_missed
    assert decision.last_missed not in decision.run


def test_all_runs_each_oldest_first() -> None:
    decision = decide(MINUTELY, T0, T0 + 4 * 60, now=T0 + 4 * 60 + 30, policy=Catchup.ALL,
                      deadline=None)
    assert decision.run == tuple(T0 + k * 60 for k in range(5))
    assert decision.missed == 0


def test_starting_deadline_drops_older_fires() -> None:
    now = T0 + 9 * 60 + 30
    decision = decide(MINUTELY, T0, T0 + 9 * 60, now=now, policy=Catchup.ALL, deadline=150)
    assert decision.run == (T0 + 7 * 60, T0 + 8 * 60, T0 + 9 * 60)  # within 150 s of now
    assert decision.missed == 7
    assert decision.note == "older than starting_deadline (150s)"


def test_last_respects_the_deadline_too() -> None:
    decision = decide(MINUTELY, T0, T0 + 9 * 60, now=T0 + 9 * 60 + 40, policy=Catchup.LAST,
                      deadline=30)
    assert decision.run == ()
    assert decision.missed == 10
    assert decision.note == "all are older than starting_deadline (30s)"


def test_all_is_bounded_and_keeps_the_most_recent() -> None:
    end = T0 + 3600  # an hour of a per-second schedule: 3601 missed fires
    decision = decide(EVERY_SECOND, T0, end, now=end + 5, policy=Catchup.ALL, deadline=None)
    assert len(decision.run) == CATCHUP_LIMIT
    assert decision.run[-1] == end
    assert decision.run[0] == end - CATCHUP_LIMIT + 1
    assert decision.missed == 3601 - CATCHUP_LIMIT
    assert decision.note == f"catchup all runs at most the {CATCHUP_LIMIT} most recent"


def test_a_long_outage_is_counted_up_to_a_limit() -> None:
    end = T0 + 30 * 86400  # thirty days of a per-second schedule
    decision = decide(EVERY_SECOND, T0, end, now=end + 5, policy=Catchup.LAST, deadline=None)
    assert decision.run == (end,)
    assert decision.counted_all is False
    assert decision.missed == COUNT_LIMIT - 1


def test_ledger_keeps_the_latest_fire_per_task_across_reopen(tmp_path: Path) -> None:
    ledger = FireLedger(tmp_path / "fires.ledger")
    assert ledger.open() == {}
    ledger.record("a", 10.0)
    ledger.record("b", 20.5)
    ledger.record("a", 30.0)
    ledger.record("a", 25.0)  # older than what is known: ignored
    ledger.close()
    assert FireLedger(tmp_path / "fires.ledger").open() == {"a": 30.0, "b": 20.5}


def test_ledger_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "fires.ledger"
    path.write_text("a 10.0\nb 20.0\na 3")
    assert read_ledger(path) == {"a": 10.0, "b": 20.0}
    path.write_text("a 10.0\nb 20.0\na 3x")
    assert read_ledger(path) == {"a": 10.0, "b": 20.0}


def test_ledger_compacts_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "fires.ledger"
    ledger = FireLedger(path)
    ledger.open()
    for k in range(COMPACT_MIN_LINES * 3):
        ledger.record("tick", float(k))
    ledger.close()
    assert len(path.read_text().splitlines()) < COMPACT_MIN_LINES
    assert read_ledger(path) == {"tick": float(COMPACT_MIN_LINES * 3 - 1)}


def test_ledger_compaction_can_wait_until_the_fires_have_started(tmp_path: Path) -> None:
    path = tmp_path / "fires.ledger"
    deferred: list[Callable[[], None]] = []
    ledger = FireLedger(path, defer=deferred.append)
    ledger.open()
    for k in range(COMPACT_MIN_LINES * 3):
        ledger.record("tick", float(k))
    assert len(deferred) == 1  # asked once, however many records came meanwhile
    assert len(path.read_text().splitlines()) == COMPACT_MIN_LINES * 3  # not rewritten yet
    deferred.pop()()
    assert path.read_text() == f"tick {float(COMPACT_MIN_LINES * 3 - 1)!r}\n"
    for k in range(COMPACT_MIN_LINES * 3, COMPACT_MIN_LINES * 4):
        ledger.record("tick", float(k))
    ledger.close()
    deferred.pop()()  # after close: nothing is reopened or rewritten
    assert len(path.read_text().splitlines()) == 1 + COMPACT_MIN_LINES
    assert read_ledger(path) == {"tick": float(COMPACT_MIN_LINES * 4 - 1)}


def test_a_compaction_that_never_ran_does_not_block_the_next(tmp_path: Path) -> None:
    deferred: list[Callable[[], None]] = []
    ledger = FireLedger(tmp_path / "fires.ledger", defer=deferred.append)
    for start in (0, COMPACT_MIN_LINES):  # the daemon stopped before the loop ran it
        ledger.open()
        for k in range(start, start + COMPACT_MIN_LINES):
            ledger.record("tick", float(k))
        ledger.close()
    assert len(deferred) == 2


def test_ledger_forgets_removed_tasks(tmp_path: Path) -> None:
    path = tmp_path / "fires.ledger"
    ledger = FireLedger(path)
    ledger.open()
    ledger.record("kept", 1.0)
    ledger.record("removed", 2.0)
    ledger.forget_except({"kept"})
    for k in range(COMPACT_MIN_LINES):  # forces a compaction
        ledger.record("kept", 3.0 + k)
    ledger.close()
    assert set(read_ledger(path)) == {"kept"}


@pytest.mark.parametrize("policy", list(Catchup))
def test_every_policy_settles_on_the_newest_missed_fire(policy: Catchup) -> None:
    decision = decide(MINUTELY, T0, T0 + 120, now=T0 + 150, policy=policy, deadline=None)
    assert decision.last == T0 + 120


def test_a_ledger_that_cannot_be_rewritten_is_appended_to(tmp_path: Path) -> None:
    """A temporary file that cannot be replaced (here a directory with something in it):
    the rewrite fails, and the fires are appended to the ledger there is, not lost."""
    path = tmp_path / "fires.ledger"
    path.write_text("a 10.0\n")
    (tmp_path / "fires.tmp" / "in-the-way").mkdir(parents=True)
    ledger = FireLedger(path)
    assert ledger.open() == {"a": 10.0}
    ledger.record("a", 20.0)
    ledger.record("b", 5.0)
    ledger.close()
    assert read_ledger(path) == {"a": 20.0, "b": 5.0}

