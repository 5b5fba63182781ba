"""`python -m bench web`: the HTTP listener at scale, in one sitting.

1. requests: p50/p99 of GET /api/v1/status, /api/v1/list, the dashboard's pages and
   /metrics against a daemon with N rarely-firing tasks (client-side time over one
   keep-alive loopback connection: the server's time plus a loopback round trip).
2. idle: CPU of `torchd` (no listener) and `torchd-http` with a dashboard open (a client
   that polls what the open page's htmx polls, as a browser would), over the same window.
3. streams: 50 clients following the live log of a task writing 1 MB/s: the daemon's
   CPU, and the lateness of tasks firing every second, against the same without clients.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.peers import Task, TorchdHttpPeer
from bench.run import (
    Result,
    build_stamp,
    cpu_seconds,
    emit_table,
    fire_stats,
    idle_peer,
    percentile,
    rare_schedule,
    read_stamps,
    running,
    workdir,
)
from torchd.core.events import RunEnded, RunStarted
from torchd.core.model import HistoryPolicy
from torchd.store.history import HistoryWriter

PATHS = ("/api/v1/status", "/api/v1/list", "/", "/tasks", "/tasks?q=rare42", "/metrics")
POLLED = re.compile(r'hx-get="([^"]+)"[^>]*hx-trigger="[^"]*every (\d+(?:\.\d+)?)s')
HEADERS = re.compile(r"hx-headers='(\{[^']*\})'")
GUSH = ("import sys, time\n"
        "line = b'x' * 1023 + b'\\n'\n"
        "while True:\n"
        "    sys.stdout.buffer.write(line * 100); sys.stdout.flush(); time.sleep(0.1)\n")
CLIENTS = '''
import asyncio, sys, time, aiohttp
url, token, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
got = [0] * count
async def follow(i, session):
    async with session.get(url) as response:
        async for chunk in response.content.iter_any():
            got[i] += len(chunk)
async def main():
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + token},
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.ensure_future(follow(i, session)) for i in range(count)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
asyncio.run(main())
print(sum(got))
'''


def _get(conn: http.client.HTTPConnection, path: str, token: str,
         extra: dict[str, str] | None = None) -> tuple[int, bytes, float]:
    began = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}", **(extra or {})})
    response = conn.getresponse()
    body = response.read()
    return response.status, body, time.perf_counter() - began


def timed_gets(peer: TorchdHttpPeer, path: str, count: int) -> tuple[list[float], int]:
    """Milliseconds per GET of `path` over one keep-alive connection (the server's time
    plus a loopback round trip), and the size of the last answer; RuntimeError unless
    every answer is 200."""
    conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=60)
    took, size = [], 0
    try:
        for _ in range(count):
            status, body, spent = _get(conn, path, peer.token)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status}")
            took.append(spent * 1e3)
            size = len(body)
    finally:
        conn.close()
    return took, size


def _p50_p99(took: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(took), 1),
            "p99_ms": round(percentile(took, 99), 1)}


def plan_schedule(i: int) -> str:
    """The plan's mix: ten tasks every second first (the costliest page), then one task in
    a hundred every minute, the rest every five minutes, their seconds spread."""
    if i < 10:
        return "* * * * * *"
    if i % 100 == 0:
        return f"{i % 60} * * * * *"
    return f"{i % 60} {i % 5}-59/5 * * * *"


def mode_plan(args: argparse.Namespace) -> list[Result]:
    """The daily plan page (`/plan`) of a daemon with `--tasks` tasks, after `--settle`
    seconds of runs: the first page (the per-second tasks), a page in the middle and a
    name filter."""
    tasks = [Task(f"task{i:05d}", plan_schedule(i), ("/bin/true",))
             for i in range(args.tasks)]
    results: list[Result] = []
    with workdir() as tmp, running("torchd-http", tasks, Path(tmp) / "peer") as (
            peer, _proc, _started):
        assert isinstance(peer, TorchdHttpPeer)
        time.sleep(args.settle)  # some runs in the history
        middle = args.tasks // 100  # page numbers are 1-based: the middle of 50-task pages
        for label, path in (("page 1", "/plan"), ("middle page", f"/plan?page={middle}"),
                            ("filter", "/plan?match=task0999")):
            took, size = timed_gets(peer, path, args.requests)
            results.append({"measure": "plan", "peer": "torchd", "tasks": args.tasks,
                            "page": label, "requests": args.requests, **_p50_p99(took),
                            "kb": size // 1024})
    emit_table(["tasks", "page", "requests", "p50 ms", "p99 ms", "KB"],
               [[r["tasks"], r["page"], r["requests"], r["p50_ms"], r["p99_ms"], r["kb"]]
                for r in results])
    return results


def _prefill_history(state: Path, tasks: list[Task], per_task: int) -> None:
    """`per_task` finished runs of every task, as the daemon would have recorded them."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    writer = HistoryWriter(state / "history.db", HistoryPolicy(), host="bench")
    writer.start(lambda _pid, _started: False)
    now = time.time() - 3600
    for i in range(per_task):
        for k, task in enumerate(tasks):
            at = now - (per_task - i) * 60 - k * 0.001
            common = {"task": task.name, "run_id": f"{i:04x}{k:08x}", "pid": 1000 + k,
                      "started": at, "scheduled": float(int(at)), "fire_id": f"{task.name}@x",
                      "attempt": 1, "log_file": f"{task.name}.log", "trigger": "schedule"}
            writer.run_started(RunStarted(**common, log_start=0))  # type: ignore[arg-type]
            writer.run_ended(RunEnded(  # type: ignore[arg-type]
                **common, outcome="ok" if (i + k) % 7 else "failed", exit_code=0, signal=None,
                ended=at + 0.5, duration=0.5, log_end=10, err_start=None, err_end=None))
    writer.flush(timeout=600)
    writer.stop()


