"""Commands on the task file alone, with no daemon: `check`, `next` and `graph`."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from torchd.cli.common import (
    EXIT_CONFIG,
    EXIT_FAIL,
    EXIT_OK,
    call,
    load_or_report,
    resolve_state_dir,
    text_zone,
)
from torchd.config.lint import lint
from torchd.core.errors import TorchdError
from torchd.core.hostmatch import HostIdentity
from torchd.core.model import Config, TaskKind
from torchd.core.nofire import NoFire, inactive, unscheduled
from torchd.core.schedule.bounded import WindowedSchedule
from torchd.core.schedule.cronexpr import (
    CronSchedule,
    EverySchedule,
    RebootSchedule,
    Schedule,
    upcoming,
)
from torchd.core.schedule.zones import parse_instant
from torchd.core.timefmt import iso_utc, local_iso, relative
from torchd.core.workflow import graph_dot, graph_text


def cmd_check(args: argparse.Namespace) -> int:
    from torchd.process.cgroups import describe_cgroup_mode  # noqa: PLC0415

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    here = sum(1 for t in config.tasks if t.active)
    print(f"{args.config}: OK, {len(config.tasks)} task(s), {here} active on this host, "
          f"hash {config.digest}")
    print("process containment for a daemon started from this shell: "
          f"{describe_cgroup_mode(enabled=config.daemon.cgroups)}; child subreaper (as a "
          "systemd service its cgroup is the unit's: `torchd status` tells)")
    warnings = lint(config, now=time.time(), durations=_usual_durations(args, config),
                    known_hosts=_known_hosts(args, config))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if warnings:
        print(f"{len(warnings)} warning(s)" + (" (--strict: exit 2)" if args.strict else ""),
              file=sys.stderr)
    return EXIT_CONFIG if warnings and args.strict else EXIT_OK


USUAL_OF = 20  # a task's usual run time: the median of its last this many successful runs


def _usual_durations(args: argparse.Namespace, config: Config) -> dict[str, float] | None:
    """Each task's usual run time from the history of --state-dir (only when given)."""
    if not args.state_dir:
        return None
    from torchd.store.history import recent_runs  # noqa: PLC0415
    from torchd.store.statedir import StatePaths  # noqa: PLC0415

    database = StatePaths(Path(args.state_dir)).history
    names = [t.name for t in config.tasks if isinstance(t.schedule, EverySchedule)]
    usual = {}
    for name, runs in recent_runs(database, names, USUAL_OF).items():
        times = [r["duration"] for r in runs if r["outcome"] == "ok" and r["duration"]]
        if times:
            usual[name] = statistics.median(times)
    return usual


def _known_hosts(args: argparse.Namespace, config: Config) -> list[HostIdentity] | None:
    """The hosts of the cluster registry, as the daemon of this state dir sees them (cluster
    mode only; None, with a note, when no daemon answers within CLUSTER_WAIT)."""
    if config.daemon.cluster is None or not any(t.hosts for t in config.tasks):
        return None
    state_dir = resolve_state_dir(args, config)
    try:
        view = call(state_dir, "cluster", timeout=CLUSTER_WAIT)
    except TorchdError:
        view = None
    if view is None or "hosts" not in view:
        print(f"note: hosts entries not checked against the cluster: no daemon answered in "
              f"{state_dir} (start one, or give --state-dir)", file=sys.stderr)
        return None
    known = []
    for beat in view["hosts"]:
        addresses = set()
        for text in beat.get("addresses") or []:
            with contextlib.suppress(ValueError):
                addresses.add(ipaddress.ip_address(text))
        known.append(HostIdentity(hostnames=frozenset({str(beat["host_id"]).lower()}),
                                  addresses=frozenset(addresses)))
    return known


CLUSTER_WAIT = 2.0


def cmd_graph(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.dot:
        print(graph_dot(config.tasks))
        return EXIT_OK
    lines = graph_text(config.tasks)
    print("\n".join(lines) if lines else "no task has 'after' (no workflow)")
    return EXIT_OK


def _instant(text: str, zone: str) -> float | None:
    try:
        return parse_instant(text, zone)
    except ValueError:
        return None


def _cron_of(schedule: Schedule | None) -> CronSchedule | None:
    inner = schedule.inner if isinstance(schedule, WindowedSchedule) else schedule
    return inner if isinstance(inner, CronSchedule) else None


def _dst_mark(fire: float, schedule: Schedule | None) -> str:
    """Marks a fire in the second showing of its zone's repeated hour (`repeated: both`,
    or an every-hour schedule without a policy)."""
    cron = _cron_of(schedule)
    if cron is None or not datetime.fromtimestamp(fire, cron.zone).fold:
        return ""
    return "  (repeated hour, second showing)"


# `next`'s note for a task without fires where a word or two would not say enough.
NEXT_SAYS = {NoFire.DAEMON: "daemon task: kept running, no schedule",
             NoFire.AT_START: "runs once when the daemon starts"}


def cmd_next(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    tasks = config.tasks
    if args.task:
        tasks = tuple(t for t in tasks if t.name == args.task)
        if not tasks:
            print(f"no task named '{args.task}' in {args.config}", file=sys.stderr)
            return EXIT_FAIL
    now = time.time()
    if args.after is not None:
        after = _instant(args.after, config.daemon.timezone)
        if after is None:
            print(f"--after: '{args.after}' is not an ISO 8601 time such as "
                  "2026-11-01T00:00:00-04:00 or 2026-11-01T04:00:00Z", file=sys.stderr)
            return EXIT_CONFIG
        now = after
    fires: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    for spec in tasks:
        schedule = spec.schedule
        shape = unscheduled(daemon=spec.kind is TaskKind.DAEMON,
                            at_start=isinstance(schedule, RebootSchedule),
                            after=spec.after is not None)
        # From the file alone: no pause is known, and a disabled task or one for other
        # hosts has its fires listed all the same (what it would do).
        fires[spec.name] = ([] if shape is not None or schedule is None
                            else upcoming(schedule, now, args.count))
        cause = inactive(enabled=spec.enabled, for_this_host=spec.for_this_host) or shape
        if cause is NoFire.AFTER:
            assert spec.after is not None  # noqa: S101 - unscheduled says so
            notes[spec.name] = f"after {', '.join(spec.after.tasks)}: no schedule"
        elif cause is not None:
            notes[spec.name] = NEXT_SAYS.get(cause, cause.value)
        elif (cron := _cron_of(schedule)) is not None and cron.dst is not None:
            notes[spec.name] = f"dst: {cron.dst.text}"
    if args.json:
        print(json.dumps({name: [iso_utc(t) for t in times] for name, times in fires.items()},
                         indent=2))
        return EXIT_OK
    zones = {spec.name: spec.timezone for spec in tasks}
    schedules = {spec.name: spec.schedule for spec in tasks}
    for name, times in fires.items():
        note = f"  ({notes[name]})" if name in notes else ""
        print(f"{name}{note}")
        zone = text_zone(zones[name], args.utc)
        for fire in times:
            # from now, unless previewing another instant (--after)
            distance = f"  ({relative(fire, now)})" if args.after is None else ""
            print(f"  {local_iso(fire, zone)}{distance}{_dst_mark(fire, schedules[name])}")
    return EXIT_OK
