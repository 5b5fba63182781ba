"""`torchd check`'s warnings: a valid task file that likely does not do what its author
meant. Each warning names the file, the line of the field, the task and the field, and says
how to fix or silence it: a task's `lint: {ignore: [CODE, ...]}` silences those codes for
that task (`all` silences every one).

The checks are pure: what they need beyond the file (each task's usual run time from the
history, the hosts a cluster knows) comes in as arguments, and a check without its input
is left out.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

import yaml

from torchd.config.onthishost import missing_problem
from torchd.config.relpaths import file_dir
from torchd.config.yamlvalues import Invalid
from torchd.core.hostmatch import HostIdentity, pattern_matches
from torchd.core.model import Config, TaskKind, TaskSpec
from torchd.core.schedule.bounded import WindowedSchedule
from torchd.core.schedule.cronexpr import (
    CronSchedule,
    EverySchedule,
    Repeated,
    Schedule,
    Skipped,
    upcoming,
)
from torchd.core.schedule.cronfields import CronFields
from torchd.core.schedule.localtime import change_between, fixed_offset, offset_at
from torchd.core.timefmt import span

# code -> what it warns of (README: "Lint warnings")
CODES = {
    "dst": "a wall time the task's zone skips or repeats at a DST change in the next two years",
    "day-or": "both day fields restricted: cron fires when either matches",
    "timeout": "fires more often than its timeout lets a run finish",
    "overrun": "@every shorter than the task's usual run time with max_running: 1",
    "duplicate": "another task has the same command and schedule",
    "hosts": "a hosts entry matches no host the cluster knows",
    "missing": "the cwd or the program does not exist on this host",
}
ALL = "all"
DST_YEARS = 2
SAMPLE_FIRES = 200  # fires looked at for the shortest gap of a cron schedule


@dataclass(frozen=True, slots=True)
class LintWarning:
    code: str
    file: str
    line: int
    task: str
    field: str
    message: str
    hint: str

    def __str__(self) -> str:
        return (f"{self.file}:{self.line}: task '{self.task}': {self.field}: {self.message} "
                f"[{self.code}] ({self.hint}; or silence it with lint: {{ignore: "
                f"[{self.code}]}})")

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "file": self.file, "line": self.line, "task": self.task,
                "field": self.field, "message": self.message, "hint": self.hint}


def as_lint(node: yaml.Node) -> frozenset[str]:
    """A task's `lint:` value: `{ignore: [CODE, ...]}`, each a known code or `all`."""
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, "must be a mapping such as {ignore: [dst]}")
    codes: set[str] = set()
    for key, value in node.value:
        if not (isinstance(key, yaml.ScalarNode) and key.value == "ignore"):
            raise Invalid(key, f"unknown key '{getattr(key, 'value', '?')}'; the one key is "
                          "ignore")
        items = value.value if isinstance(value, yaml.SequenceNode) else None
        if items is None:
            raise Invalid(value, "ignore: must be a list of warning codes, e.g. [dst, day-or]")
        for item in items:
            text = item.value if isinstance(item, yaml.ScalarNode) else None
            if not isinstance(text, str) or (text not in CODES and text != ALL):
                raise Invalid(item, f"ignore: unknown warning code '{text}'; known: "
                              f"{', '.join(CODES)}, all")
            codes.add(text)
    return frozenset(codes)


def lint(config: Config, *, now: float, durations: Mapping[str, float] | None = None,
         known_hosts: list[HostIdentity] | None = None) -> list[LintWarning]:
    """Every warning for the file, in task order. `durations`: each task's usual run time
    (seconds); `known_hosts`: the cluster's hosts."""
    found: list[LintWarning] = []
    for spec in config.tasks:
        file = spec.file or str(config.path)
        for code, key, message, hint in _task_warnings(spec, config, now, durations,
                                                       known_hosts):
            if code in spec.lint or ALL in spec.lint:
                continue
            found.append(LintWarning(code, file, _line(spec, key), spec.name, key, message,
                                     hint))
    found.extend(_duplicates(config))
    return found