def mode_dashboard(args: argparse.Namespace) -> list[Result]:
    """The dashboard's pages with many tasks and `--runs-per-task` runs of each in the
    history: the Tasks page (first, a middle page, filtered) and the others."""
    tasks = [Task(f"job{i:05d}", rare_schedule(i), ("true",)) for i in range(args.tasks)]
    results: list[Result] = []
    with workdir() as tmp:
        peer = TorchdHttpPeer(Path(tmp) / "torchd")
        _prefill_history(peer.state, tasks, args.runs_per_task)
        peer.start(tasks)
        try:
            middle = max(args.tasks // 100, 1)
            for path in ("/tasks", f"/tasks?page={middle}", "/tasks?q=job012",
                         "/tasks?state=paused", f"/tasks/{tasks[-1].name}", "/runs", "/"):
                timed_gets(peer, path, 3)  # warm
                took, _ = timed_gets(peer, path, args.requests)
                results.append({"measure": "dashboard", "peer": "torchd", "path": path,
                                "tasks": args.tasks, "requests": len(took),
                                **_p50_p99(took)})
        finally:
            peer.stop()
    emit_table(["page", "tasks", "requests", "p50 ms", "p99 ms"],
               [[r["path"], r["tasks"], r["requests"], r["p50_ms"], r["p99_ms"]]
                for r in results])
    return results


def requests_at_scale(stamp: Path, count: int, samples: int) -> list[Result]:
    results = []
    with workdir() as tmp:
        tasks = [Task(f"rare{i}", rare_schedule(i), (str(stamp), f"{tmp}/out", f"r{i}"))
                 for i in range(count)]
        with running("torchd-http", tasks, Path(tmp) / "peer") as (peer, _proc, _started):
            assert isinstance(peer, TorchdHttpPeer)
            conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=60)
            for path in PATHS:
                times = []
                status = 0
                for index in range(samples + 2):
                    status, _body, spent = _get(conn, path, peer.token)
                    if index >= 2:  # the first two warm caches
                        times.append(spent * 1e3)
                row: Result = {"measure": "web-requests", "tasks": count, "path": path,
                               "status": status}
                if status == 200:
                    row.update(_p50_p99(times))
                results.append(row)
            conn.close()
    emit_table(["tasks", "path", "status", "p50 ms", "p99 ms"],
               [[r["tasks"], r["path"], r["status"], r.get("p50_ms", "-"), r.get("p99_ms", "-")]
                for r in results])
    return results


class DashboardTab:
    """What an open dashboard page asks of the daemon: the page once, then each element
    htmx polls (`hx-trigger="every Ns"`) at its interval, with the element's `hx-headers`
    as htmx sends them (taken again from each answer that replaces it)."""

    def __init__(self, url: str, port: int, token: str) -> None:
        self._port = port
        self._token = token
        self._url = url
        self._stop = threading.Event()
        self.requests = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DashboardTab:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        _status, page, _ = _get(conn, self._url, self._token)
        self.requests += 1
        polled = [(path, float(every)) for path, every in POLLED.findall(page.decode())]
        due = {path: time.monotonic() + every for path, every in polled}
        sent = _headers_of(page)
        while not self._stop.wait(0.05):
            for path, every in polled:
                if time.monotonic() >= due[path]:
                    status, body, _ = _get(conn, path.replace("&amp;", "&"), self._token, sent)
                    if status == 200:
                        sent = _headers_of(body)
                    self.requests += 1
                    due[path] += every
        conn.close()


def _headers_of(page: bytes) -> dict[str, str]:
    found = HEADERS.search(page.decode())
    return json.loads(found.group(1)) if found else {}


