"""`python -m bench chains`: workflow (`after:`) chain latency, in one sitting.

A real daemon runs CHAINS chains of LENGTH tasks (a root every few seconds, then each
task `after:` the one before: LENGTH - 1 links each), and a plain task firing every
second beside them. From the run history, per link: the downstream run's start minus its
upstream run's end (both as the daemon saw them: the exit it noticed through the pidfd,
the spawn it made); per plain fire: its start minus its scheduled instant. p50/p99 of
both, at least --links links.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.run import Result, emit_table, percentile, workdir

STARTUP_FIRES = 3


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--links", type=int, default=200, help="links measured, at least")
    command.add_argument("--chains", type=int, default=4)
    command.add_argument("--length", type=int, default=11, help="tasks per chain")


def _task_file(chains: int, length: int) -> str:
    lines = ["daemon: {timezone: UTC, watch: false}", "tasks:",
             '  - {name: plain, schedule: "* * * * * *", command: ["/bin/true"]}']
    for chain in range(chains):
        # roots every 4 s, one second apart, so chains do not start together
        lines.append(f'  - {{name: c{chain}t0, schedule: "{chain % 4}/4 * * * * *", '
                     'command: ["/bin/true"]}')
        lines.extend(f'  - {{name: c{chain}t{i}, after: c{chain}t{i - 1}, '
                     'command: ["/bin/true"]}' for i in range(1, length))
    return "\n".join(lines) + "\n"


def _rows(db: Path) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute("SELECT run_id, task, fire_id, scheduled, started, ended, "
                                "trigger FROM runs WHERE outcome = 'ok'").fetchall()
    except sqlite3.Error:
        return []


def _links(rows: list[sqlite3.Row]) -> list[float]:
    ended = {row["run_id"]: row["ended"] for row in rows}
    found = []
    for row in rows:
        if row["trigger"] != "upstream":
            continue
        upstream_run = row["fire_id"].rsplit(".", 1)[1]
        if upstream_run in ended:
            found.append(row["started"] - ended[upstream_run])
    return found


def mode_chains(args: argparse.Namespace) -> list[Result]:
    with workdir() as where:
        root = Path(where)
        config = root / "tasks.yaml"
        config.write_text(_task_file(args.chains, args.length))
        state = root / "state"
        command = [sys.executable, "-m", "torchd"]
        daemon = subprocess.Popen([*command, "run", "-c", str(config), "--state-dir",
                                   str(state)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        try:
            while len(_links(_rows(state / "history.db"))) < args.links:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError("the daemon ended or did not run enough links")
                time.sleep(1.0)
        finally:
            subprocess.run([*command, "stop", "--state-dir", str(state)], check=False,
                           capture_output=True, timeout=60)
            daemon.wait(timeout=30)
        rows = _rows(state / "history.db")
    links = [1000 * s for s in _links(rows)]
    # the first fires come while the daemon is still starting: not what is compared
    plain = [1000 * (r["started"] - r["scheduled"])
             for r in sorted((r for r in rows if r["task"] == "plain"),
                             key=lambda r: r["scheduled"])[STARTUP_FIRES:]]
    results: list[Result] = []
    for what, values in (("chain link: downstream start - upstream end", links),
                         ("plain fire: start - scheduled", plain)):
        results.append({"mode": "chains", "what": what, "count": len(values),
                        "p50_ms": round(statistics.median(values), 3),
                        "p99_ms": round(percentile(values, 99), 3),
                        "max_ms": round(max(values), 3)})
    emit_table(["what", "count", "p50 ms", "p99 ms", "max ms"],
               [[r["what"], r["count"], r["p50_ms"], r["p99_ms"], r["max_ms"]]
                for r in results])
    return results
