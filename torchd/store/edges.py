"""The satisfied edges of workflows (`after:`), kept across restarts in
`STATE_DIR/workflow.db` (SQLite, WAL): one row per (downstream, upstream) edge that holds
a qualifying upstream run the downstream has not consumed yet.

Unlike the run history, which a writer thread commits up to 0.2 s late, every change here
is committed synchronously on the loop, at the moment an edge is satisfied or cleared, and
before the downstream it completes is started: a restart then never finds an edge that
was consumed, so a downstream never fires twice for one upstream run. A commit appends to
the WAL without fsync (synchronous=NORMAL, about 50 us): it survives a killed daemon; a
power cut can lose the last commits (an edge satisfied then is lost, never doubled, as
long as the lost commits include the runs they came from). The crash window accepted:
a daemon killed between the commit that clears the edges and the start of the downstream
(the same loop callback) loses that downstream fire; it never runs it twice.

The database is its own file, not a table of history.db: the history writer's batched
transactions would hold the loop's commits up, and edges are kept even with
`daemon.history.enabled: false`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from torchd.core.health import Health
from torchd.core.model import RunOutcome
from torchd.core.workflow import EdgeRun
from torchd.store.history import prepare_files
from torchd.store.statedir import FileModes

log = logging.getLogger("torchd.workflow")

SCHEMA = """
CREATE TABLE IF NOT EXISTS edges (
    downstream TEXT NOT NULL,
    upstream TEXT NOT NULL,
    run_id TEXT NOT NULL,      -- the latest qualifying upstream run since the last trigger
    outcome TEXT NOT NULL,
    ended REAL NOT NULL,
    workflow_id TEXT NOT NULL,
    PRIMARY KEY (downstream, upstream)
);
"""


class EdgeStore:
    """Satisfied edges in SQLite, written synchronously (see the module's docstring)."""

    def __init__(self, path: Path, modes: FileModes | None = None,
                 health: Health | None = None) -> None:
        self._path = path
        self._modes = modes or FileModes()
        self._health = health
        self._conn: sqlite3.Connection | None = None

    def open(self) -> dict[str, dict[str, EdgeRun]]:
        """Open the database; the satisfied edges by downstream, then upstream."""
        prepare_files(self._path, self._modes)
        conn = sqlite3.connect(self._path, timeout=5, isolation_level=None)
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        self._conn = conn
        held: dict[str, dict[str, EdgeRun]] = {}
        for down, up, run_id, outcome, ended, workflow in conn.execute(
                "SELECT downstream, upstream, run_id, outcome, ended, workflow_id FROM edges"):
            try:
                run = EdgeRun(upstream=up, run_id=run_id, outcome=RunOutcome(outcome),
                              ended=float(ended), workflow_id=workflow)
            except ValueError:
                continue
            held.setdefault(down, {})[up] = run
        return held

    def write(self, downstream: str, held: Iterable[EdgeRun]) -> None:
        """Replace the downstream's satisfied edges with `held` (empty: all cleared), in
        one transaction committed before this returns."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM edges WHERE downstream = ?", (downstream,))
            conn.executemany(
                "INSERT INTO edges (downstream, upstream, run_id, outcome, ended, "
                "workflow_id) VALUES (?,?,?,?,?,?)",
                [(downstream, r.upstream, r.run_id, str(r.outcome), r.ended, r.workflow_id)
                 for r in held])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("cannot keep the edges of task %s in %s: %s", downstream, self._path,
                      exc)
            if self._health is not None:
                self._health.report("workflow", f"cannot write {self._path}: {exc}; a "
                                    "restart may lose satisfied workflow edges")
            return
        if self._health is not None:
            self._health.clear("workflow")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
