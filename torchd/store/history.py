"""Run history in SQLite (`STATE_DIR/history.db`, WAL): every run, and every fire that did
not run, with its outcome and where its output is in the task log.

The event loop never touches the database: it hands each record to a writer thread
through a queue (a put costs about a microsecond) and the thread commits whatever has
accumulated in one transaction. A run's row is written when it starts and completed when
it ends, so a row still open when the daemon starts again belongs to a run that was in
flight when the daemon died: it is closed as `lost`.

Waking the writer costs more CPU than what it writes (`python -m bench history`), so both
sides save wake-ups. The loop holds a run's start for up to HOLD_START: a run that
ends meanwhile, as most do, goes over as one finished row, one wake-up instead of two. The
writer commits at once when it has been idle, and gathers for BATCH_WINDOW when records
keep coming, so that a burst is one transaction. A kill -9 can lose the records of the
last 0.1 s, and a start held up to 0.2 s (WAL with synchronous=NORMAL survives a killed
process; a power cut can lose the last commits).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from torchd.core.events import (
    FireClaimedElsewhere,
    FireMissed,
    FireSkipped,
    RunEnded,
    RunNotStarted,
    RunStarted,
)
from torchd.core.health import Health
from torchd.core.model import FAILED_OUTCOMES, HistoryPolicy, RunOutcome
from torchd.core.runid import new_run_id
from torchd.core.timefmt import iso_utc
from torchd.store.statedir import FileModes, open_file

log = logging.getLogger("torchd.history")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    fire_id TEXT,
    scheduled REAL,
    at REAL NOT NULL,          -- start of the run, or when the fire was skipped/missed
    started REAL,
    ended REAL,
    duration REAL,
    pid INTEGER,
    host TEXT,
    attempt INTEGER,
    trigger TEXT,
    outcome TEXT,              -- NULL while it runs
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    log_file TEXT,
    log_start INTEGER,
    log_end INTEGER,
    err_start INTEGER,
    err_end INTEGER,
    cpu_seconds REAL,          -- CPU used by the run and its descendants
    memory_peak INTEGER        -- bytes: the largest resident size among them
);
CREATE INDEX IF NOT EXISTS runs_task_at ON runs (task, at);
CREATE INDEX IF NOT EXISTS runs_at ON runs (at);
CREATE INDEX IF NOT EXISTS runs_outcome_at ON runs (outcome, at);  -- failed, missed, counts
CREATE INDEX IF NOT EXISTS runs_open ON runs (outcome) WHERE outcome IS NULL;
CREATE TABLE IF NOT EXISTS hook_calls (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    task TEXT,
    run_id TEXT,
    event TEXT,
    action TEXT,               -- command | webhook
    target TEXT,
    ok INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS hook_calls_at ON hook_calls (at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    transport TEXT NOT NULL,   -- socket | http
    peer TEXT NOT NULL,        -- uid=N (socket) or admin@ADDRESS / viewer@ADDRESS (http)
    action TEXT NOT NULL,      -- the verb: trigger, kill, pause, resume, submit, reload, stop
    target TEXT,               -- the task (or run, or "all"), if any
    result TEXT NOT NULL       -- ok, or the error code and message
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TABLE IF NOT EXISTS loads (  -- each start, reload and stop of a daemon (`torchd why`)
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,        -- start | reload | stop
    pid INTEGER NOT NULL,
    generation INTEGER,
    config_file TEXT,
    config_hash TEXT,
    added TEXT,                -- JSON lists of task names; at a start every task is added
    changed TEXT,
    removed TEXT,
    inactive TEXT              -- JSON {task: "disabled" | "not for this host"}
);
CREATE INDEX IF NOT EXISTS loads_at ON loads (at);
CREATE TABLE IF NOT EXISTS claims_lost (  -- run_on: one fires another host claimed
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    task TEXT NOT NULL,
    fire_id TEXT NOT NULL,
    scheduled REAL NOT NULL,
    holder TEXT                -- NULL: the cluster had run a later fire already
);
CREATE INDEX IF NOT EXISTS claims_lost_task ON claims_lost (task, scheduled);
"""
_START_COLUMNS = ("run_id", "task", "fire_id", "scheduled", "at", "started", "pid", "host",
                  "attempt", "trigger", "log_file", "log_start")
