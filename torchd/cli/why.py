"""`torchd why TASK`: why a task's fires ran or did not, read from the state dir (no daemon
needed) and the task file (`-c`, else the file the last daemon ran). The reasoning is in
`core.why`; this module gathers its rows and prints one line per instant."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from torchd.cli.common import (
    EXIT_CONFIG,
    EXIT_FAIL,
    EXIT_OK,
    load_or_report,
    resolve_state_dir,
    text_zone,
)
from torchd.control.verbs import RUN_TIMES
from torchd.core.model import On, RunOn, RunOutcome, TaskSpec
from torchd.core.schedule.bounded import AtSchedule, WindowedSchedule
from torchd.core.schedule.cronexpr import CronSchedule, RebootSchedule, Schedule, upcoming
from torchd.core.schedule.zones import parse_instant
from torchd.core.timefmt import iso_utc, local_iso
from torchd.core.why import Answer, explain, explain_future
from torchd.core.workflow import satisfies
from torchd.store.history import (
    fire_rows,
    last_activity,
    lost_claims,
    pause_actions,
    query_loads,
    query_runs,
)
from torchd.store.opstate import JsonFile
from torchd.store.statedir import StatePaths

MAX_LAST = 1000  # --last at most
UPSTREAM_RUNS = 100  # an upstream's newest runs looked at for the last one that counts
LOOK_BACK = 2 * 366 * 86400.0  # how far back scheduled instants are looked for


def _computable(schedule: Schedule | None) -> bool:
    """Whether past instants follow from the schedule alone (not `@every`, `@random`,
    `@reboot`, which count from a load or a start: their instants come from the records)."""
    inner = schedule.inner if isinstance(schedule, WindowedSchedule) else schedule
    return isinstance(inner, CronSchedule | AtSchedule)


def past_instants(schedule: Schedule, until: float, count: int) -> list[float]:
    """The last `count` fires of `schedule` at or before `until`, oldest first (looking back
    in spans that double, at most LOOK_BACK)."""
    span = 60.0
    while True:
        start = until - span
        found = [t for t in _between(schedule, start, until)]
        if len(found) >= count or span >= LOOK_BACK:
            return found[-count:]
        span *= 4


def _between(schedule: Schedule, start: float, until: float) -> list[float]:
    found: list[float] = []
    cursor: float | None = start
    while True:
        cursor = schedule.next_after(cursor) if cursor is not None else None
        if cursor is None or cursor > until:
            return found
        found.append(cursor)
        if len(found) > 4 * MAX_LAST:  # a second-level schedule: the recent ones suffice
            del found[:MAX_LAST]


def _bounded(spec: TaskSpec, now: float) -> str | None:
    schedule = spec.schedule
    if isinstance(schedule, AtSchedule) and schedule.instant <= now:
        return f"at: {iso_utc(schedule.instant)} is done"
    if isinstance(schedule, WindowedSchedule) and schedule.end is not None \
            and schedule.end <= now:
        return f"end_at {iso_utc(schedule.end)} has passed"
    return None


def _paused_now(paths: StatePaths, task: str) -> bool:
    value = JsonFile(paths.paused, {}).load()
    if not isinstance(value, dict):
        return False
    return bool(value.get("all")) or task in (value.get("tasks") or [])


def cmd_why(args: argparse.Namespace) -> int:
    if args.last < 1 or args.last > MAX_LAST:
        print(f"--last: {args.last} is not between 1 and {MAX_LAST}", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = resolve_state_dir(args)
    paths = StatePaths(state_dir)
    database = paths.history
    if not database.exists():
        print(f"torchd: no run history in {state_dir} (no {database.name}: no daemon has run "
              "with this state dir, or daemon.history is off)", file=sys.stderr)
        return EXIT_FAIL
    loads = seen_before_kills(database, query_loads(database))
    file = args.config or next((row["config_file"] for row in reversed(loads)
                                if row["config_file"]), None)
    if file is None:
        print("torchd why: no task file: give -c FILE (no daemon start is recorded in "
              f"{database})", file=sys.stderr)
        return EXIT_CONFIG
    config = load_or_report(file)
    if config is None:
        return EXIT_CONFIG
    spec = next((t for t in config.tasks if t.name == args.task), None)
    now = time.time()
    zone_name = spec.timezone if spec is not None else config.daemon.timezone
    zone = text_zone(zone_name, args.utc)

    def show(ts: float) -> str:
        return local_iso(ts, zone)

    at = None
    if args.at is not None:
        try:
            at = parse_instant(args.at, config.daemon.timezone)
        except ValueError:
            print(f"--at: '{args.at}' is not an ISO 8601 time such as "
                  "2026-11-01T03:00:00+01:00 or 2026-11-01T02:00:00Z", file=sys.stderr)
            return EXIT_CONFIG
    answers: list[Answer] = []
    if at is None or at <= now:
        answers = _past(args.task, spec, database, loads,
                        until=at if at is not None else now,
                        count=1 if at is not None else args.last, show=show)
    if at is None or at > now:
        answers.append(_future(args.task, spec, paths, now, show))
    if args.json:
        print(json.dumps({"task": args.task, "file": str(file),
                          "in_file": spec is not None,
                          "answers": [_json(a) for a in answers]}, indent=2))
        return EXIT_OK
    if spec is None:
        print(f"note: no task named '{args.task}' in {file} now")
    for answer in answers:
        when = show(answer.instant) if answer.fire_id else "next"
        print(f"{when}  {answer.reason}")
    return EXIT_OK


def seen_before_kills(database: Path, loads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The loads, with a `seen` row before each start that follows a daemon with no stop
    record (killed): when its last run record says it was still at work."""
    out: list[dict[str, Any]] = []
    start: float | None = None
    for row in loads:
        if row["kind"] == "start":
            if start is not None:
                seen = last_activity(database, start, float(row["at"]))
                if seen is not None:
                    out.append({"at": seen, "kind": "seen"})
            start = float(row["at"])
        elif row["kind"] == "stop":
            start = None
        out.append(row)
    return out




