"""The history store on a real SQLite file: retention, lost runs, queries (the pure
batching rules are in tests/unit/test_history.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from torchd.core.events import FireClaimedElsewhere, FireSkipped, RunEnded, RunStarted
from torchd.core.model import HistoryPolicy, RunOutcome, Trigger, fire_id
from torchd.store.history import (
    HOLD_START,
    HistoryWriter,
    close_lost_runs,
    connect,
    last_activity,
    lost_claims,
    outcome_counts,
    prune,
    query_loads,
    query_runs,
    recent_runs,
)

NOW = 1_800_000_000.0


def _started(run_id: str, task: str, at: float, pid: int = 100) -> RunStarted:
    return RunStarted(task=task, run_id=run_id, pid=pid, started=at, scheduled=at,
                      fire_id=f"{task}@x", attempt=1, trigger=Trigger.SCHEDULE,
                      log_file=f"{task}.log", log_start=0)


def _ended(run_id: str, task: str, at: float, outcome: str = "ok") -> RunEnded:
    return RunEnded(task=task, run_id=run_id, pid=100, outcome=RunOutcome(outcome),
                    exit_code=0 if outcome == "ok" else 1, signal=None, started=at,
                    ended=at + 1, duration=1.0, scheduled=at, fire_id=f"{task}@x", attempt=1,
                    trigger=Trigger.SCHEDULE, log_file=f"{task}.log", log_end=50, err_start=None,
                    err_end=None)


def _write(path: Path, events: list[object]) -> None:
    writer = HistoryWriter(path, HistoryPolicy(), host="test-host")
    writer.start(lambda _pid, _started: False)
    for event in events:
        if isinstance(event, RunStarted):
            writer.run_started(event)
        elif isinstance(event, RunEnded):
            writer.run_ended(event)
        elif isinstance(event, FireSkipped):
            writer.fire_skipped(event, NOW)
    writer.stop()


def test_retention_keeps_recent_days_and_runs_per_task(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    events: list[object] = []
    for i in range(6):  # six runs of a, one a day; two of b
        events += [_started(f"a{i}", "a", NOW - i * 86400), _ended(f"a{i}", "a", NOW - i * 86400)]
    events += [_started("b0", "b", NOW), _ended("b0", "b", NOW), _started("b1", "b", NOW - 1)]
    _write(db, events)
    with connect(db) as conn:
        removed = prune(conn, HistoryPolicy(keep_days=4.5, keep_runs_per_task=3), NOW)
    assert removed == 3  # a5 by age; a3, a4 by count
    kept = sorted(r["run_id"] for r in query_runs(db, limit=100))
    assert kept == ["a0", "a1", "a2", "b0", "b1"]


def test_runs_open_at_start_are_closed_as_lost(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    _write(db, [_started("gone", "t", NOW, pid=11), _started("alive", "t", NOW + 1, pid=22),
                _started("done", "t", NOW + 2), _ended("done", "t", NOW + 2)])
    with connect(db) as conn:
        lost = close_lost_runs(conn, lambda pid, _started: pid == 22, NOW + 10)
    assert sorted((r["run_id"], r["was_running"]) for r in lost) == [
        ("alive", True), ("gone", False)]
    rows = {r["run_id"]: r for r in query_runs(db, limit=10)}
    assert rows["gone"]["outcome"] == rows["alive"]["outcome"] == "lost"
    assert rows["gone"]["reason"] == "the daemon died while it ran; its exit status is unknown"
    assert rows["done"]["outcome"] == "ok"


def test_query_filters(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    _write(db, [_started("ok1", "a", NOW - 7200), _ended("ok1", "a", NOW - 7200),
                _started("bad", "a", NOW - 60), _ended("bad", "a", NOW - 60, "failed"),
                FireSkipped(task="b", scheduled=NOW, reason="paused", run_id="skip1")])
    assert [r["run_id"] for r in query_runs(db, task="a")] == ["bad", "ok1"]
    assert [r["run_id"] for r in query_runs(db, failed=True)] == ["bad"]
    assert [r["run_id"] for r in query_runs(db, task="a", since=NOW - 3600)] == ["bad"]
    skipped = query_runs(db, task="b")[0]
    assert (skipped["outcome"], skipped["reason"], skipped["fire_id"]) == (
        "skipped", "paused", fire_id("b", NOW))
    assert query_runs(tmp_path / "missing.db") == []


def test_query_filters_by_outcome_trigger_host_until_and_pages(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    _write(db, [_started("ok1", "a", NOW - 300), _ended("ok1", "a", NOW - 300),
                _started("bad", "a", NOW - 200), _ended("bad", "a", NOW - 200, "failed"),
                _started("open", "b", NOW - 100)])
    assert [r["run_id"] for r in query_runs(db, outcome="failed")] == ["bad"]
    assert [r["run_id"] for r in query_runs(db, outcome="running")] == ["open"]
    assert [r["run_id"] for r in query_runs(db, until=NOW - 150)] == ["bad", "ok1"]
    assert [r["run_id"] for r in query_runs(db, limit=1, offset=1)] == ["bad"]
    assert len(query_runs(db, trigger="schedule", host="test-host")) == 3
    assert query_runs(db, host="elsewhere") == []


def test_recent_runs_per_task_and_counts(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    events: list[object] = []
    for i in range(5):
        events += [_started(f"a{i}", "a", NOW - i), _ended(f"a{i}", "a", NOW - i)]
    events += [_started("b0", "b", NOW - 10), _ended("b0", "b", NOW - 10, "failed"),
               _started("b1", "b", NOW)]
    _write(db, events)
    recent = recent_runs(db, ["b", "a", "nobody"], 3)
    assert [r["run_id"] for r in recent["a"]] == ["a0", "a1", "a2"]
    assert [(r["run_id"], r["outcome"]) for r in recent["b"]] == [("b1", None),
                                                                   ("b0", "failed")]
    assert recent["nobody"] == []
    assert outcome_counts(db, NOW - 100) == {"ok": 5, "failed": 1, "running": 1}
    assert outcome_counts(db, NOW + 1) == {}


def test_a_finished_row_equals_a_row_started_and_completed_in_two_batches(
        tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    writer = HistoryWriter(db, HistoryPolicy(), host="test-host")
    writer.start(lambda _pid, _started: False)
    writer.run_started(_started("one", "a", NOW))
    writer.run_ended(_ended("one", "a", NOW, "failed"))
    writer.run_started(_started("two", "a", NOW))
    writer.flush()  # the end goes in a later transaction: an update of the open row
    assert query_runs(db, task="a")[0]["outcome"] is None
    writer.run_ended(_ended("two", "a", NOW, "failed"))
    writer.stop()
    rows = {r.pop("run_id"): r for r in query_runs(db, task="a")}
    assert rows["one"] == rows["two"]
    assert (rows["one"]["outcome"], rows["one"]["exit_code"], rows["one"]["log_end"],
            rows["one"]["host"]) == ("failed", 1, 50, "test-host")


def _on_loop(db: Path, check: Callable[[HistoryWriter], Awaitable[None]]) -> None:
    """Run `check` on an asyncio loop with a writer made as the daemon makes it."""
    async def body() -> None:
        writer = HistoryWriter(db, HistoryPolicy(), host="test-host",
                               call_later=asyncio.get_running_loop().call_later)
        writer.start(lambda _pid, _started: False)
        try:
            await check(writer)
        finally:
            writer.stop()

    asyncio.run(body())


def test_a_start_is_held_on_the_loop_until_released(tmp_path: Path) -> None:
    """With the loop's call_later, a start is written only once handed over."""
    db = tmp_path / "h.db"

    async def check(writer: HistoryWriter) -> None:
        writer.run_started(_started("long", "a", NOW))
        writer.flush()
        assert query_runs(db, task="a") == []
        writer.release()
        writer.flush()
        assert [(r["run_id"], r["outcome"]) for r in query_runs(db, task="a")] == [
            ("long", None)]
        writer.run_ended(_ended("long", "a", NOW))  # an update of the open row
        writer.flush()
        assert query_runs(db, task="a")[0]["outcome"] == "ok"

    _on_loop(db, check)