_END_COLUMNS = ("ended", "duration", "outcome", "exit_code", "signal", "log_end", "err_start",
                "err_end", "cpu_seconds", "memory_peak", "reason")
ADDED_COLUMNS = {"cpu_seconds": "REAL", "memory_peak": "INTEGER",  # since the first schema
                 "missed_from": "REAL"}  # a missed row: its first fire (scheduled: the last)


def _insert(columns: tuple[str, ...]) -> str:
    return (f"INSERT OR REPLACE INTO runs ({', '.join(columns)}) "  # noqa: S608 - constants
            f"VALUES ({','.join('?' * len(columns))})")


INSERT_STARTED = _insert(_START_COLUMNS)
INSERT_FINISHED = _insert(_START_COLUMNS + _END_COLUMNS)
UPDATE_ENDED = (f"UPDATE runs SET {', '.join(f'{c} = ?' for c in _END_COLUMNS)} "  # noqa: S608
                "WHERE run_id = ?")
FAILED = tuple(sorted(FAILED_OUTCOMES))
PRUNE_EVERY = 3600.0
BATCH_WINDOW = 0.1  # records gather this long while they keep coming
HOLD_START = 0.1  # the loop keeps a run's start this long, for its end to join it
_STOP = object()
Statement = tuple[str, tuple[object, ...]]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


def statements(records: Sequence[Statement]) -> list[Statement]:
    """The batch's statements, in order, except that a run which started and ended within
    the batch is inserted finished instead of inserted then updated: most runs are short,
    and that halves the statements written for them (and spares the index of open runs)."""
    out: list[Statement] = []
    open_rows: dict[object, int] = {}  # run_id -> where its INSERT_STARTED is in `out`
    for sql, params in records:
        if sql == INSERT_STARTED:
            open_rows[params[0]] = len(out)
        elif sql == UPDATE_ENDED:
            index = open_rows.pop(params[-1], None)
            if index is not None:
                out[index] = (INSERT_FINISHED, out[index][1] + params[:-1])
                continue
        out.append((sql, params))
    return out