def idle_with_a_dashboard(stamp: Path, count: int, seconds: int) -> list[Result]:
    results = {}
    with idle_peer("torchd", stamp, count) as (plain, plain_row), \
            idle_peer("torchd-http", stamp, count) as (served, served_row):
        peer_port = _listener_port(served)
        token = _token_of(served)
        with DashboardTab("/", peer_port, token) as tab:
            time.sleep(2)
            before = {"torchd": cpu_seconds(plain), "torchd-http": cpu_seconds(served)}
            began = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - began
            spent = {"torchd": cpu_seconds(plain) - before["torchd"],
                     "torchd-http": cpu_seconds(served) - before["torchd-http"]}
        for name, row in (("torchd", plain_row), ("torchd-http", served_row)):
            row.update(measure="web-idle", dashboard_open=name == "torchd-http",
                       cpu_s_per_min=round(spent[name] * 60 / elapsed, 4))
            results[name] = row
        results["torchd-http"]["dashboard_requests"] = tab.requests
    rows = list(results.values())
    emit_table(["peer", "tasks", "dashboard open", "CPU s/min", "dashboard requests"],
               [[r["peer"], r["tasks"], r["dashboard_open"], r["cpu_s_per_min"],
                 r.get("dashboard_requests", "-")] for r in rows])
    return rows


def _listener_port(proc: psutil.Process) -> int:
    for conn in proc.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr:
            return int(conn.laddr.port)
    raise RuntimeError("torchd-http does not listen")


def _token_of(proc: psutil.Process) -> str:
    state = proc.cmdline()[proc.cmdline().index("--state-dir") + 1]
    return (Path(state) / "http.token").read_text().strip()


def streams(stamp: Path, clients: int, ticks: int, seconds: int) -> list[Result]:
    results = []
    with workdir() as tmp:
        out = Path(tmp) / "stamps"
        tasks = [Task(f"tick{i}", "* * * * * *", (str(stamp), str(out), f"tick{i}"))
                 for i in range(ticks)]
        tasks.append(Task("gush", rare_schedule(7), (sys.executable, "-c", GUSH)))
        with running("torchd-http", tasks, Path(tmp) / "peer") as (peer, proc, _started):
            assert isinstance(peer, TorchdHttpPeer)
            conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=30)
            conn.request("POST", "/api/v1/trigger", body=b'{"task": "gush"}', headers={
                "Authorization": f"Bearer {peer.token}", "Content-Type": "application/json"})
            run_id = re.search(rb'"run_id":"(\w+)"', conn.getresponse().read())
            assert run_id is not None
            conn.close()
            time.sleep(3)
            for label, followers in (("no clients", 0), (f"{clients} clients", clients)):
                first = int(time.time()) + 2
                before = cpu_seconds(proc)
                began = time.monotonic()
                received = 0
                if followers:
                    url = f"{peer.url}/api/v1/runs/{run_id.group(1).decode()}/log/stream"
                    done = subprocess.run([sys.executable, "-c", CLIENTS, url, peer.token,
                                           str(followers), str(seconds)],
                                          capture_output=True, text=True, check=True)
                    received = int(done.stdout.strip() or 0)
                else:
                    time.sleep(seconds)
                elapsed = time.monotonic() - began
                spent = cpu_seconds(proc) - before
                last = int(time.time()) - 2
                stats = fire_stats(read_stamps(out), 1, first, last,
                                   [f"tick{i}" for i in range(ticks)])
                results.append({"measure": "web-streams", "followers": label,
                                "daemon_cpu_percent": round(spent * 100 / elapsed, 1),
                                "mb_per_s_per_client": round(
                                    received / 2**20 / elapsed / max(followers, 1), 2),
                                **stats})
    emit_table(["followers", "daemon CPU %", "MB/s per client", "fires", "p50 ms", "p99 ms",
                "missed"],
               [[r["followers"], r["daemon_cpu_percent"], r["mb_per_s_per_client"],
                 r["fires"], r["p50_ms"], r["p99_ms"], r["missed"]] for r in results])
    return results


def mode_web(args: argparse.Namespace) -> list[Result]:
    stamp = build_stamp()
    results = requests_at_scale(stamp, args.tasks, args.samples)
    results += idle_with_a_dashboard(stamp, args.tasks, args.seconds)
    results += streams(stamp, args.clients, args.ticks, args.seconds)
    return results


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--tasks", type=int, default=10_000)
    command.add_argument("--samples", type=int, default=50, help="requests per path")
    command.add_argument("--seconds", type=int, default=30, help="per idle and stream window")
    command.add_argument("--clients", type=int, default=50, help="live-log followers")
    command.add_argument("--ticks", type=int, default=10, help="tasks every second beside them")
