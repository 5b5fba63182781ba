"""`torchd import`, fire by fire: every task imported from the crontab corpus
(tests/data/import/*crontab*) fires, over its next 1,000 fires, exactly when croniter
reading the original line says; every task imported from gotorch task lists fires when
gotorch's fields meant (an evaluator of gotorch's intended semantics, below); and each
gotorch warning's "first such time" is the first of those fires gotorch's parser missed."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from torchd.config.importcron import import_crontab
from torchd.config.importgotorch import import_gotorch
from torchd.config.importout import Imported, render
from torchd.config.source import load_config
from torchd.core.model import TaskSpec
from torchd.core.schedule.cronexpr import CronSchedule, RebootSchedule, upcoming

DATA = Path(__file__).resolve().parents[1] / "data" / "import"
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
COUNT = 1000
# crontab(5)'s nicknames, as the man page defines them
NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
             "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@hourly": "0 * * * *"}
CRON_TZ = re.compile(r"^\s*CRON_TZ\s*=\s*(\S+)\s*$")


def imported(entries: list[Imported], tmp_path: Path) -> list[tuple[Imported, TaskSpec]]:
    path = tmp_path / "imported.yaml"
    path.write_text(render(entries, "corpus", "test"))
    specs = load_config(path, identity=None).tasks
    kept = [e for e in entries if e.skipped is None]
    assert len(specs) == len(kept)
    return list(zip(kept, specs, strict=True))


def _cron_reading(lines: list[str], number: int, system: bool) -> tuple[str, str]:
    """The line's five fields (a nickname as the man page spells it out) and its CRON_TZ."""
    words = lines[number - 1].lstrip().lstrip("-").split()
    fields = NICKNAMES.get(words[0]) or " ".join(words[:5])
    zone = "UTC"
    for above in lines[:number - 1]:
        if match := CRON_TZ.match(above):
            zone = match[1]
    return fields, zone


@pytest.mark.parametrize(("name", "system"), [("user.crontab", False), ("etc_crontab", True)])
def test_crontab_corpus_fires_as_croniter_reads_each_line(name: str, system: bool,
                                                          tmp_path: Path) -> None:
    """Every imported schedule agrees with croniter on its next 1,000 fires."""
    text = (DATA / name).read_text()
    lines = text.splitlines()
    compared = 0
    for entry, spec in imported(import_crontab(text, name, system=system), tmp_path):
        number = int(entry.origin.rsplit(":", 1)[1])
        fields, zone = _cron_reading(lines, number, system)
        if lines[number - 1].split()[0] == "@reboot":
            assert isinstance(spec.schedule, RebootSchedule)
            continue
        assert spec.schedule is not None
        oracle = croniter(fields, datetime.fromtimestamp(START, ZoneInfo(zone)))
        expected = [oracle.get_next(float) for _ in range(COUNT)]
        assert upcoming(spec.schedule, START, COUNT) == expected, entry.origin
        compared += 1
    assert compared >= 5


_GOTORCH_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 7), (1, 12))


def _number(text: str) -> int:
    return int(text)


def _intended(field: str, low: int, high: int) -> set[int]:
    """A field as cron reads it, over gotorch's range for it."""
    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = map(_number, span.split("-"))
        else:
            first = last = _number(span)
        values.update(range(first, last + 1, int(step) if step else 1))
    return values


def _as_parsed(field: str, low: int, high: int) -> set[int]:
    """A field as gotorch's parser really set it: only `*` and `*/N` parts, below `high`."""
    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            values.update(range(low, high, int(step) if step else 1))
    return values


def _sets(times: str, reading: str) -> list[set[int]]:
    expand = _intended if reading == "intended" else _as_parsed
    sets = [expand(f, lo, hi) for f, (lo, hi) in zip(times.split(" "), _GOTORCH_RANGES,
                                                      strict=True)]
    sets[4] = {d % 7 for d in sets[4]}  # Go's Weekday: Sunday is 0 (gotorch's range says 7)
    return sets


def _matches(sets: list[set[int]], moment: float) -> bool:
    """gotorch's checkTime: every field matches (day-of-month AND weekday)."""
    t = datetime.fromtimestamp(moment, UTC)
    return all(v in s for v, s in zip((t.second, t.minute, t.hour, t.day,
                                       t.isoweekday() % 7, t.month), sets, strict=True))