Found = tuple[str, str, str, str]  # code, field, message, hint


def _line(spec: TaskSpec, key: str) -> int:
    return dict(spec.key_lines).get(key, spec.line)


def _task_warnings(spec: TaskSpec, config: Config, now: float,
                   durations: Mapping[str, float] | None,
                   known_hosts: list[HostIdentity] | None) -> Iterator[Found]:
    cron = _cron(spec.schedule)
    if cron is not None:
        yield from dst_warnings(cron, spec.timezone, now)
        if cron.fields.either_day:
            yield ("day-or", "schedule", f"'{cron.text}' restricts both the day of month and "
                   "the weekday: it fires on the days either allows (cron's OR rule), not only "
                   "on the days both do", "to mean both, keep one day field '*' and test the "
                   "other in the command")
    gap = shortest_gap(spec.schedule, now)
    timeout, where = ((spec.http.timeout, "http.timeout") if spec.http is not None
                      else (spec.timeout, "timeout"))
    if timeout is not None and gap is not None and gap < timeout and spec.max_running == 1:
        yield ("timeout", where, f"{_secs(timeout)} lets a run outlast the "
               f"{_secs(gap)} between fires, and with max_running: 1 the fires meanwhile "
               f"are {'queued' if str(spec.overlap) == 'queue' else 'skipped'}",
               "shorten timeout below the gap, or raise max_running")
    usual = (durations or {}).get(spec.name)
    if isinstance(spec.schedule, EverySchedule) and usual is not None \
            and usual > spec.schedule.interval and spec.max_running == 1:
        yield ("overrun", "schedule", f"'{spec.schedule.text}' is shorter than the task's "
               f"usual run time ({_secs(usual)}, from the history) with max_running: 1: "
               "most fires find a run going on", "lengthen the interval, or raise "
               "max_running")
    if known_hosts and spec.hosts:
        for pattern in spec.hosts:
            if is_address(pattern) and not any(h.addresses for h in known_hosts):
                continue  # the registry told names only: an address cannot be checked
            if not any(pattern_matches(pattern, host) for host in known_hosts):
                yield ("hosts", "hosts", f"'{pattern}' matches none of the "
                       f"{len(known_hosts)} host(s) the cluster's registry knows",
                       "correct the entry, or start torchd on that host")
    if spec.active and spec.http is None:
        problem = missing_problem(spec, file_dir(config.path))
        if problem is not None:
            key, message = problem
            yield ("missing", key, message, "install it, or restrict the task with hosts:")


def _cron(schedule: Schedule | None) -> CronSchedule | None:
    inner = schedule.inner if isinstance(schedule, WindowedSchedule) else schedule
    return inner if isinstance(inner, CronSchedule) else None


def _secs(seconds: float) -> str:
    """`1.5s`, `30s`, `1m`, `2h`: a fraction only where it matters."""
    return f"{seconds:.3g}s" if seconds < 60 else span(seconds)


def shortest_gap(schedule: Schedule | None, now: float) -> float | None:
    """The shortest time between two fires (over the next SAMPLE_FIRES for a cron
    schedule), or None for a schedule without a regular gap."""
    if isinstance(schedule, EverySchedule):
        return schedule.interval
    cron = _cron(schedule)
    if cron is None:
        return None
    fires = upcoming(cron, now, SAMPLE_FIRES)
    gaps = [b - a for a, b in itertools.pairwise(fires)]
    return min(gaps) if gaps else None


def _wall_matches(fields: CronFields, day: datetime, second_of_day: int) -> bool:
    if not fields.months >> day.month & 1:
        return False
    by_month = bool(fields.days_of_month >> day.day & 1)
    by_week = (day.weekday() + 1) % 7 in fields.weekdays
    on_day = (by_month or by_week) if fields.either_day else (by_month and by_week)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return on_day and hour in fields.hours and minute in fields.minutes \
        and second in fields.seconds