def _json(answer: Answer) -> dict[str, Any]:
    """The answer with its times in the JSON form (UTC to the millisecond)."""
    out = answer.as_dict()
    out["instant"] = iso_utc(answer.instant) if answer.fire_id else None
    out["records"] = [{key: iso_utc(value) if key in RUN_TIMES and isinstance(value, float | int)
                       else value for key, value in record.items()}
                      for record in answer.records]
    return out


def _past(task: str, spec: TaskSpec | None, database: Path, loads: list[dict[str, Any]], *,
          until: float, count: int, show: Any) -> list[Answer]:
    fires: list[tuple[float, str | None]]
    if spec is not None and spec.schedule is not None and _computable(spec.schedule):
        fires = [(instant, None) for instant in past_instants(spec.schedule, until, count)]
    else:  # no schedule to count from (@every, after:): the fires the history has, by id
        rows = query_runs(database, task=task, limit=count * 4, until=until + 1)
        fires = sorted({(float(r["scheduled"]), r["fire_id"]) for r in rows
                        if r["scheduled"] is not None and r["fire_id"]})[-count:]
    if not fires:
        return []
    instants = [instant for instant, _ in fires]
    rows = fire_rows(database, task, instants[0], instants[-1])
    pauses = pause_actions(database, task)
    one = spec is not None and spec.run_on is RunOn.ONE
    policy = ""
    if spec is not None:
        policy = f"catchup: {spec.catchup}"
        if spec.starting_deadline is not None:
            policy += f", starting_deadline: {spec.starting_deadline:g}s"
    claims = lost_claims(database, task, instants[0], instants[-1])
    return [explain(task, instant, rows=rows, loads=loads, pauses=pauses, run_on_one=one,
                    show=show, catchup=policy, claims=claims, fid=fid)
            for instant, fid in fires]


def _future(task: str, spec: TaskSpec | None, paths: StatePaths, now: float,
            show: Any) -> Answer:
    if spec is None:
        return Answer(now, "", "none", "no next fire: the task is not in the file", [])
    upstream_last = None
    after = spec.after.tasks if spec.after is not None else ()
    on = spec.after.on if spec.after is not None else On.SUCCESS
    for up in after:  # the latest end of an upstream run whose outcome counts for the edge
        ended = next((float(run["ended"]) for run in query_runs(paths.history, task=up,
                                                                limit=UPSTREAM_RUNS)
                      if run["ended"] is not None and run["outcome"] is not None
                      and satisfies(on, RunOutcome(run["outcome"]))), None)
        if ended is not None:
            upstream_last = max(upstream_last or 0.0, ended)
    schedule = spec.schedule
    following = None
    if schedule is not None and _computable(schedule):
        fires = upcoming(schedule, now, 1)
        following = fires[0] if fires else None
    bounded = _bounded(spec, now)
    if schedule is not None and not _computable(schedule):
        bounded = f"{schedule.text}: counted from the daemon's start or last reload"
    return explain_future(task, next_fire=following, enabled=spec.enabled,
                          for_this_host=spec.for_this_host, paused=_paused_now(paths, task),
                          kind=str(spec.kind), at_start=isinstance(schedule, RebootSchedule),
                          after=after, on=str(on), upstream_last=upstream_last,
                          bounded=bounded, show=show)