def _gotorch_fires(times: str, start: float) -> Iterator[float]:
    """The instants (UTC) after `start` that gotorch's fields meant, in order."""
    sec, mins, hours, days, weekdays, months = _sets(times, "intended")
    day = datetime.fromtimestamp(start, UTC).replace(hour=0, minute=0, second=0)
    while True:
        if day.day in days and day.month in months and day.isoweekday() % 7 in weekdays:
            for h in sorted(hours):
                for m in sorted(mins):
                    for s in sorted(sec):
                        moment = day.replace(hour=h, minute=m, second=s).timestamp()
                        if moment > start:
                            yield moment
        day += timedelta(days=1)


def _gotorch_pairs(name: str, tmp_path: Path) -> list[tuple[Imported, TaskSpec, dict[str, Any]]]:
    """Each imported task with the gotorch item it came from (by its `{` line)."""
    text = (DATA / name).read_text()
    starts = [n for n, line in enumerate(text.splitlines(), start=1) if line == "  {"]
    items = dict(zip(starts, json.loads(text), strict=True))
    return [(entry, spec, items[int(entry.origin.rsplit(":", 1)[1])])
            for entry, spec in imported(import_gotorch(text, name, START), tmp_path)]


@pytest.mark.parametrize("name", ["gotorch_tasks.json", "gotorch_task_tpl.json"])
def test_gotorch_tasks_fire_as_gotorch_meant(name: str, tmp_path: Path) -> None:
    """Every imported gotorch schedule's next 1,000 fires are those its fields meant."""
    for entry, spec, item in _gotorch_pairs(name, tmp_path):
        if item["TaskType"] == "daemon":
            assert spec.schedule is None
            continue
        assert isinstance(spec.schedule, CronSchedule)
        fires = _gotorch_fires(item["Times"], START)
        meant = [next(fires) for _ in range(COUNT)]
        assert upcoming(spec.schedule, START, COUNT) == meant, entry.origin


def _fires_until(schedule: CronSchedule, last: float) -> list[float]:
    """The schedule's fires after START up to `last` (at most a few thousand here)."""
    fires = [schedule.next_after(START)]
    while (at := fires[-1]) is not None and at < last and len(fires) < 100_000:
        fires.append(schedule.next_after(at))
    return [t for t in fires if t is not None]


def test_gotorch_warning_names_the_first_fire_gotorch_missed(tmp_path: Path) -> None:
    """The time in each warning is a fire of the imported task that gotorch's parser would
    not have fired, and gotorch's parser fired every earlier one."""
    checked = 0
    for entry, spec, item in _gotorch_pairs("gotorch_tasks.json", tmp_path):
        if spec.schedule is None:
            continue
        (warning,) = [w for w in entry.warnings if "never did" in w]
        first = datetime.fromisoformat(warning.rsplit(" ", 1)[1]).timestamp()
        fires = _fires_until(spec.schedule, first)
        assert fires[-1] == first, entry.origin
        parsed = _sets(item["Times"], "as-parsed")
        assert not _matches(parsed, first), entry.origin
        assert all(_matches(parsed, t) for t in fires if t < first), entry.origin
        checked += 1
    assert checked >= 10


@settings(max_examples=300, deadline=None)
@given(command=st.text(st.characters(exclude_characters="%\n\r\0",
                                     exclude_categories=["Cs"]),
                       min_size=1).filter(lambda c: c[0] not in " \t" and c.strip()))
def test_any_command_comes_back_as_written(command: str) -> None:
    """Whatever a crontab line's command holds (but `%`, cron's own, and NUL, skipped),
    the task file written for it loads back to that very command, run with /bin/sh -c."""
    entries = import_crontab(f"* * * * * {command}\n", "t", system=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "imported.yaml"
        path.write_text(render(entries, "t", "crontab"))
        (spec,) = load_config(path, identity=None).tasks
    assert spec.command == ("/bin/sh", "-c", command)


@settings(max_examples=100, deadline=None)
@given(text=st.text(st.characters(exclude_characters="\n\r\0", exclude_categories=["Cs"]),
                    min_size=1))
def test_any_stdin_text_reaches_the_command(text: str) -> None:
    """`cat%TEXT`: the imported command, run as torchd runs it, prints TEXT as cron feeds
    it: each `%` a newline, each `\\%` a `%`, nothing added."""
    entries = import_crontab(f"* * * * * cat%{text}\n", "t", system=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "imported.yaml"
        path.write_text(render(entries, "t", "crontab"))
        (spec,) = load_config(path, identity=None).tasks
    result = subprocess.run(spec.command, env=dict(spec.env), capture_output=True,
                            check=True, timeout=10)
    expected = re.sub(r"\\%|%", lambda m: "%" if m[0] == "\\%" else "\n", text)
    assert result.stdout.decode() == expected
