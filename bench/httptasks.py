"""`python -m bench httptasks`: N HTTP tasks due on one second against a local aiohttp
server, beside a command task every second.

Per round: the floor first (a bare aiohttp client loop in a process of its own: at a whole
second it makes the same N requests with the same connection limits as torchd's session,
and nothing else), then torchd. Both are timed against the scheduled second: the last
request sent (its arrival at the server, which stamps each on receipt) and the last
completed (torchd: the run's end in its history; the floor: the response read). The
command task (`bench/stamp.c`) every second gives the lateness of command fires around
the burst: its fire at the burst's second (in the same batch as the N requests), the
latest of the two after, and its p50, p99 and missed fires over the whole window.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.peers import free_port
from bench.run import Result, build_stamp, emit_table, fire_stats, read_stamps, workdir

SERVER = '''
import sys, time
from aiohttp import web
arrivals = {}
async def hit(request):
    arrivals.setdefault(request.match_info["who"], []).append(time.time_ns())
    return web.Response(text="ok\\n")
async def stats(request):
    return web.json_response(arrivals.get(request.match_info["who"], []))
app = web.Application()
app.router.add_get("/hit/{who}/{n}", hit)
app.router.add_get("/stats/{who}", stats)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
'''
FLOOR = '''
import asyncio, sys, time, aiohttp
url, count, at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def get(session, i):
    async with session.get(f"{url}/{i}") as response:
        await response.read()
    return time.time_ns()
async def main():
    connector = aiohttp.TCPConnector(limit=int(sys.argv[4]), limit_per_host=int(sys.argv[5]))
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.sleep(at - time.time())
        done = await asyncio.gather(*(get(session, i) for i in range(count)))
    print(max(done))
asyncio.run(main())
'''
LEAD = 8  # seconds from the daemon's start to the burst (it loads N tasks meanwhile)
AFTER = 6  # seconds watched after the burst


def _arrivals(port: int, who: str) -> list[int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/{who}", timeout=30) as got:
        found: list[int] = json.loads(got.read())
        return found


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _arrivals(port, "none")
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the bench's HTTP server did not start")


def _floor(port: int, count: int, at: int) -> Result:
    from torchd.process.httprun import CONNECTIONS, CONNECTIONS_PER_HOST  # noqa: PLC0415

    done = subprocess.run([sys.executable, "-c", FLOOR, f"http://127.0.0.1:{port}/hit/floor",
                           str(count), str(at), str(CONNECTIONS), str(CONNECTIONS_PER_HOST)],
                          capture_output=True, text=True, check=True)
    sent = _arrivals(port, "floor")
    return {"peer": "aiohttp loop (floor)", "requests": len(sent),
            "last_sent_ms": round((max(sent) - at * 10**9) / 1e6, 1),
            "last_done_ms": round((int(done.stdout) - at * 10**9) / 1e6, 1)}


def _torchd(port: int, count: int, stamp: Path, tmp: Path) -> Result:
    out, state, config = tmp / "stamps", tmp / "state", tmp / "tasks.yaml"
    at = int(time.time()) + LEAD
    when = time.gmtime(at)
    burst = f"{when.tm_sec} {when.tm_min} {when.tm_hour} * * *"
    lines = [f'  - {{name: h{i}, schedule: "{burst}", '
             f'http: "http://127.0.0.1:{port}/hit/torchd/{i}"}}' for i in range(count)]
    lines.append(f'  - {{name: tick, schedule: "* * * * * *", '
                 f'command: {json.dumps([str(stamp), str(out), "tick"])}}}')
    # No copy of the runs' log lines on stdout: the harness keeps the daemon's stdout.
    config.write_text("daemon: {watch: false, timezone: UTC, log: {stdout: false}}\n"
                      "tasks:\n" + "\n".join(lines) + "\n")
    with (tmp / "torchd.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "torchd", "run", "-c", str(config),
                                 "--state-dir", str(state)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(max(0.0, at + AFTER - time.time()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    sent = _arrivals(port, "torchd")
    with sqlite3.connect(state / "history.db") as db:
        ended = [row[0] for row in db.execute(
            "SELECT ended FROM runs WHERE task != 'tick' AND ended IS NOT NULL")]
        outcomes = dict(db.execute("SELECT outcome, count(*) FROM runs WHERE task != 'tick' "
                                   "GROUP BY outcome").fetchall())
    stamps = read_stamps(out)
    window = fire_stats(stamps, 1, at - 2, at + AFTER - 2, ["tick"])
    at_burst = fire_stats(stamps, 1, at, at, ["tick"])
    after = fire_stats(stamps, 1, at + 1, at + 2, ["tick"])
    return {"peer": "torchd", "requests": len(sent), "outcomes": outcomes,
            "last_sent_ms": round((max(sent) - at * 10**9) / 1e6, 1) if sent else None,
            "last_done_ms": round((max(ended) - at) * 1e3, 1) if ended else None,
            "tick_at_burst_ms": at_burst["max_ms"], "tick_after_max_ms": after["max_ms"],
            "tick_p50_ms": window["p50_ms"],
            "tick_p99_ms": window["p99_ms"], "tick_missed": window["missed"]}


def _median(rows: list[Result], key: str) -> object:
    values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
    return round(statistics.median(values), 1) if values else "-"


def mode_httptasks(args: argparse.Namespace) -> list[Result]:
    stamp = build_stamp()
    rounds: dict[str, list[Result]] = {"floor": [], "torchd": []}
    for _ in range(args.repeats):
        with workdir() as tmp:
            port = free_port()
            server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)],
                                      start_new_session=True)
            try:
                _wait_port(port)
                rounds["floor"].append(_floor(port, args.tasks, int(time.time()) + 2))
                rounds["torchd"].append(_torchd(port, args.tasks, stamp, Path(tmp)))
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    results = []
    for name, rows in rounds.items():
        row: Result = {"measure": "httptasks", "tasks": args.tasks,
                       **{key: _median(rows, key) for key in (
                           "last_sent_ms", "last_done_ms", "tick_at_burst_ms",
                           "tick_after_max_ms",
                           "tick_p50_ms", "tick_p99_ms")},
                       "peer": rows[0]["peer"], "per_round": rows}
        if name == "torchd":
            row["tick_missed"] = sum(int(r["tick_missed"]) for r in rows)
        results.append(row)
    emit_table(["peer", "tasks", "last sent ms", "last done ms", "tick at burst ms",
                "tick next 2 s max ms", "tick p50 ms", "tick p99 ms", "tick missed"],
               [[r["peer"], r["tasks"], r["last_sent_ms"], r["last_done_ms"],
                 r["tick_at_burst_ms"], r["tick_after_max_ms"], r["tick_p50_ms"],
                 r["tick_p99_ms"],
                 r.get("tick_missed", "-")] for r in results])
    return results


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--tasks", type=int, default=1000, help="HTTP tasks due at once")
    command.add_argument("--repeats", type=int, default=3,
                         help="rounds of the floor and torchd, one after another; medians "
                              "shown")
