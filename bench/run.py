"""torchd benchmarks, side by side with peers. `python -m bench MODE [--peer P ...]`.

Each mode prints a table for people and one JSON line per result; bench/README.md
explains every measure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import psutil
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from bench.peers import PEERS, WORK, Peer, Task, TorchdPeer, start_redis
from torchd.cluster.coordinator import Cluster, host_figures
from torchd.config.loader import parse_config
from torchd.core.clock import SystemClock
from torchd.core.events import EventBus, RunEnded, RunStarted
from torchd.core.model import ClusterSettings, HistoryPolicy, RunOutcome, Trigger
from torchd.core.reloadplan import plan
from torchd.engine.admission import HANDOFF
from torchd.engine.scheduler import Scheduler
from torchd.store.history import HistoryWriter
from torchd.web.metrics import DURATION_BUCKETS, Metrics, ScrapeData
from torchd.web.promfamilies import SmallFamilies, cumulative_buckets

HERE = Path(__file__).resolve().parent
Result = dict[str, object]


@contextmanager
def workdir() -> Iterator[str]:
    """A scratch directory; kept (and printed) when TORCHD_BENCH_KEEP is set, to debug."""
    if os.environ.get("TORCHD_BENCH_KEEP"):
        path = tempfile.mkdtemp(prefix="torchd-bench-")
        print(f"# keeping {path}", file=sys.stderr)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="torchd-bench-") as path:
        yield path


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of every thread of the process, in ns precision from schedstat (psutil's
    cpu_times() counts 10 ms clock ticks, too coarse for an idle daemon)."""
    total = 0
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def build_stamp() -> Path:
    """Compile the task program once, statically where the C library allows: the measure is
    the scheduler, not ld.so. Each way of building has its own file, so a binary built
    another way (say, before a static libc was installed) is never taken for this one."""
    WORK.mkdir(exist_ok=True)
    source = HERE / "stamp.c"
    for name, flags in (("stamp-static", ["-static"]), ("stamp-dynamic", [])):
        binary = WORK / name
        if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
            return binary
        built = subprocess.run(["cc", "-O2", *flags, "-o", str(binary), str(source)],
                               check=False)
        if built.returncode == 0:
            return binary
    raise SystemExit("bench: cannot compile bench/stamp.c (is a C compiler installed?)")