def test_a_held_start_is_handed_over_by_its_timer(tmp_path: Path) -> None:
    """A run still going after HOLD_START shows as running without anyone asking."""
    db = tmp_path / "h.db"

    async def check(writer: HistoryWriter) -> None:
        writer.run_started(_started("long", "a", NOW))
        async with asyncio.timeout(5):
            while not await asyncio.to_thread(query_runs, db, task="a"):
                await asyncio.sleep(HOLD_START / 4)
        assert query_runs(db, task="a")[0]["outcome"] is None

    _on_loop(db, check)


def test_a_run_that_ends_while_held_is_written_once_finished(tmp_path: Path) -> None:
    """Its start and end go over as one record, and no timer is left for the loop."""
    db = tmp_path / "h.db"

    async def check(writer: HistoryWriter) -> None:
        loop = asyncio.get_running_loop()
        writer.run_started(_started("short", "a", NOW))
        writer.run_ended(_ended("short", "a", NOW, "failed"))
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]
        writer.flush()
        row = query_runs(db, task="a")[0]
        assert (row["run_id"], row["outcome"], row["pid"], row["log_end"]) == (
            "short", "failed", 100, 50)

    _on_loop(db, check)


def test_loads_claims_and_last_activity_for_why(tmp_path: Path) -> None:
    """The records `torchd why` reads: loads with their task lists, lost claims, and where a
    killed daemon was last seen (a run the next start closed as lost does not count)."""
    path = tmp_path / "history.db"
    writer = HistoryWriter(path, HistoryPolicy(), host="test-host")
    writer.start(lambda _pid, _started: False)
    writer.load(at=NOW, kind="start", generation=1, config_file="/t.yaml", config_hash="abc",
                added=["a", "b"], inactive={"b": "not for this host"})
    writer.run_started(_started("r1", "a", NOW + 10))
    writer.run_ended(_ended("r1", "a", NOW + 10))
    writer.run_started(_started("r2", "a", NOW + 20))  # in flight when the daemon dies
    writer.claimed_elsewhere(FireClaimedElsewhere("a", NOW + 5, "h2"), NOW + 5)
    writer.stop()
    again = HistoryWriter(path, HistoryPolicy(), host="test-host")
    again.start(lambda _pid, _started: False)  # the next start closes r2 as lost
    again.stop()
    loads = query_loads(path)
    assert [(r["kind"], r["added"], r["inactive"], r["config_file"]) for r in loads] == [
        ("start", ["a", "b"], {"b": "not for this host"}, "/t.yaml")]
    assert [(c["fire_id"], c["holder"]) for c in lost_claims(path, "a", NOW, NOW + 10)] == [
        (fire_id("a", NOW + 5), "h2")]
    assert last_activity(path, NOW, NOW + 100) == NOW + 20


def test_pruning_keeps_the_loads_why_replays(tmp_path: Path) -> None:
    """Old loads go, but the last start before the cutoff and what follows it stay."""
    import contextlib
    import time

    from torchd.store.history import SCHEMA, connect, prepare_files, prune
    from torchd.store.statedir import FileModes

    path = tmp_path / "history.db"
    prepare_files(path, FileModes())
    now = time.time()
    day = 86400.0
    with contextlib.closing(connect(path)) as conn:
        conn.executescript(SCHEMA)
        for at, kind in ((now - 40 * day, "start"), (now - 35 * day, "reload"),
                         (now - 33 * day, "start"), (now - 32 * day, "reload"),
                         (now - 1 * day, "reload")):
            conn.execute("INSERT INTO loads (at, kind, pid) VALUES (?, ?, 1)", (at, kind))
        conn.commit()
        prune(conn, HistoryPolicy(keep_days=30), now)
        kept = [row[0] for row in conn.execute("SELECT kind FROM loads ORDER BY id")]
    assert kept == ["start", "reload", "reload"]