def prepare_files(path: Path, modes: FileModes) -> None:
    """Make the database file (SQLite gives its -wal and -shm files its mode) with the
    state dir's file mode, and tighten what an older daemon left; none may be a symlink."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        flags = os.O_RDWR | (os.O_CREAT if name == path.name else 0)
        with contextlib.suppress(FileNotFoundError):
            os.close(open_file(path.with_name(name), flags, modes))


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        # A database read by root may come from anywhere: its views and triggers must not
        # call functions with side effects.
        conn.execute("PRAGMA trusted_schema=OFF")
    else:
        conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in have:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
    conn.row_factory = sqlite3.Row
    return conn


def close_lost_runs(conn: sqlite3.Connection, alive: Callable[[int, float], bool],
                    now: float) -> list[dict[str, Any]]:
    """Close the rows of runs that were in flight when an earlier daemon died. `alive(pid,
    started)` says whether that process still runs (it is then ended with its group by the
    caller's leftover cleanup, since nothing reads its output any more)."""
    lost = []
    for row in conn.execute("SELECT run_id, task, pid, started FROM runs "
                            "WHERE outcome IS NULL").fetchall():
        still = row["pid"] is not None and alive(row["pid"], row["started"] or 0.0)
        reason = ("the daemon died while it ran; its process was still running and is ended "
                  "with its group" if still else
                  "the daemon died while it ran; its exit status is unknown")
        conn.execute("UPDATE runs SET outcome = ?, reason = ?, ended = ? WHERE run_id = ?",
                     (str(RunOutcome.LOST), reason, now, row["run_id"]))
        lost.append({"run_id": row["run_id"], "task": row["task"], "pid": row["pid"],
                     "was_running": still})
    conn.commit()
    return lost


def prune(conn: sqlite3.Connection, policy: HistoryPolicy, now: float) -> int:
    """Delete rows older than keep_days, and beyond keep_runs_per_task per task."""
    cutoff = now - policy.keep_days * 86400
    removed = conn.execute("DELETE FROM runs WHERE at < ? AND outcome IS NOT NULL",
                           (cutoff,)).rowcount
    removed += conn.execute(
        "DELETE FROM runs WHERE outcome IS NOT NULL AND run_id IN ("
        " SELECT run_id FROM (SELECT run_id, ROW_NUMBER() OVER"
        " (PARTITION BY task ORDER BY at DESC) AS n FROM runs) WHERE n > ?)",
        (policy.keep_runs_per_task,)).rowcount
    conn.execute("DELETE FROM hook_calls WHERE at < ?", (cutoff,))
    conn.execute("DELETE FROM audit WHERE at < ?", (cutoff,))
    # Loads before the last start ahead of the cutoff: `why` replays the reloads from a
    # start, so that start and what follows it stay.
    conn.execute("DELETE FROM loads WHERE id < (SELECT MAX(id) FROM loads WHERE kind = "
                 "'start' AND at < ?)", (cutoff,))
    conn.execute("DELETE FROM claims_lost WHERE at < ?", (cutoff,))
    conn.execute("DELETE FROM claims_lost WHERE id IN (SELECT id FROM (SELECT id, "
                 "ROW_NUMBER() OVER (PARTITION BY task ORDER BY at DESC) AS n FROM "
                 "claims_lost) WHERE n > ?)", (policy.keep_runs_per_task,))
    conn.commit()
    return removed


class HistoryWriter:
    """Takes records from the event loop and writes them from its own thread."""

    def __init__(self, path: Path, policy: HistoryPolicy, *, host: str,
                 call_later: Callable[[float, Callable[[], None]], Cancellable] | None = None,
                 modes: FileModes | None = None, health: Health | None = None) -> None:
        """`call_later` is the event loop's: with it, starts are held (see the module's
        docstring), and every method but flush() and stop() must be called on that loop.
        Without it, every record is handed over at once."""
        self._path = path
        self._modes = modes or FileModes()
        self._health = health or Health(time.time)
        self.policy = policy
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._host = host
        self._last_write = 0.0  # monotonic; read and written by the writer thread only
        self._call_later = call_later
        self._held: dict[str, tuple[object, ...]] = {}  # run id -> INSERT_STARTED params
        self._handed = 0  # records put on the queue (the loop's count) ...
        self._written = 0  # ... and those the writer thread has committed (or failed to)
        self._hold_timer: Cancellable | None = None

    def start(self, alive: Callable[[int, float], bool]) -> list[dict[str, Any]]:
        """Open the database, close runs a dead daemon left open, start the writer."""
        prepare_files(self._path, self._modes)
        conn = connect(self._path)
        lost = close_lost_runs(conn, alive, time.time())
        self._thread = threading.Thread(target=self._work, args=(conn,), name="history",
                                        daemon=True)
        self._thread.start()
        return lost

    def release(self) -> None:
        """Hand the held starts over now (on the loop: before flush() and stop())."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        for params in self._held.values():
            self._put((INSERT_STARTED, params))
        self._held.clear()

    def _put(self, record: Statement) -> None:
        self._handed += 1
        self._queue.put(record)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything handed over so far is written (for readers in the daemon;
        call release() on the loop first). At once when all of it is written already: a
        dashboard's reads must not wake the writer for nothing."""
        if self._thread is None or self._written == self._handed:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def stop(self) -> None:
        """Write what was handed over, then end the thread (call release() on the loop
        first)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    # ----- from the loop -----------------------------------------------------------------
    def run_started(self, event: RunStarted) -> None:
        params = (event.run_id, event.task, event.fire_id, event.scheduled, event.started,
                  event.started, event.pid, self._host, event.attempt, event.trigger,
                  event.log_file, event.log_start)
        if self._call_later is None:
            self._put((INSERT_STARTED, params))
            return
        self._held[event.run_id] = params
        if self._hold_timer is None:
            self._hold_timer = self._call_later(HOLD_START, self.release)

    def run_ended(self, event: RunEnded) -> None:
        ended = (event.ended, event.duration, event.outcome, event.exit_code, event.signal,
                 event.log_end, event.err_start, event.err_end, event.cpu_seconds,
                 event.memory_peak, event.reason)
        started = self._held.pop(event.run_id, None)
        if started is None:
            self._put((UPDATE_ENDED, (*ended, event.run_id)))
            return
        self._put((INSERT_FINISHED, started + ended))
        if not self._held and self._hold_timer is not None:
            self._hold_timer.cancel()  # nothing left to hold: no wake-up for it
            self._hold_timer = None

    def not_started(self, event: RunNotStarted) -> None:
        self._put((
            "INSERT OR REPLACE INTO runs (run_id, task, fire_id, scheduled, at, host, attempt, "
            "trigger, outcome, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (event.run_id, event.task, event.fire_id, event.scheduled, event.time, self._host,
             event.attempt, event.trigger, str(RunOutcome.START_ERROR), event.error)))

    def fire_skipped(self, event: FireSkipped, now: float) -> None:
        outcome = RunOutcome.DROPPED if event.dropped else RunOutcome.SKIPPED
        self._put((
            "INSERT OR REPLACE INTO runs (run_id, task, fire_id, scheduled, at, host, outcome, "
            "reason, trigger) VALUES (?,?,?,?,?,?,?,?,?)",
            (event.run_id or new_run_id(), event.task, event.fire_id, event.scheduled, now,
             self._host, str(outcome), event.reason, str(event.trigger))))

    def fire_missed(self, event: FireMissed, now: float) -> None:
        reason = (f"{event.count} fire(s) missed from {iso_utc(event.first)} to "
                  f"{iso_utc(event.last)}")
        if event.reason:
            reason = f"{reason}: {event.reason}"
        self._put((
            "INSERT INTO runs (run_id, task, fire_id, scheduled, at, host, outcome, reason, "
            "missed_from) VALUES (?,?,?,?,?,?,?,?,?)",
            (new_run_id(), event.task, event.fire_id, event.last, now, self._host,
             str(RunOutcome.MISSED), reason, event.first)))

    def claimed_elsewhere(self, event: FireClaimedElsewhere, now: float) -> None:
        self._put((
            "INSERT INTO claims_lost (at, task, fire_id, scheduled, holder) VALUES (?,?,?,?,?)",
            (now, event.task, event.fire_id, event.scheduled, event.holder)))

    def load(self, *, at: float, kind: str, generation: int | None = None,
             config_file: str | None = None, config_hash: str | None = None,
             added: Sequence[str] = (), changed: Sequence[str] = (),
             removed: Sequence[str] = (), inactive: dict[str, str] | None = None) -> None:
        """A daemon's start, applied reload or stop, for the loads table."""
        self._put((
            "INSERT INTO loads (at, kind, pid, generation, config_file, config_hash, added, "
            "changed, removed, inactive) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (at, kind, os.getpid(), generation, config_file, config_hash,
             json.dumps(list(added)), json.dumps(list(changed)), json.dumps(list(removed)),
             json.dumps(inactive or {}))))

    def hook_call(self, *, task: str, run_id: str | None, event: str, action: str,
                  target: str, ok: bool, detail: str) -> None:
        self._put((
            "INSERT INTO hook_calls (at, task, run_id, event, action, target, ok, detail) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (time.time(), task, run_id, event, action, target, int(ok), detail)))

    def action(self, *, at: float, transport: str, peer: str, action: str,
               target: str | None, result: str) -> None:
        """An operator's action (see control.audit), for the audit table."""
        self._put((
            "INSERT INTO audit (at, transport, peer, action, target, result) "
            "VALUES (?,?,?,?,?,?)", (at, transport, peer, action, target, result)))

    # ----- the writer thread -------------------------------------------------------------
    def _work(self, conn: sqlite3.Connection) -> None:
        next_prune = time.monotonic()
        with contextlib.closing(conn):
            while True:
                try:
                    stopping, next_prune = self._pass(conn, next_prune)
                except Exception:  # the writer must outlive any one bad pass
                    log.exception("run history writer: unexpected error; going on")
                    stopping = False
                if stopping:
                    return

    def _pass(self, conn: sqlite3.Connection, next_prune: float) -> tuple[bool, float]:
        """Wait for records, gather a batch, commit it; prune when due."""
        try:
            first = self._queue.get(timeout=max(0.0, next_prune - time.monotonic()))
        except queue.Empty:
            first = None
        if isinstance(first, tuple) and time.monotonic() - self._last_write < BATCH_WINDOW:
            # Records keep coming (a burst): gather them into one transaction, and leave
            # the GIL to the loop meanwhile.
            with contextlib.suppress(OSError):  # EINVAL seen under libfaketime
                time.sleep(BATCH_WINDOW)
        batch = [] if first is None else [first]
        while True:  # everything queued meanwhile goes in the same transaction
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        records = [item for item in batch if isinstance(item, tuple)]
        if records:
            self._write(conn, statements(records))
            self._last_write = time.monotonic()
            self._written += len(records)  # read by flush() on the loop: an int is atomic
        for item in batch:
            if isinstance(item, threading.Event):
                item.set()
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + PRUNE_EVERY
            self._prune(conn)
        return any(item is _STOP for item in batch), next_prune

    def _write(self, conn: sqlite3.Connection, batch: Sequence[Statement]) -> None:
        if not batch:
            return
        try:
            with conn:
                for sql, params in batch:
                    conn.execute(sql, params)
        except sqlite3.Error as exc:
            self._health.report("history", f"cannot write run history to {self._path}: {exc}; "
                                "records are lost")
            return
        self._health.clear("history")

    def _prune(self, conn: sqlite3.Connection) -> None:
        try:
            removed = prune(conn, self.policy, time.time())
        except sqlite3.Error as exc:
            log.error("cannot prune run history: %s", exc)
            return
        if removed:
            log.info("run history: %d old record(s) pruned", removed)


RUNNING = "running"  # an outcome filter: the runs going on (no outcome yet)
MAX_RECENT_TASKS = 200  # tasks one recent_runs query covers at most


def query_runs(path: Path, *, task: str | None = None, limit: int = 20, failed: bool = False,
               since: float | None = None, until: float | None = None,
               outcome: str | None = None, trigger: str | None = None,
               host: str | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """The newest runs first, as plain dicts: `limit` of them after skipping `offset`, of
    `task`, with `outcome` (`running`: not ended yet), `trigger` and `host`, started (or
    recorded) in [since, until)."""
    if not path.exists():
        return []
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("task", task), ("trigger", trigger), ("host", host)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if outcome == RUNNING:
        clauses.append("outcome IS NULL")
    elif outcome is not None:
        clauses.append("outcome = ?")
        params.append(outcome)
    if failed:
        clauses.append(f"outcome IN ({','.join('?' * len(FAILED))})")
        params.extend(str(o) for o in FAILED)
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("at < ?")
        params.append(until)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with contextlib.closing(connect(path, readonly=True)) as conn:
        rows = conn.execute(f"SELECT * FROM runs {where} ORDER BY at DESC LIMIT ? OFFSET ?",  # noqa: S608 - clauses are constants
                            (*params, limit, offset)).fetchall()
    return [dict(row) for row in rows]


def recent_runs(path: Path, tasks: Sequence[str], count: int) -> dict[str, list[dict[str, Any]]]:
    """The last `count` records of each of `tasks` (at most MAX_RECENT_TASKS), newest first:
    run_id, outcome (None while it runs), at, duration. One query: a union of one indexed
    range per task."""
    names = list(dict.fromkeys(tasks))[:MAX_RECENT_TASKS]
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    if not names or count <= 0 or not path.exists():
        return found
    one = ("SELECT * FROM (SELECT task, run_id, outcome, at, duration FROM runs "
           "WHERE task = ? ORDER BY at DESC LIMIT ?)")
    sql = " UNION ALL ".join([one] * len(names))
    params = [value for name in names for value in (name, count)]
    with contextlib.closing(connect(path, readonly=True)) as conn:
        rows = conn.execute(sql, params).fetchall()
    for row in rows:
        found[row["task"]].append({"run_id": row["run_id"], "outcome": row["outcome"],
                                   "at": row["at"], "duration": row["duration"]})
    for runs in found.values():
        runs.sort(key=lambda run: run["at"], reverse=True)
    return found


def outcome_counts(path: Path, since: float) -> dict[str, int]:
    """How many records of each outcome (`running` for the runs going on) since `since`."""
    if not path.exists():
        return {}
    with contextlib.closing(connect(path, readonly=True)) as conn:
        rows = conn.execute("SELECT outcome, COUNT(*) AS n FROM runs WHERE at >= ? "
                            "GROUP BY outcome", (since,)).fetchall()
    return {row["outcome"] or RUNNING: row["n"] for row in rows}


def find_run(path: Path, task: str, run_id: str | None) -> dict[str, Any] | None:
    """One run of a task; when run_id is None the latest that started or failed to start
    (a fire skipped, dropped or missed is no run)."""
    if not path.exists():
        return None
    with contextlib.closing(connect(path, readonly=True)) as conn:
        if run_id is None:
            row = conn.execute("SELECT * FROM runs WHERE task = ? AND (started IS NOT NULL "
                               "OR outcome = ?) ORDER BY at DESC LIMIT 1",
                               (task, str(RunOutcome.START_ERROR))).fetchone()
        else:
            row = conn.execute("SELECT * FROM runs WHERE task = ? AND run_id = ?",
                               (task, run_id)).fetchone()
    return None if row is None else dict(row)


def query_audit(path: Path, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest actions first, as plain dicts."""
    if not path.exists():
        return []
    with contextlib.closing(connect(path, readonly=True)) as conn:
        try:
            rows = conn.execute("SELECT at, transport, peer, action, target, result FROM audit"
                                " ORDER BY at DESC, id DESC LIMIT ?", (limit,)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a database no daemon of this version opened
                return []
            raise
    return [dict(row) for row in rows]


def run_by_id(path: Path, run_id: str) -> dict[str, Any] | None:
    """The run with this id, whatever its task."""
    if not path.exists():
        return None
    with contextlib.closing(connect(path, readonly=True)) as conn:
        row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else dict(row)


def run_slots(path: Path, tasks: Sequence[str], since: float, until: float,
              width: float) -> tuple[list[tuple[str, int, str, int]], dict[str, float]]:
    """The runs of `tasks` in [since, until) counted per slot of `width` seconds from
    `since` (slot 0) and outcome (`running` for one going on): (task, slot, outcome,
    count) rows; and each task's longest run in that window (the daily plan)."""
    if not path.exists() or not tasks:
        return [], {}
    names = ",".join("?" * len(tasks))
    with contextlib.closing(connect(path, readonly=True)) as conn:
        rows = conn.execute(
            f"SELECT task, CAST((at - ?) / ? AS INTEGER) AS slot, "  # noqa: S608 - placeholders
            f"COALESCE(outcome, 'running') AS outcome, COUNT(*) AS n FROM runs "
            f"WHERE task IN ({names}) AND at >= ? AND at < ? GROUP BY task, slot, outcome",
            (since, width, *tasks, since, until)).fetchall()
        longest = conn.execute(
            f"SELECT task, MAX(duration) FROM runs WHERE task IN ({names}) "  # noqa: S608
            f"AND at >= ? AND at < ? AND duration IS NOT NULL GROUP BY task",
            (*tasks, since, until)).fetchall()
    return ([(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows],
            {str(r[0]): float(r[1]) for r in longest if r[1] is not None})


def last_successes(path: Path) -> dict[str, float]:
    """When each task's latest successful run ended (for /metrics at the daemon's start)."""
    if not path.exists():
        return {}
    with contextlib.closing(connect(path, readonly=True)) as conn:
        rows = conn.execute("SELECT task, MAX(ended) FROM runs WHERE outcome = ? GROUP BY task",
                            (str(RunOutcome.OK),)).fetchall()
    return {str(task): float(ended) for task, ended in rows if ended is not None}


def _loads_rows(conn: sqlite3.Connection, until: float | None) -> list[sqlite3.Row]:
    try:
        if until is None:
            return conn.execute("SELECT * FROM loads ORDER BY at, id").fetchall()
        return conn.execute("SELECT * FROM loads WHERE at <= ? ORDER BY at, id",
                            (until,)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a database no daemon of this version opened
            return []
        raise


def query_loads(path: Path, *, until: float | None = None) -> list[dict[str, Any]]:
    """Every start, reload and stop recorded (up to `until`), oldest first, with the task
    lists decoded."""
    if not path.exists():
        return []
    with contextlib.closing(connect(path, readonly=True)) as conn:
        rows = _loads_rows(conn, until)
    out = []
    for row in rows:
        item = dict(row)
        for key, empty in (("added", "[]"), ("changed", "[]"), ("removed", "[]"),
                           ("inactive", "{}")):
            item[key] = json.loads(item[key] or empty)
        out.append(item)
    return out


def fire_rows(path: Path, task: str, since: float, until: float) -> list[dict[str, Any]]:
    """The records of `task` about fires scheduled in [since, until] (a missed row when its
    range meets it), oldest first."""
    if not path.exists():
        return []
    with contextlib.closing(connect(path, readonly=True)) as conn:
        have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        first = "missed_from" if "missed_from" in have else "scheduled"
        rows = conn.execute(
            f"SELECT * FROM runs WHERE task = ? AND scheduled >= ? "  # noqa: S608 - a column
            f"AND COALESCE({first}, scheduled) <= ? ORDER BY scheduled, at",
            (task, since, until)).fetchall()
    return [dict(row) for row in rows]


def pause_actions(path: Path, task: str) -> list[dict[str, Any]]:
    """The pauses and resumes of `task` or of every task that were done, oldest first."""
    if not path.exists():
        return []
    with contextlib.closing(connect(path, readonly=True)) as conn:
        try:
            rows = conn.execute(
                "SELECT at, action, target FROM audit WHERE action IN ('pause', 'resume') "
                "AND result LIKE 'ok%' AND (target = ? OR target = 'all') ORDER BY at, id",
                (task,)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
    return [dict(row) for row in rows]


def lost_claims(path: Path, task: str, since: float, until: float) -> list[dict[str, Any]]:
    """The fires of `task` scheduled in [since, until] that another host claimed."""
    if not path.exists():
        return []
    with contextlib.closing(connect(path, readonly=True)) as conn:
        try:
            rows = conn.execute("SELECT fire_id, scheduled, holder, at FROM claims_lost WHERE "
                                "task = ? AND scheduled >= ? AND scheduled <= ? ORDER BY "
                                "scheduled", (task, since, until)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
    return [dict(row) for row in rows]


def last_activity(path: Path, since: float, until: float) -> float | None:
    """The latest time a record in [since, until) shows the daemon at work (a run's start
    or end, a fire skipped or missed): where a killed daemon was last seen."""
    if not path.exists():
        return None
    with contextlib.closing(connect(path, readonly=True)) as conn:
        # a run the next start closed as lost has that start as its end: not counted
        row = conn.execute("SELECT MAX(CASE WHEN ended < ? THEN MAX(at, ended) ELSE at END) "
                           "FROM runs WHERE at >= ? AND at < ?",
                           (until, since, until)).fetchone()
    return None if row is None or row[0] is None else float(row[0])
