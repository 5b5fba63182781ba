"""gotorch's JSON task list into torchd tasks: `torchd import gotorch`.

gotorch (github.com/zhenbianshu/gotorch) reads a JSON list of {Command, TaskType, Times,
Max, Ips}. Its `Times` has six fields in the order second minute hour day-of-month
WEEKDAY month; torchd's is second minute hour day-of-month month weekday. How gotorch's
parser really matched (src/task/attr.go, parseTimeRange; task/task.go, checkTime) is
`gotorch_values` below and the README's "Coming from cron and gotorch"; a task whose
imported schedule fires at times gotorch's never did gets a warning with the first."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, tzinfo

from torchd.config.importout import Imported, name_from_command
from torchd.core.errors import ScheduleError
from torchd.core.hostmatch import check_pattern
from torchd.core.schedule.cronexpr import CronSchedule, parse_schedule
from torchd.core.schedule.cronfields import CronFields
from torchd.core.timefmt import local_iso

# gotorch's getRange, by gotorch's field order: (low, high); parseTimeRange walks
# `for start < end`, so `high` itself is never set
GOTORCH_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 7), (1, 12))
GOTORCH_FIELDS = ("second", "minute", "hour", "day-of-month", "weekday", "month")
TO_TORCHD = (0, 1, 2, 3, 5, 4)  # torchd's field i is gotorch's field TO_TORCHD[i]


def gotorch_values(text: str, index: int) -> set[int] | None:
    """The values gotorch's parser really set for one field (None: it refused the task).
    Only `*` and `*/N` parts set anything: from the field's low bound while below its high
    bound, so never second 59, minute 59, hour 23, day 31, December, and as weekday 1-6
    (Go's Sunday is 0). A plain number sets start = end, a range start = end = its first
    number (it splits the whole field at '-'): both loops end at once, nothing is set."""
    low, high = GOTORCH_RANGES[index]
    if text == "*":
        return set(range(low, high))
    values: set[int] = set()
    for part in text.split(","):
        pieces = part.split("/")
        if len(pieces) > 2:
            return None  # gotorch: "time range parse error"
        if pieces[0] != "*":
            continue
        every = int(pieces[1]) if len(pieces) == 2 and pieces[1].isdigit() else 1
        if every < 1:
            return None  # gotorch's loop would never end
        values.update(range(low, high, every))
    return values


def _intended_field(text: str, index: int) -> str:
    """gotorch's field as torchd reads it. Its weekday range is 1-7 (7 = Sunday), so a
    weekday `*/N` steps from Monday: written as 1-7/N."""
    if GOTORCH_FIELDS[index] == "weekday":
        return ",".join(f"1-7/{p[2:]}" if p.startswith("*/") and p != "*/1" else p
                        for p in text.split(","))
    return text


def _torchd_values(fields: CronFields) -> list[set[int]]:
    def bits(mask: int) -> set[int]:
        return {n for n in range(32) if mask >> n & 1}

    return [set(fields.seconds), set(fields.minutes), set(fields.hours),
            bits(fields.days_of_month), set(fields.weekdays), bits(fields.months)]


def first_unlike(schedule: CronSchedule, times: list[str], now: float) -> tuple[float, str] | None:
    """The first fire of `schedule` after `now` that gotorch's parser would not have
    fired, and why; None if there is none (they agree)."""
    real = [gotorch_values(t, i) for i, t in enumerate(times)]
    ours = _torchd_values(schedule.fields)  # in gotorch's order
    if any(values is not None and not (values & ours[i]) for i, values in enumerate(real)):
        empty = [GOTORCH_FIELDS[i] for i, v in enumerate(real) if v is not None and not v & ours[i]]
        first = schedule.next_after(now)
        return (first, f"gotorch never fired it at all: its {', '.join(empty)} field "
                "matched nothing") if first is not None else None
    found: list[tuple[float, str]] = []
    for i, values in enumerate(real):
        missing = ours[i] - (values or set())
        if not missing:
            continue
        fields = schedule.expression.split()
        torchd_index = TO_TORCHD.index(i)
        fields[torchd_index] = ",".join(str(v) for v in sorted(missing))
        narrowed = parse_schedule(" ".join(fields), schedule.zone)
        first = narrowed.next_after(now)
        if first is not None:
            shown = ", ".join(str(v) for v in sorted(missing))
            found.append((first, f"gotorch never matched {GOTORCH_FIELDS[i]} {shown}"))
    return min(found) if found else None


def _strings(value: object) -> Iterable[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def import_gotorch(text: str, source: str, now: float,
                   zone: tzinfo = UTC) -> list[Imported]:
    """Every task of a gotorch task list, in order. `zone` is the one gotorch ran in (its
    host's) and the imported tasks will: where the first unlike time is reckoned. Raises
    ValueError if the text is not a JSON list (the CLI names the file)."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("expected a JSON list of tasks, as gotorch's task_tpl.json")
    lines = _item_lines(text, len(items))
    entries = [_task(item, f"{source}:{line}", now, zone)
               for item, line in zip(items, lines, strict=True)]
    commands = [dict(e.keys).get("command") for e in entries if e.skipped is None]
    for entry in entries:  # gotorch keyed its tasks by Command: the last one won
        if entry.skipped is None and commands.count(dict(entry.keys).get("command")) > 1:
            entry.warnings.append("another task has the same Command: gotorch kept only the "
                                  "last of them (it keys tasks by Command); torchd runs each")
    return entries


def _item_lines(text: str, count: int) -> list[int]:
    """The line of each top-level object's `{` (depth 1 in the list), for file:line."""
    lines, depth, line, in_string, escaped = [], 0, 1, False, False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_string:
            escaped = not escaped and ch == "\\"
            in_string = escaped or ch != '"'
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            if depth == 1 and ch == "{":
                lines.append(line)
            depth += 1
        elif ch in "]}":
            depth -= 1
    return lines if len(lines) == count else [1] * count


def _task(item: object, origin: str, now: float, zone: tzinfo) -> Imported:
    entry = Imported(origin=origin)
    if not isinstance(item, dict):
        entry.skipped = "not a JSON object"
        return entry
    command_text = item.get("Command", item.get("Script", ""))
    if not isinstance(command_text, str) or not command_text.strip():
        entry.skipped = "Command is empty (gotorch could not start it either)"
        return entry
    split = command_text.split(" ")  # as gotorch: strings.Split(Command, " "), no shell
    argv = [word for word in split if word]
    if len(argv) != len(split):
        entry.warnings.append("gotorch split Command at each single space and passed the "
                              "empty words between double spaces as arguments; torchd's "
                              "list leaves them out")
    entry.name_hint = name_from_command(argv[0])
    entry.keys.append(("command", argv))
    max_running = item.get("Max", 0)
    max_running = max_running if isinstance(max_running, int) and max_running > 0 else 0
    if item.get("TaskType") == "daemon":
        entry.keys.append(("type", "daemon"))
        if not max_running:
            entry.warnings.append("Max is 0: gotorch started another copy at every check; "
                                  "torchd keeps one running (max_running: 1)")
        entry.keys.append(("max_running", max_running or 1))
        if item.get("Times"):
            entry.warnings.append(f"Times '{item['Times']}' is dropped: gotorch ignored it "
                                  "for a daemon task too")
    else:
        if item.get("TaskType") not in ("common", None):
            entry.warnings.append(f"TaskType '{item.get('TaskType')}' read as common")
        if (schedule := _schedule(item.get("Times"), entry, now, zone)) is None:
            return entry
        entry.keys.insert(0, ("schedule", schedule))
        if max_running:
            entry.keys.append(("max_running", max_running))
    hosts = []
    for ip in _strings(item.get("Ips")):
        if problem := check_pattern(ip):
            entry.warnings.append(f"Ips entry '{ip}' left out: {problem}")
        else:
            hosts.append(ip)
    if hosts:
        entry.keys.append(("hosts", hosts))
    return entry


def _schedule(times: object, entry: Imported, now: float, zone: tzinfo) -> str | None:
    if not isinstance(times, str) or len(times.split(" ")) != 6:
        entry.skipped = f"Times {json.dumps(times)} is not six fields separated by single " \
                        "spaces (gotorch refused it: 'time format error')"
        return None
    fields = times.split(" ")
    if any(gotorch_values(f, i) is None for i, f in enumerate(fields)):
        entry.skipped = f"Times '{times}': gotorch refused it ('time range parse error')"
        return None
    ordered = [_intended_field(fields[TO_TORCHD[i]], TO_TORCHD[i]) for i in range(6)]
    schedule_text = " ".join(ordered)
    try:
        schedule = parse_schedule(schedule_text, zone)
    except ScheduleError as exc:
        entry.skipped = f"Times '{times}' (as torchd's '{schedule_text}'): {exc}"
        return None
    assert isinstance(schedule, CronSchedule)  # noqa: S101 - six fields, no macro
    if schedule.fields.either_day:
        entry.warnings.append("both day fields are restricted: gotorch required both to "
                              "match, torchd (as cron) fires when either does")
    if (unlike := first_unlike(schedule, fields, now)) is not None:
        first, why = unlike
        entry.warnings.append(f"fires at times gotorch's never did; {why}; the first such "
                              f"time is {local_iso(first, zone)}")
    return schedule_text
