"""torchd benchmarks. `python -m bench MODE [options]`; see bench/README.md.

Each mode prints a human table and one JSON line per result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"


def build_stamp() -> Path:
    """Compile the task program once (the measure is the scheduler, not the task)."""
    WORK.mkdir(exist_ok=True)
    binary = WORK / "stamp"
    source = HERE / "stamp.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def torchd_daemon(config: Path, state: Path) -> Iterator[psutil.Process]:
    """`torchd run` on a config; yields once its control socket exists."""
    log = state.with_suffix(".log")
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "torchd", "run", "-c", str(config),
                                 "--state-dir", str(state)], stdout=err, stderr=err,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (state / "torchd.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"torchd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.01)
        yield psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def stamps(path: Path) -> list[tuple[str, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    result = []
    for line in text.splitlines():
        task, ns = line.split()
        result.append((task, int(ns)))
    return result


def emit(result: dict[str, object]) -> None:
    print(json.dumps(result, sort_keys=True))


def mode_lateness(args: argparse.Namespace) -> None:
    stamp = build_stamp()
    with tempfile.TemporaryDirectory(prefix="torchd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        out = tmp / "stamps"
        tasks = "\n".join(
            f'  - {{name: t{i}, schedule: "* * * * * *", command: ["{stamp}", "{out}", "t{i}"]}}'
            for i in range(args.tasks))
        config = tmp / "tasks.yaml"
        config.write_text(f"daemon: {{watch: false}}\ntasks:\n{tasks}\n")
        with torchd_daemon(config, tmp / "state"):
            time.sleep(args.seconds + 1.5)
        records = stamps(out)
    late_ms: list[float] = []
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    per_task: dict[str, set[int]] = {}
    for task, ns in records:
        second = ns // 1_000_000_000
        late_ms.append((ns - second * 1_000_000_000) / 1e6)
        if (task, second) in seen:
            duplicates += 1
        seen.add((task, second))
        per_task.setdefault(task, set()).add(second)
    missed = 0
    for seconds in per_task.values():
        missed += (max(seconds) - min(seconds) + 1) - len(seconds)
    result = {
        "measure": "lateness", "peer": "torchd", "tasks": args.tasks, "fires": len(records),
        "p50_ms": round(statistics.median(late_ms), 3),
        "p99_ms": round(percentile(late_ms, 99), 3), "max_ms": round(max(late_ms), 3),
        "missed": missed, "duplicated": duplicates,
    }
    print(f"{'peer':8} {'tasks':>5} {'fires':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'missed':>6} {'dup':>4}")
    print(f"{'torchd':8} {args.tasks:5d} {len(records):6d} {result['p50_ms']:8.3f} "
          f"{result['p99_ms']:8.3f} {result['max_ms']:8.3f} {missed:6d} {duplicates:4d}")
    emit(result)


def _rare_schedule(i: int) -> str:
    """Distinct expressions that fire once a year, spread over the calendar."""
    return f"{i % 60} {(i // 60) % 60} {(i // 3600) % 24} {1 + i % 28} {1 + i % 12} *"


def mode_idle(args: argparse.Namespace) -> None:
    stamp = build_stamp()
    rows = []
    for count in args.tasks:
        with tempfile.TemporaryDirectory(prefix="torchd-bench-") as tmp_name:
            tmp = Path(tmp_name)
            out = tmp / "stamps"
            lines = [f'  - {{name: rare{i}, schedule: "{_rare_schedule(i)}", '
                     f'command: ["{stamp}", "{out}", "rare{i}"]}}' for i in range(count)]
            lines.append(f'  - {{name: tick, schedule: "* * * * * *", '
                         f'command: ["{stamp}", "{out}", "tick"]}}')
            config = tmp / "tasks.yaml"
            config.write_text("daemon: {watch: false}\ntasks:\n" + "\n".join(lines) + "\n")
            started = time.time()
            with torchd_daemon(config, tmp / "state") as proc:
                while not stamps(out):
                    time.sleep(0.005)
                first_fire = stamps(out)[0][1] / 1e9 - started
                time.sleep(2)  # let start-up work settle before measuring
                cpu0 = sum(proc.cpu_times()[:2])
                t0 = time.monotonic()
                time.sleep(args.seconds)
                cpu = sum(proc.cpu_times()[:2]) - cpu0
                elapsed = time.monotonic() - t0
                rss_mb = proc.memory_info().rss / 2**20
        result = {
            "measure": "idle", "peer": "torchd", "tasks": count,
            "cpu_s_per_min": round(cpu * 60 / elapsed, 4), "rss_mb": round(rss_mb, 1),
            "start_to_first_fire_s": round(first_fire, 3), "window_s": round(elapsed, 1),
        }
        rows.append(result)
    print(f"{'peer':8} {'tasks':>7} {'CPU s/min':>10} {'RSS MB':>8} {'first fire s':>13}")
    for r in rows:
        print(f"{'torchd':8} {r['tasks']:7d} {r['cpu_s_per_min']:10.4f} {r['rss_mb']:8.1f} "
              f"{r['start_to_first_fire_s']:13.3f}")
    for r in rows:
        emit(r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="mode", required=True)
    late = sub.add_parser("lateness", help="start time minus scheduled second")
    late.add_argument("--tasks", type=int, default=1)
    late.add_argument("--seconds", type=int, default=60)
    late.set_defaults(func=mode_lateness)
    idle = sub.add_parser("idle", help="CPU and RSS with many rarely-firing tasks")
    idle.add_argument("--tasks", type=int, nargs="+", default=[10_000])
    idle.add_argument("--seconds", type=int, default=60)
    idle.set_defaults(func=mode_idle)
    args = parser.parse_args(argv)
    if shutil.which("cc") is None:
        print("bench needs a C compiler (cc) for its task program", file=sys.stderr)
        return 1
    args.func(args)
    return 0