def _matching_walls(fields: CronFields, start: datetime, seconds: int) -> list[datetime]:
    """The wall times in [start, start + seconds) the fields allow (start is naive)."""
    found = []
    for step in range(seconds):
        wall = start + timedelta(seconds=step)
        if _wall_matches(fields, wall, wall.hour * 3600 + wall.minute * 60 + wall.second):
            found.append(wall)
    return found


def dst_changes(zone: tzinfo, now: float, years: int = DST_YEARS) -> list[tuple[int, int, int]]:
    """(instant, offset before, offset after) of each change in the next `years`."""
    if fixed_offset(zone) is not None:
        return []
    changes: list[tuple[int, int, int]] = []
    cursor, end = math.floor(now), math.floor(now) + years * 366 * 86400
    while True:
        offset = offset_at(zone, cursor)
        change = change_between(zone, cursor, end, offset)
        if change is None:
            return changes
        changes.append((change, offset, offset_at(zone, change)))
        cursor = change


def dst_warnings(cron: CronSchedule, zone_name: str, now: float) -> Iterator[Found]:
    """The fires that fall in a skipped or repeated wall time in the next DST_YEARS, and
    what torchd does with them (core.schedule.localtime's rules)."""
    fields = cron.fields
    policy = cron.dst
    if fields.every_hour and policy is None:  # elapsed time: nothing skipped or repeated
        return
    skip = policy is not None and policy.skipped is Skipped.SKIP
    both = policy is not None and policy.repeated is Repeated.BOTH
    skipped: list[str] = []
    repeated: list[str] = []
    for change, before, after in dst_changes(cron.zone, now):
        wall_start = datetime.fromtimestamp(change + min(before, after), UTC).replace(
            tzinfo=None)
        walls = _matching_walls(fields, wall_start, abs(after - before))
        if not walls:
            continue
        times = ", ".join(w.strftime("%H:%M:%S") for w in walls[:3])
        more = f" and {len(walls) - 3} more" if len(walls) > 3 else ""
        edge = (datetime.fromtimestamp(change + after, UTC).replace(tzinfo=None)
                if after > before else None)
        if after > before:
            done = ("it does not fire (dst: skipped: skip)" if skip
                    else f"torchd fires once at {edge:%H:%M:%S}")
            skipped.append(f"{times}{more} on {wall_start.date()} (the clock jumps from "
                           f"{wall_start:%H:%M} to {edge:%H:%M}; {done})")
        else:
            done = ("torchd fires at both showings (dst: repeated: both)" if both
                    else "torchd fires at the first showing only")
            repeated.append(f"{times}{more} on {wall_start.date()} (shown twice; {done})")
    if skipped:
        yield ("dst", "schedule", f"'{cron.text}' in {zone_name}: skipped wall time "
               f"{'; '.join(skipped)}", "pick a time outside the change, or timezone: UTC")
    if repeated:
        yield ("dst", "schedule", f"'{cron.text}' in {zone_name}: repeated wall time "
               f"{'; '.join(repeated)}", "pick a time outside the change, or timezone: UTC")


def _duplicates(config: Config) -> list[LintWarning]:
    """Tasks with the same command and schedule (cron tasks; the first named in each)."""
    seen: dict[tuple[object, ...], TaskSpec] = {}
    found = []
    for spec in config.tasks:
        if spec.kind is not TaskKind.CRON or spec.schedule is None or not spec.command:
            continue
        key = (spec.command, spec.schedule.text, spec.timezone, spec.hosts, spec.cwd, spec.env,
               spec.user)
        first = seen.setdefault(key, spec)
        if first is spec or "duplicate" in spec.lint or ALL in spec.lint:
            continue
        found.append(LintWarning(
            "duplicate", spec.file or str(config.path), _line(spec, "command"), spec.name,
            "command", f"the same command and schedule as task '{first.name}' "
            f"(line {first.line}): each fire runs it twice", "remove one of them"))
    return found


def is_address(pattern: str) -> bool:
    """An IP address or network pattern (a heartbeat names hosts, not addresses)."""
    try:
        ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return False
    return True