FLOOR = "posix_spawn loop (floor)"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def read_stamps(path: Path) -> list[tuple[str, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            found.append((parts[0], int(parts[1])))
    return found


def per_peer(names: list[str], measure: Callable[[str], Result]) -> dict[str, Callable[[], Result]]:
    """One measure per peer, for in_rounds (which may add rows such as a floor)."""
    return {name: partial(measure, name) for name in names}


def each_peer(names: list[str], measure: Callable[[str], Result]) -> list[Result]:
    """Measure every peer once; one that fails is reported as such and the others still
    run."""
    return [_attempt(name, partial(measure, name)) for name in names]


def _attempt(name: str, measure: Callable[[], Result]) -> Result:
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - a broken peer must not hide the others
        return failure(name, exc)


def failure(name: str, exc: Exception) -> Result:
    """A peer's failed measure, as a result row (and a line on stderr)."""
    message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    print(f"! {name}: {message}", file=sys.stderr)
    return {"peer": name, "error": message}


COUNTS = ("fires", "missed", "duplicated")  # summed over rounds; other numbers: medians


def in_rounds(measures: dict[str, Callable[[], Result]], repeats: int) -> list[Result]:
    """Run every measure once per round, round after round (so a noisy minute hits every
    peer alike), and give each peer's median over the rounds (counts summed). With more
    than one round, each result keeps its rounds under `per_round`."""
    rounds: dict[str, list[Result]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            rounds[name].append(_attempt(name, measure))
    return [combine(runs, keep_rounds=repeats > 1) for runs in rounds.values()]


def combine(runs: list[Result], *, keep_rounds: bool) -> Result:
    """One result from a measure's rounds: medians, counts summed, the failed rounds
    counted; with `keep_rounds`, the rounds themselves under `per_round`."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[-1]
    combined: Result = dict(good[0])
    for key, value in good[0].items():
        values = [v for r in good if isinstance(v := r.get(key), int | float)
                  and not isinstance(v, bool)]
        if isinstance(value, bool) or len(values) != len(good):
            continue
        middle = statistics.median(values)
        whole = all(isinstance(x, int) for x in values) and middle == int(middle)
        combined[key] = (sum(values) if key in COUNTS
                         else int(middle) if whole else round(middle, 3))
    combined["rounds"] = len(good)
    combined["failed_rounds"] = len(runs) - len(good)
    if keep_rounds:
        combined["per_round"] = good
    return combined


def _rounds_of(result: Result) -> list[Result]:
    rounds = result.get("per_round")
    return rounds if isinstance(rounds, list) else [result]


def same_round_ratio(results: list[Result], key: str, peer: str = "torchd",
                     against: str = "apscheduler") -> str | None:
    """`peer`'s value of `key` over `against`'s, round by round: a line for the table. The
    median ratio is also kept in `peer`'s result as `ratio_KEY`."""
    by_peer = {r.get("peer"): r for r in results}
    mine, theirs = by_peer.get(peer), by_peer.get(against)
    if mine is None or theirs is None or "error" in mine or "error" in theirs:
        return None
    ratios = []
    for a, b in zip(_rounds_of(mine), _rounds_of(theirs), strict=False):
        top, bottom = a.get(key), b.get(key)
        if isinstance(top, int | float) and isinstance(bottom, int | float) and bottom:
            ratios.append(top / bottom)
    if not ratios:
        return None
    mine["ratio_" + key] = round(statistics.median(ratios), 3)
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    return (f"{peer} / {against}, {key}: median {statistics.median(ratios):.2f} over "
            f"{len(ratios)} round(s) ({listed})")


def cells(result: Result, keys: list[str]) -> list[object]:
    if "error" in result:
        return [result["peer"], *(["-"] * (len(keys) - 2)), f"error: {result['error'][:60]}"]  # type: ignore[index]
    return [result.get(key, "-") for key in keys]


@contextmanager
def running(peer_name: str, tasks: list[Task], workdir: Path) -> Iterator[
        tuple[Peer, psutil.Process, float]]:
    """Start one peer; yields it, its process and when that process was started (after
    the peer's files were written: writing 10,000 tasks is the harness's work, 40-50 ms)."""
    peer = PEERS[peer_name](workdir)
    peer.install()
    try:
        proc = peer.start(tasks)
        if peer.started_at is None:
            raise RuntimeError(f"{peer_name} did not start its process through Peer._popen")
        yield peer, proc, peer.started_at
    finally:
        peer.stop()


def emit_ratios(results: list[Result], keys: list[str], prefix: str = "") -> None:
    for key in keys:
        line = same_round_ratio(results, key)
        if line is not None:
            print(f"# {prefix}{line}")


def emit_table(header: list[str], rows: list[list[object]]) -> None:
    table: list[list[object]] = [list(header), *rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


def emit_json(results: list[Result]) -> None:
    for result in results:
        print(json.dumps(result, sort_keys=True))


def fire_stats(records: list[tuple[str, int]], period: int, first: int, last: int,
               names: list[str], *, offset: int = 0) -> Result:
    """Lateness against the scheduled instant (the instant at or before the stamp: the
    seconds s with s % period == offset), and missed / duplicated fires among the instants
    first..last (inclusive, seconds)."""
    late_ms: list[float] = []
    seen: dict[tuple[str, int], int] = {}
    for task, ns in records:
        instant = (ns // 1_000_000_000 - offset) // period * period + offset
        if not first <= instant <= last:
            continue
        late_ms.append((ns - instant * 1_000_000_000) / 1e6)
        seen[(task, instant)] = seen.get((task, instant), 0) + 1
    instants = [s for s in range(first, last + 1) if s % period == offset]
    expected = len(instants) * len(names)
    return {
        "fires": len(late_ms),
        "p50_ms": round(statistics.median(late_ms), 2) if late_ms else None,
        "p99_ms": round(percentile(late_ms, 99), 2) if late_ms else None,
        "max_ms": round(max(late_ms), 2) if late_ms else None,
        "missed": expected - len(seen),
        "duplicated": sum(n - 1 for n in seen.values()),
    }


# ----- 1. lateness ---------------------------------------------------------------------------
def mode_lateness(args: argparse.Namespace) -> list[Result]:
    stamp = build_stamp()

    def measure(peer_name: str) -> Result:
        period = 1 if PEERS[peer_name].seconds else 60
        with workdir() as tmp_name:
            out = Path(tmp_name) / "stamps"
            schedule = "* * * * * *" if period == 1 else "0 * * * * *"
            tasks = [Task(f"t{i}", schedule, (str(stamp), str(out), f"t{i}"))
                     for i in range(args.tasks)]
            duration = args.seconds if period == 1 else max(args.seconds, 120)
            with running(peer_name, tasks, Path(tmp_name) / "peer"):
                begin = time.time()
                time.sleep(duration + 1.5)
                end = time.time()
            first, last = math.ceil(begin) + 1, math.floor(end) - 1
            stats = fire_stats(read_stamps(out), period, first, last, [t.name for t in tasks])
        return {"measure": "lateness", "peer": peer_name, "tasks": args.tasks,
                "every_s": period, "window_s": last - first + 1, **stats}

    if args.together:
        results = lateness_together(stamp, args)
    else:
        measures = per_peer(args.peer, measure)
        measures[FLOOR] = partial(lateness_floor, stamp, args.tasks, args.seconds)
        results = in_rounds(measures, args.repeats)
    keys = ["peer", "tasks", "every_s", "fires", "p50_ms", "p99_ms", "max_ms", "missed",
            "duplicated"]
    emit_table(["peer", "tasks", "every s", "fires", "p50 ms", "p99 ms", "max ms", "missed",
                "dup"], [cells(r, keys) for r in results])
    emit_ratios(results, ["p50_ms", "p99_ms"])
    return results


def spawn_stamps(stamp: Path, out: Path, names: list[str]) -> list[int]:
    """Start a stamp per name in a tight posix_spawn loop (no scheduler); their pids."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return [os.posix_spawn(str(stamp), [str(stamp), str(out), name], env) for name in names]


def start_stamps(stamp: Path, out: Path, names: list[str]) -> None:
    """Start a stamp per name in a tight posix_spawn loop, then reap them."""
    for pid in spawn_stamps(stamp, out, names):
        os.waitpid(pid, 0)


def start_stamps_at(seconds: Iterable[int], stamp: Path, out: Path, names: list[str]) -> None:
    """At each of these whole seconds, wake (clock_nanosleep, no event loop) and start a
    stamp per name in a tight posix_spawn loop: the floor of the lateness measures."""
    for second in seconds:
        time.sleep(max(0.0, second - time.time()))
        start_stamps(stamp, out, names)


def lateness_floor(stamp: Path, count: int, seconds: int) -> Result:
    """No scheduler: at each whole second this process wakes (clock_nanosleep, no event
    loop) and starts `count` stamps in a tight posix_spawn loop. What process creation
    alone costs each second: no scheduler's p99 can be below this one's."""
    with workdir() as tmp_name:
        out = Path(tmp_name) / "stamps"
        names = [f"t{i}" for i in range(count)]
        first = math.ceil(time.time()) + 1
        start_stamps_at(range(first, first + seconds), stamp, out, names)
        stats = fire_stats(read_stamps(out), 1, first, first + seconds - 1, names)
    return {"measure": "lateness", "peer": FLOOR, "tasks": count,
            "every_s": 1, "window_s": seconds, **stats}


def lateness_together(stamp: Path, args: argparse.Namespace) -> list[Result]:
    """`lateness --together`: the peers and the floor run at the same time, each on its own
    share of the seconds (of K of them, the k-th fires at the seconds s with s % K == k),
    so that over a round every one of them meets the same noise of a shared machine. Each
    fires on `--seconds` instants, so a round lasts K times as long."""
    minute_level = [name for name in args.peer if not PEERS[name].seconds]
    if minute_level:
        raise SystemExit(f"bench: --together takes peers that fire every second, not "
                         f"{', '.join(minute_level)}")
    names = [*args.peer, FLOOR]
    shares = len(names)
    if 60 % shares:
        raise SystemExit(f"bench: --together shares the seconds of a minute among the peers "
                         f"and the floor: {shares} of them do not divide 60")
    rounds: dict[str, list[Result]] = {name: [] for name in names}
    for index in range(args.repeats):
        order = names if index % 2 == 0 else [*args.peer[::-1], FLOOR]
        for result in together_round(stamp, order, args.tasks, args.seconds):
            rounds[str(result["peer"])].append(result)
    return [combine(runs, keep_rounds=args.repeats > 1) for runs in rounds.values()]


def together_round(stamp: Path, names: list[str], count: int, instants: int) -> list[Result]:
    """One round of `lateness --together`: start the peers (the floor, last in `names`, is
    this process), wait until all are up, then take the same window for all."""
    shares = len(names)
    task_names = [f"t{i}" for i in range(count)]
    results: dict[str, Result] = {}
    with ExitStack() as stack:
        base = Path(stack.enter_context(workdir()))
        outs = {name: base / f"stamps-{share}" for share, name in enumerate(names)}
        for share, name in enumerate(names[:-1]):
            tasks = [Task(task, f"{share}-59/{shares} * * * * *",
                          (str(stamp), str(outs[name]), task)) for task in task_names]
            try:
                stack.enter_context(running(name, tasks, base / f"peer-{share}"))
            except Exception as exc:  # noqa: BLE001 - a broken peer must not hide the others
                results[name] = failure(name, exc)
        first = math.ceil(time.time()) + 2  # let start-up work settle
        last = first + instants * shares - 1
        floor_share = shares - 1
        start_stamps_at((s for s in range(first, last + 1) if s % shares == floor_share),
                        stamp, outs[FLOOR], task_names)
        time.sleep(max(0.0, last + 1.5 - time.time()))
        for share, name in enumerate(names):
            if name not in results:
                stats = fire_stats(read_stamps(outs[name]), shares, first, last, task_names,
                                   offset=share)
                results[name] = {"measure": "lateness", "peer": name, "tasks": count,
                                 "every_s": shares, "together": True,
                                 "window_s": last - first + 1, **stats}
    return [results[name] for name in names]


# ----- 2. burst ------------------------------------------------------------------------------
def _utc_fields(ts: int) -> str:
    t = datetime.fromtimestamp(ts, UTC)
    return f"{t.second} {t.minute} {t.hour} {t.day} {t.month} *"


def mode_burst(args: argparse.Namespace) -> list[Result]:
    stamp = build_stamp()

    def measure(peer_name: str) -> Result:
        with workdir() as tmp_name:
            out = Path(tmp_name) / "stamps"
            target = math.ceil(time.time()) + args.lead
            if not PEERS[peer_name].seconds:
                target = math.ceil(target / 60) * 60
            tasks = [Task(f"b{i}", _utc_fields(target), (str(stamp), str(out), f"b{i}"))
                     for i in range(args.tasks)]
            with running(peer_name, tasks, Path(tmp_name) / "peer"):
                if time.time() > target - 1:
                    raise RuntimeError("not ready 1 s before the burst; raise --lead")
                deadline = target + 60
                while time.time() < deadline and len(read_stamps(out)) < args.tasks:
                    time.sleep(0.05)
                time.sleep(1)  # let duplicates, if any, arrive
            records = read_stamps(out)
        starts = [ns for _, ns in records]
        names = {task for task, _ in records}
        return {
            "measure": "burst", "peer": peer_name, "tasks": args.tasks,
            "first_ms": round((min(starts) - target * 1e9) / 1e6, 2) if starts else None,
            "last_ms": round((max(starts) - target * 1e9) / 1e6, 2) if starts else None,
            "started": len(names), "missed": args.tasks - len(names),
            "duplicated": len(records) - len(names),
        }

    measures = per_peer(args.peer, measure)
    measures[FLOOR] = partial(spawn_floor, stamp, args.tasks)
    results = in_rounds(measures, args.repeats)
    keys = ["peer", "tasks", "first_ms", "last_ms", "started", "missed", "duplicated"]
    emit_table(["peer", "tasks", "first ms", "last ms", "started", "missed", "dup"],
               [cells(r, keys) for r in results])
    emit_ratios(results, ["last_ms"])
    return results


def spawn_floor(stamp: Path, count: int) -> Result:
    """No scheduler: this process starts `count` stamps in a tight posix_spawn loop, from
    the same instant on. The time to the last stamp is what process creation alone costs
    on this machine, the floor under every peer's burst."""
    with workdir() as tmp_name:
        out = Path(tmp_name) / "stamps"
        names = [f"f{i}" for i in range(count)]
        target = math.ceil(time.time()) + 1
        time.sleep(max(0.0, target - time.time()))
        start_stamps(stamp, out, names)
        records = read_stamps(out)
    starts = [ns for _, ns in records]
    return {"measure": "burst", "peer": FLOOR, "tasks": count,
            "first_ms": round((min(starts) - target * 1e9) / 1e6, 2),
            "last_ms": round((max(starts) - target * 1e9) / 1e6, 2),
            "started": len({t for t, _ in records}), "missed": count - len(records),
            "duplicated": 0}


# ----- 3. idle cost at scale -----------------------------------------------------------------
def rare_schedule(i: int) -> str:
    """Distinct expressions that each fire once a year, spread over the calendar."""
    return f"{i % 60} {(i // 60) % 60} {(i // 3600) % 24} {1 + i % 28} {1 + i % 12} *"


@contextmanager
def idle_peer(peer_name: str, stamp: Path, count: int,
              ticks: int = 1) -> Iterator[tuple[psutil.Process, Result]]:
    """Start one peer on `count` rare tasks plus `ticks` tasks every second and wait for
    the first stamp; yields the process and its start-up figures (ready, first fire)."""
    with workdir() as tmp_name:
        out = Path(tmp_name) / "stamps"
        tasks = [Task(f"rare{i}", rare_schedule(i), (str(stamp), str(out), f"r{i}"))
                 for i in range(count)]
        tick = "* * * * * *" if PEERS[peer_name].seconds else "0 * * * * *"
        tasks += [Task(f"tick{i}", tick, (str(stamp), str(out), f"tick{i}"))
                  for i in range(ticks)]
        with running(peer_name, tasks, Path(tmp_name) / "peer") as (peer, proc, started):
            while not (stamps := read_stamps(out)):
                time.sleep(0.005)
            first_fire = stamps[0][1] / 1e9 - started
            ready = None if peer.ready_at is None else peer.ready_at - started
            yield proc, {"measure": "idle", "peer": peer_name, "tasks": count,
                         "start_to_ready_s": None if ready is None else round(ready, 3),
                         "start_to_first_fire_s": round(first_fire, 3)}


def idle_round(stamp: Path, count: int, peers: list[str], seconds: int,
               ticks: int = 1) -> list[Result]:
    """Start the peers one after another, then take every one's CPU over the same window:
    a noisy minute on a shared machine costs them all alike."""
    results: dict[str, Result] = {}
    procs: dict[str, psutil.Process] = {}
    with ExitStack() as stack:
        for name in peers:
            try:
                procs[name], results[name] = stack.enter_context(
                    idle_peer(name, stamp, count, ticks))
            except Exception as exc:  # noqa: BLE001 - a broken peer must not hide the others
                results[name] = failure(name, exc)
        time.sleep(2)  # let start-up work settle
        before = {name: cpu_seconds(proc) for name, proc in procs.items()}
        began = time.monotonic()
        time.sleep(seconds)
        spent = {name: cpu_seconds(proc) - before[name] for name, proc in procs.items()}
        elapsed = time.monotonic() - began
        for name, proc in procs.items():
            results[name]["cpu_s_per_min"] = round(spent[name] * 60 / elapsed, 4)
            results[name]["cpu_ms_per_fire"] = round(spent[name] * 1e3 / (elapsed * ticks), 3)
            results[name]["rss_mb"] = round(proc.memory_info().rss / 2**20, 1)
    return [results[name] for name in peers]


def mode_idle(args: argparse.Namespace) -> list[Result]:
    stamp = build_stamp()
    keys = ["peer", "tasks", "cpu_s_per_min", "cpu_ms_per_fire", "rss_mb", "start_to_ready_s",
            "start_to_first_fire_s"]
    results = []
    for count in args.tasks:
        rounds: dict[str, list[Result]] = {name: [] for name in args.peer}
        for index in range(args.repeats):
            # Who starts first alternates: a peer's start-up runs beside the others' idling.
            order = args.peer if index % 2 == 0 else args.peer[::-1]
            for result in idle_round(stamp, count, order, args.seconds, args.ticks):
                rounds[str(result["peer"])].append(result)
        at_count = [combine(runs, keep_rounds=args.repeats > 1) for runs in rounds.values()]
        emit_ratios(at_count, keys[2:], prefix=f"{count} tasks: ")
        results.extend(at_count)
    emit_table(["peer", "tasks", "CPU s/min", "CPU ms/fire", "RSS MB", "start->ready s",
                "start->first fire s"],
               [cells(r, keys) for r in results])
    return results


# ----- 4. reload -----------------------------------------------------------------------------
def _generation(state: Path) -> int:
    from torchd.control.client import call  # noqa: PLC0415 - bench runs beside torchd

    return int(call(state / "torchd.sock", "ping", timeout=30)["generation"])


def _tick_fires(log: Path, window: tuple[int, int]) -> list[int]:
    """Scheduled seconds of the tick task's runs, from torchd's own log headers (exact,
    unlike a stamp, which a late start would put in the next second)."""
    seconds = []
    for line in log.read_text().splitlines():
        if " start run=" in line:
            stamp = line.split(" fire=tick@", 1)[1].split()[0]
            second = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
            if window[0] <= second <= window[1]:
                seconds.append(second)
    return seconds


def mode_reload(args: argparse.Namespace) -> list[Result]:
    """torchd only: no peer here reloads a changed file in place. Each round makes the
    four changes once, on the same daemon (the last change brings the file back)."""
    stamp = build_stamp()
    steps: dict[tuple[str, str], list[Result]] = {}
    with workdir() as tmp_name:
        out = Path(tmp_name) / "stamps"

        def tasks(edit: str) -> list[Task]:
            """'none': the original file; 'one': one task edited and one added;
            'all': every task's schedule changed."""
            shift = 7 if edit == "all" else 0
            rare = [Task(f"rare{i}", rare_schedule(i * 13 + shift),
                         (str(stamp), "/dev/null", "r")) for i in range(args.tasks)]
            if edit == "one":
                rare[0] = Task("rare0", "30 30 0 1 1 *", rare[0].argv)
                rare.append(Task("added", "0 0 0 2 1 *", rare[0].argv))
            return [*rare, Task("tick", "* * * * * *", (str(stamp), str(out), "tick"))]

        peer = TorchdPeer(Path(tmp_name) / "peer")
        proc = peer.start(tasks("none"))

        def wait_applied(generation: int) -> None:
            deadline = time.monotonic() + 120
            while _generation(peer.state) == generation:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"reload not applied in 120 s: {peer.log}")
                time.sleep(0.005)

        def by_signal(edit: str, *, watch: bool) -> float:
            generation = _generation(peer.state)
            peer.write(tasks(edit), watch=watch)
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGUSR2)
            wait_applied(generation)
            return time.monotonic() - t0

        try:
            time.sleep(2)
            current = "none"
            for how, edit in (("SIGUSR2", "one"), ("file change", "none"),
                              ("SIGUSR2", "all"), ("file change", "none")) * args.repeats:
                changed = {("none", "one"): "1 edited + 1 added",
                           ("one", "none"): "1 edited + 1 removed",
                           ("none", "all"): f"all {args.tasks} edited",
                           ("all", "none"): f"all {args.tasks} edited"}[(current, edit)]
                if how == "SIGUSR2":
                    took = by_signal(edit, watch=False)
                else:
                    by_signal(current, watch=True)  # same tasks, watcher on
                    generation = _generation(peer.state)
                    t0 = peer.write(tasks(edit), watch=True)
                    wait_applied(generation)
                    took = time.monotonic() - t0
                began = time.time() - took
                time.sleep(3)
                if how == "file change":
                    by_signal(edit, watch=False)  # watch off again for the next signal
                    time.sleep(2)  # the fires that reload delayed are in the window below
                current = edit
                first_tick = min(_tick_fires(peer.state / "logs" / "tick.log", (0, 2**40)))
                # Not a tick that fell due while the daemon loaded: it runs late by the load,
                # which is no reload's doing (round 1 began 2 s after the start).
                after_start = math.floor(peer.ready_at or 0.0) + 1
                window = (max(first_tick, after_start, math.floor(began) - 2),
                          math.floor(time.time()) - 1)
                fires = _tick_fires(peer.state / "logs" / "tick.log", window)
                late = [(ns / 1e9 - math.floor(ns / 1e9)) * 1000 for _, ns in read_stamps(out)
                        if window[0] <= ns // 1_000_000_000 <= window[1]]
                steps.setdefault((how, changed), []).append({
                    "measure": "reload", "peer": "torchd", "tasks": args.tasks,
                    "trigger": how, "change": changed, "applied_s": round(took, 3),
                    "tick_max_late_ms": round(max(late), 1) if late else None,
                    "missed": (window[1] - window[0] + 1) - len(set(fires)),
                    "duplicated": len(fires) - len(set(fires))})
        finally:
            peer.stop()
    results = [combine(rounds, keep_rounds=args.repeats > 1) for rounds in steps.values()]
    emit_table(["peer", "tasks", "trigger", "change", "applied s", "tick late max ms",
                "missed", "dup", "applied s by round"],
               [[r["peer"], r["tasks"], r["trigger"], r["change"], r["applied_s"],
                 r["tick_max_late_ms"], r["missed"], r["duplicated"],
                 " ".join(str(x["applied_s"]) for x in _rounds_of(r))] for r in results])
    return results


# ----- 5. soak -------------------------------------------------------------------------------
def mode_soak(args: argparse.Namespace) -> list[Result]:
    stamp = build_stamp()

    def measure(peer_name: str) -> Result:
        with workdir() as tmp_name:
            out = Path(tmp_name) / "stamps"
            tasks = [Task(f"s{i}", "* * * * * *", (str(stamp), str(out), f"s{i}"))
                     for i in range(args.tasks)]
            with running(peer_name, tasks, Path(tmp_name) / "peer") as (_p, proc, _s):
                time.sleep(10)  # warm-up: first fires, lazily created structures
                rss0, fds0 = proc.memory_info().rss / 2**20, proc.num_fds()
                begin = time.time()
                time.sleep(args.seconds)
                end = time.time()
                rss1, fds1 = proc.memory_info().rss / 2**20, proc.num_fds()
            first, last = math.ceil(begin), math.floor(end) - 1
            stats = fire_stats(read_stamps(out), 1, first, last, [t.name for t in tasks])
        fires = stats["fires"]
        assert isinstance(fires, int)
        return {"measure": "soak", "peer": peer_name, "tasks": args.tasks,
                "fires_per_s": round(fires / (last - first + 1), 1),
                "p99_ms": stats["p99_ms"], "missed": stats["missed"],
                "duplicated": stats["duplicated"], "rss_mb_start": round(rss0, 1),
                "rss_mb_end": round(rss1, 1), "fds_start": fds0, "fds_end": fds1}

    results = each_peer(args.peer, measure)
    keys = ["peer", "tasks", "fires_per_s", "p99_ms", "missed", "duplicated", "rss_mb_start",
            "rss_mb_end", "fds_start", "fds_end"]
    emit_table(["peer", "tasks", "fires/s", "p99 ms", "missed", "dup", "RSS MB start",
                "RSS MB end", "fds start", "fds end"], [cells(r, keys) for r in results])
    return results


# ----- 6. history ----------------------------------------------------------------------------
def _fake_run(i: int, now: float) -> tuple[RunStarted, RunEnded]:
    run_id = f"{i:012x}"
    common = {"task": f"t{i % 20}", "run_id": run_id, "pid": 1000 + i, "started": now,
              "scheduled": float(int(now)), "fire_id": f"t{i % 20}@x", "attempt": 1,
              "log_file": f"t{i % 20}.log"}
    started = RunStarted(**common, trigger="schedule", log_start=i * 100)  # type: ignore[arg-type]
    ended = RunEnded(**common, outcome="ok", exit_code=0, signal=None,  # type: ignore[arg-type]
                     trigger="schedule", ended=now + 0.01, duration=0.01, log_end=i * 100 + 90,
                     err_start=None, err_end=None)
    return started, ended


def _thread_cpu(thread_id: int | None) -> float:
    assert thread_id is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread_id))


def mode_history(args: argparse.Namespace) -> list[Result]:
    """The cost of recording a run (a row at start, completed at the end): on the event
    loop's side (holding the start, a queue put) and in the writer thread (SQLite, WAL, one
    commit per batch), in bulk and paced like a busy daemon (runs per second, one commit
    per pass). The writer is made as the daemon makes it, on an asyncio loop."""
    return asyncio.run(_history_on_loop(args))


async def _history_on_loop(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    loop = asyncio.get_running_loop()
    with workdir() as tmp_name:
        for label, pace in (("bulk", None), (f"{args.rate}/s", args.rate)):
            db = Path(tmp_name) / f"{label.replace('/', '_')}.db"
            writer = HistoryWriter(db, HistoryPolicy(), host="bench", call_later=loop.call_later)
            writer.start(lambda _pid, _started: False)
            thread = writer._thread  # the bench reads the writer thread's CPU clock
            assert thread is not None
            count = args.runs if pace is None else args.rate * args.seconds
            events = [_fake_run(i, time.time()) for i in range(count)]
            cpu_before = _thread_cpu(thread.ident)
            loop_side = 0.0
            begin = time.perf_counter()
            for i, (started, ended) in enumerate(events):
                if pace is not None:
                    due = begin + i / pace
                    if (wait := due - time.perf_counter()) > 0:
                        time.sleep(wait)  # noqa: ASYNC251 - the loop has nothing else to do
                t0 = time.perf_counter()
                writer.run_started(started)
                writer.run_ended(ended)
                loop_side += time.perf_counter() - t0
            writer.release()
            writer.flush(timeout=600)
            elapsed = time.perf_counter() - begin
            cpu = _thread_cpu(thread.ident) - cpu_before
            writer.stop()
            results.append({"measure": "history", "peer": "torchd", "pace": label,
                            "runs": count, "loop_us_per_run": round(loop_side / count * 1e6, 2),
                            "writer_cpu_us_per_run": round(cpu / count * 1e6, 1),
                            "runs_per_s_written": round(count / elapsed),
                            "db_kb": db.stat().st_size // 1024})
    keys = ["pace", "runs", "loop_us_per_run", "writer_cpu_us_per_run", "runs_per_s_written",
            "db_kb"]
    emit_table(["pace", "runs", "loop us/run", "writer CPU us/run", "runs/s written", "db KB"],
               [cells(r, keys) for r in results])
    return results


# ----- wakeup ------------------------------------------------------------------------------
async def _event_wakeups(gap: float, count: int) -> float:
    """CPU seconds of this thread for `count` waits on an asyncio.Event set by a timer
    `gap` seconds later: the path a daemon's loop takes to wake for a due fire."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    before = time.thread_time()
    for _ in range(count):
        event.clear()
        loop.call_later(gap, event.set)
        await event.wait()
    return time.thread_time() - before


def _sleep_wakeups(gap: float, count: int) -> float:
    before = time.thread_time()
    for _ in range(count):
        time.sleep(gap)
    return time.thread_time() - before


def mode_wakeup(args: argparse.Namespace) -> list[Result]:
    """What one wake-up costs this machine in CPU, by how long the thread slept: a bare
    time.sleep loop and an asyncio loop waiting on an event set by a timer. A thread that
    slept long resumes with cold caches; on a shared VM that, more than the work done,
    is what a once-a-second fire costs a Python daemon."""
    results: list[Result] = []
    for gap in args.gaps:
        count = max(5, min(2000, int(args.seconds / gap))) if gap > 0 else 2000
        for way, spent in (("time.sleep", _sleep_wakeups(gap, count)),
                           ("asyncio event", asyncio.run(_event_wakeups(gap, count)))):
            results.append({"measure": "wakeup", "peer": way, "asleep_s": gap,
                            "wakeups": count, "cpu_us_per_wakeup": round(spent / count * 1e6, 1)})
    keys = ["peer", "asleep_s", "wakeups", "cpu_us_per_wakeup"]
    emit_table(["way", "asleep s", "wake-ups", "CPU us per wake-up"],
               [cells(r, keys) for r in results])
    return results


# ----- 8. handoff ---------------------------------------------------------------------------
def mode_handoff(args: argparse.Namespace) -> list[Result]:
    """Why the scheduler pauses (torchd.engine.scheduler.HANDOFF) after starting several processes:
    at each whole second this process starts `--tasks` stamps in a tight posix_spawn loop,
    then stands in for a daemon's bookkeeping with `--busy-ms` of CPU work, either at once or
    after sleeping HANDOFF. Variants alternate within each round."""
    stamp = build_stamp()
    names = [f"t{i}" for i in range(args.tasks)]
    variants = {"busy at once": 0.0, f"sleep {HANDOFF * 1000:g} ms, then busy": HANDOFF}
    last: dict[str, list[float]] = {name: [] for name in variants}
    middle: dict[str, list[float]] = {name: [] for name in variants}
    with workdir() as tmp_name:
        out = Path(tmp_name) / "stamps"
        for _ in range(args.repeats):
            for name, pause in variants.items():
                out.unlink(missing_ok=True)
                target = math.ceil(time.time()) + 1
                time.sleep(max(0.0, target - time.time()))
                pids = spawn_stamps(stamp, out, names)
                if pause:
                    time.sleep(pause)
                busy_until = time.perf_counter() + args.busy_ms / 1000
                while time.perf_counter() < busy_until:
                    pass
                for pid in pids:
                    os.waitpid(pid, 0)
                starts = sorted((ns - target * 10**9) / 1e6 for _, ns in read_stamps(out))
                last[name].append(starts[-1])
                middle[name].append(starts[len(starts) // 2])
    results: list[Result] = [
        {"measure": "handoff", "peer": name, "tasks": args.tasks, "busy_ms": args.busy_ms,
         "rounds": args.repeats, "last_ms_p50": round(statistics.median(last[name]), 2),
         "last_ms_p90": round(percentile(last[name], 90), 2),
         "middle_ms_p50": round(statistics.median(middle[name]), 2)} for name in variants]
    keys = ["peer", "tasks", "last_ms_p50", "last_ms_p90", "middle_ms_p50"]
    emit_table(["after the starts", "tasks", "last ms p50", "last ms p90", "middle ms p50"],
               [cells(r, keys) for r in results])
    return results


# ----- 7. cluster claims ----------------------------------------------------------------------
def mode_claims(args: argparse.Namespace) -> list[Result]:
    """What a `run_on: one` fire costs in claims against a private redis-server on
    loopback: one host claiming alone (the round trip and Lua script), and N hosts
    claiming every fire at once (the winner's and the losers' wait). The load-based
    claim delay (load x 20 ms) comes on top and is reported apart."""
    results: list[Result] = []
    with workdir() as tmp_name:
        redis_proc, url = start_redis(Path(tmp_name))
        try:
            results = asyncio.run(_claims(url, args.fires, args.hosts))
        finally:
            redis_proc.kill()
            redis_proc.wait()
    keys = ["hosts", "fires", "p50_us", "p99_us", "won", "duplicates", "load_delay_ms"]
    emit_table(["hosts", "fires", "p50 us", "p99 us", "won", "duplicates", "load delay ms"],
               [cells(r, keys) for r in results])
    return results


async def _timed_claim(cluster: Cluster, instant: float, took: list[float]) -> bool:
    t0 = time.perf_counter()
    claim = await cluster.claim("job", instant)
    took.append((time.perf_counter() - t0) * 1e6)
    return claim.won


async def _claims(url: str, fires: int, host_count: int) -> list[Result]:
    results: list[Result] = []
    for count in (1, host_count):
        hosts = [Cluster(ClusterSettings(redis=url, name="bench"), host_id=f"h{i}",
                         describe=dict) for i in range(count)]
        hosts[0].load = float(host_figures()["load"])
        load_delay = hosts[0].claim_delay() * 1000
        for cluster in hosts:
            cluster.load = 0.0  # the delay is reported apart
        took: list[float] = []
        won = 0
        base = time.time() + count * 1e6  # fresh fire instants for each round
        for i in range(fires):
            outcomes = await asyncio.gather(*(_timed_claim(c, base + i, took) for c in hosts))
            won += sum(outcomes)
        for cluster in hosts:
            await cluster.close()
        results.append({"measure": "claims", "peer": "torchd", "hosts": count, "fires": fires,
                        "p50_us": round(statistics.median(took), 1),
                        "p99_us": round(percentile(took, 99), 1), "won": won,
                        "duplicates": won - fires, "load_delay_ms": round(load_delay, 2)})
    return results


def mode_web(args: argparse.Namespace) -> list[Result]:
    from bench.web import mode_web as measure  # noqa: PLC0415 - it builds on this module

    return measure(args)


def mode_plan(args: argparse.Namespace) -> list[Result]:
    from bench.web import mode_plan as measure  # noqa: PLC0415 - it builds on this module

    return measure(args)


def mode_dashboard(args: argparse.Namespace) -> list[Result]:
    from bench.web import mode_dashboard as measure  # noqa: PLC0415 - it builds on this module

    return measure(args)


# ----- metrics -------------------------------------------------------------------------------
def _metrics_history(tasks: int, runs: int) -> list[tuple[RunStarted, RunEnded]]:
    """`runs` runs per task: mostly ok, some failed, a few by hand, durations 10 ms-20 min."""
    rng = random.Random(24)  # noqa: S311 - made-up durations
    events = []
    now = time.time()
    for i in range(runs * tasks):
        task = f"t{i % tasks:05d}"
        trigger = Trigger.MANUAL if i % 50 == 0 else Trigger.SCHEDULE
        duration = rng.choice((0.01, 0.2, 3.0, 45.0, 1200.0))
        common = {"task": task, "run_id": f"{i:012x}", "pid": 1000, "scheduled": now,
                  "fire_id": f"{task}@x", "attempt": 1, "trigger": trigger, "log_file": ""}
        started = RunStarted(**common, started=now + 0.002, log_start=None)  # type: ignore[arg-type]
        outcome = RunOutcome.FAILED if i % 7 == 0 else RunOutcome.OK
        ended = RunEnded(**common, outcome=outcome, exit_code=0, signal=None,  # type: ignore[arg-type]
                         started=now, ended=now + duration, duration=duration, log_end=None,
                         err_start=None, err_end=None)
        events.append((started, ended))
    return events


def _library_collector(metrics: Metrics, scrape: ScrapeData) -> Collector:
    """Every family of /metrics, per-task ones too, built with prometheus-client the
    cheapest way it offers: metric families made at scrape time, add_metric in bulk."""

    class Everything(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from SmallFamilies(scrape).collect()
            info = GaugeMetricFamily("torchd_task_info", "x", labels=["task", "schedule",
                                                                       "type"])
            gauges = [GaugeMetricFamily(name, "x", labels=["task"]) for name in (
                "torchd_task_paused", "torchd_task_running",
                "torchd_task_next_fire_timestamp_seconds")]
            for t in scrape.tasks:
                info.add_metric([t.name, t.schedule, t.kind], 1)
                gauges[0].add_metric([t.name], int(t.paused))
                gauges[1].add_metric([t.name], t.running)
                if t.next_fire is not None:
                    gauges[2].add_metric([t.name], t.next_fire)
            last = GaugeMetricFamily("torchd_task_last_success_timestamp_seconds", "x",
                                     labels=["task"])
            for task, at in scrape.last_success.items():
                last.add_metric([task], at)
            runs = CounterMetricFamily("torchd_runs", "x", labels=["task", "trigger",
                                                                   "outcome"])
            for key, count in scrape.runs.items():
                runs.add_metric(list(key), count)
            durations = HistogramMetricFamily("torchd_run_duration_seconds", "x",
                                              labels=["task"])
            for task, counts, total in scrape.durations:
                durations.add_metric([task], cumulative_buckets(DURATION_BUCKETS, counts), total)
            yield from (info, *gauges, last, runs, durations)

    return Everything()


def _import_seconds(module: str, after: str) -> float:
    """What importing `module` adds once `after` is imported, in a fresh interpreter."""
    script = (f"import time, {after}; t = time.perf_counter(); import {module}; "
              "print(time.perf_counter() - t)")
    times = [float(subprocess.run([sys.executable, "-c", script], capture_output=True,
                                  text=True, check=True).stdout) for _ in range(5)]
    return statistics.median(times)


def mode_metrics(args: argparse.Namespace) -> list[Result]:
    """/metrics in the bench process: a real Scheduler with N tasks, a Metrics object fed
    `--runs` runs per task through the event bus; the cost per event, a scrape's time
    (all of it: the reading on the loop, then the text in a thread) p50/p99 with
    `--between` tasks run between two scrapes, the part that holds the loop, and the same
    exposition by prometheus-client alone."""
    return asyncio.run(_metrics_on_loop(args))


async def _metrics_on_loop(args: argparse.Namespace) -> list[Result]:
    lines = ['tasks:'] + [f'  - {{name: t{i:05d}, schedule: "{i % 60} {i % 60} * * * *", '
                          f'command: "true"}}' for i in range(args.tasks)]
    config = parse_config("\n".join(lines).encode(), "bench.yaml", identity=None)
    with workdir() as tmp_name:
        scheduler = Scheduler(clock=SystemClock(), log_dir=Path(tmp_name), base_env={})
        scheduler.apply(config, plan(None, config))
        metrics = Metrics(scheduler.gauges)
        bus = EventBus()
        metrics.subscribe(bus)
        events = _metrics_history(args.tasks, args.runs)
        t0 = time.perf_counter()
        for started, _ in events:
            bus.publish(started)
        t1 = time.perf_counter()
        for _, ended in events:
            bus.publish(ended)
        t2 = time.perf_counter()
        empty = EventBus()  # the bus's own cost, to subtract
        for started, ended in events:
            empty.publish(started)
            empty.publish(ended)
        t3 = time.perf_counter()
        bus_us = (t3 - t2) / (2 * len(events)) * 1e6
        count = len(events)
        del events, started, ended  # a daemon keeps no events; it froze its task table
        gc.collect()
        gc.freeze()
        scrapes, on_loop = [], []
        body = b""
        rng = random.Random(25)  # noqa: S311 - which tasks run between two scrapes
        one_each = [end for _, end in _metrics_history(args.tasks, 1)]
        for _ in range(args.scrapes):
            for end in rng.sample(one_each, args.between):
                bus.publish(end)
            begin = time.perf_counter()
            body, _ = await metrics.render()
            scrapes.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            data = metrics.read()
            on_loop.append(time.perf_counter() - begin)
        library = []
        for _ in range(args.library_scrapes):
            begin = time.perf_counter()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_library_collector(metrics, metrics.read()))
            library_body = generate_latest(registry)
            library.append(time.perf_counter() - begin)
        scheduler.request_stop()
    samples = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    results: list[Result] = [
        {"measure": "metrics", "peer": "torchd", "what": "scrape (bulktext)",
         "tasks": args.tasks, "samples": samples, "p50_ms": round(percentile(scrapes, 50) * 1e3, 1),
         "p99_ms": round(percentile(scrapes, 99) * 1e3, 1)},
        {"measure": "metrics", "peer": "torchd", "what": "of which on the loop",
         "tasks": args.tasks, "samples": samples,
         "p50_ms": round(percentile(on_loop, 50) * 1e3, 1),
         "p99_ms": round(percentile(on_loop, 99) * 1e3, 1)},
        {"measure": "metrics", "peer": "prometheus-client", "what": "scrape (generate_latest)",
         "tasks": args.tasks, "samples": sum(1 for line in library_body.splitlines()
                                             if not line.startswith(b"#")),
         "p50_ms": round(percentile(library, 50) * 1e3, 1),
         "p99_ms": round(percentile(library, 99) * 1e3, 1)},
        {"measure": "metrics", "peer": "torchd", "what": "per event",
         "run_started_us": round((t1 - t0) / count * 1e6 - bus_us, 2),
         "run_ended_us": round((t2 - t1) / count * 1e6 - bus_us, 2),
         "import_web_metrics_ms": round(_import_seconds(
             "torchd.web.metrics", "torchd.engine.scheduler") * 1e3, 1),
         "import_at_first_scrape_ms": round(_import_seconds(
             "torchd.web.promfamilies", "torchd.web.metrics") * 1e3, 1)},
    ]
    del data
    keys = ["what", "tasks", "samples", "p50_ms", "p99_ms"]
    emit_table(["scrape", "tasks", "samples", "p50 ms", "p99 ms"],
               [cells(r, keys) for r in results[:3]])
    keys = ["run_started_us", "run_ended_us", "import_web_metrics_ms",
            "import_at_first_scrape_ms"]
    emit_table(["RunStarted us", "RunEnded us", "import web.metrics ms",
                "import at first scrape ms"], [cells(results[3], keys)])
    return results


def mode_chains(args: argparse.Namespace) -> list[Result]:
    from bench.chains import mode_chains as measure  # noqa: PLC0415 - it builds on this module

    return measure(args)


def mode_httptasks(args: argparse.Namespace) -> list[Result]:
    from bench.httptasks import mode_httptasks as measure  # noqa: PLC0415 - builds on this

    return measure(args)


MODES: dict[str, tuple[Callable[[argparse.Namespace], list[Result]], list[str]]] = {
    "web": (mode_web, ["torchd-http"]),
    "chains": (mode_chains, ["torchd"]),
    "httptasks": (mode_httptasks, ["torchd"]),
    "lateness": (mode_lateness, ["torchd", "apscheduler"]),
    "burst": (mode_burst, ["torchd", "apscheduler"]),
    "idle": (mode_idle, ["torchd", "apscheduler", "asyncio-floor"]),
    "reload": (mode_reload, ["torchd"]),
    "soak": (mode_soak, ["torchd"]),
    "history": (mode_history, ["torchd"]),
    "claims": (mode_claims, ["torchd"]),
    "handoff": (mode_handoff, []),
    "wakeup": (mode_wakeup, []),
    "plan": (mode_plan, ["torchd"]),
    "dashboard": (mode_dashboard, ["torchd"]),


    "metrics": (mode_metrics, ["torchd"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="mode", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--peer", nargs="+", choices=sorted(PEERS),
                             default=MODES[name][1])
        return command

    def repeatable(command: argparse.ArgumentParser, default: int) -> None:
        command.add_argument("--repeats", type=int, default=default,
                             help="rounds of every peer, one after another; medians shown")

    late = add("lateness", "start time minus scheduled instant, tasks firing every second")
    repeatable(late, 3)
    late.add_argument("--tasks", type=int, default=20)
    late.add_argument("--seconds", type=int, default=60)
    late.add_argument("--together", action="store_true",
                      help="run the peers and the floor at once, each on its own share "
                           "of the seconds")
    burst = add("burst", "many tasks due on the same second")
    burst.add_argument("--tasks", type=int, default=1000)
    burst.add_argument("--lead", type=int, default=20, help="seconds from start to the burst")
    repeatable(burst, 3)
    idle = add("idle", "CPU and RSS with many rarely-firing tasks, plus one every second")
    idle.add_argument("--tasks", type=int, nargs="+", default=[1000, 10_000, 100_000])
    idle.add_argument("--seconds", type=int, default=60)
    idle.add_argument("--ticks", type=int, default=1,
                      help="tasks every second (CPU per fire falls as fires share wake-ups)")
    repeatable(idle, 1)
    reload = add("reload", "time for a changed file to take effect, fires lost or doubled")
    reload.add_argument("--tasks", type=int, default=10_000)
    repeatable(reload, 3)
    soak = add("soak", "many short tasks every second for minutes: throughput and leaks")
    soak.add_argument("--tasks", type=int, default=200)
    soak.add_argument("--seconds", type=int, default=300)
    history = add("history", "the cost of recording runs in the history database")
    history.add_argument("--runs", type=int, default=50_000, help="runs written in bulk")
    history.add_argument("--rate", type=int, default=200, help="runs per second, paced")
    history.add_argument("--seconds", type=int, default=10, help="how long, paced")
    claims = add("claims", "the cost of claiming run_on: one fires in Redis")
    claims.add_argument("--fires", type=int, default=5000)
    claims.add_argument("--hosts", type=int, default=3)
    handoff = add("handoff", "how much a parent's work right after starting processes "
                  "delays them")
    handoff.add_argument("--tasks", type=int, default=20)
    handoff.add_argument("--busy-ms", type=float, default=15.0)
    repeatable(handoff, 12)
    wakeup = add("wakeup", "the CPU one wake-up costs, by how long the thread slept")
    wakeup.add_argument("--gaps", type=float, nargs="+", default=[1.0, 0.1, 0.01, 0.0],
                        help="seconds asleep before each wake-up")
    wakeup.add_argument("--seconds", type=float, default=10.0, help="per gap and way")
    from bench.web import add_arguments as web_arguments  # noqa: PLC0415

    web_arguments(add("web", "the HTTP listener at 10,000 tasks: request times, idle CPU "
                      "with a dashboard open, 50 live-log followers of a 1 MB/s task"))
    plan = add("plan", "the daily plan page's time with many tasks")
    plan.add_argument("--tasks", type=int, default=10_000)
    plan.add_argument("--requests", type=int, default=20, help="per page")
    plan.add_argument("--settle", type=float, default=10.0,
                      help="seconds of runs before the requests")
    dashboard = add("dashboard", "the dashboard's pages with many tasks: time per request")
    dashboard.add_argument("--tasks", type=int, default=10_000)
    dashboard.add_argument("--runs-per-task", type=int, default=20,
                           help="runs of each task written to the history first")
    dashboard.add_argument("--requests", type=int, default=200, help="per page")


    metrics = add("metrics", "a /metrics scrape at many tasks, and the cost per run event")
    metrics.add_argument("--tasks", type=int, default=10_000)
    metrics.add_argument("--runs", type=int, default=20, help="runs per task before scraping")
    metrics.add_argument("--scrapes", type=int, default=50)
    metrics.add_argument("--between", type=int, default=2500,
                         help="tasks that run between two scrapes (default: a quarter)")
    metrics.add_argument("--library-scrapes", type=int, default=5)
    from bench.chains import add_arguments as chains_arguments  # noqa: PLC0415

    chains_arguments(add("chains", "workflow chain latency: a downstream's start after its "
                         "upstream's end, beside a plain fire's lateness"))
    from bench.httptasks import add_arguments as httptasks_arguments  # noqa: PLC0415

    httptasks_arguments(add("httptasks", "1,000 HTTP tasks due on one second against a local "
                            "server, beside a command every second, and a bare aiohttp loop"))
    args = parser.parse_args(argv)
    func = MODES[args.mode][0]
    print(f"# {args.mode} on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{datetime.now(UTC).isoformat(timespec='seconds')}, task program {build_stamp().name}")
    emit_json(func(args))
    return 0
