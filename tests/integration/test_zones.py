"""Zones as glibc reads TZ: names, TZif paths and POSIX rules, checked against the C library."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.helpers import torchd_as, torchd_cmd, unavailable, user_owned_dir
from torchd.core.schedule.zones import ZoneError, host_zone_spec, load_zone

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_ZONES = Path("/usr/share/zoneinfo")


@pytest.fixture
def system_zones() -> None:
    """The system's zone database (Debian's tzdata), which some tests compare against."""
    if not (SYSTEM_ZONES / "Europe" / "Berlin").is_file():
        unavailable(f"no zone data in {SYSTEM_ZONES} (apt install tzdata)")


RULE_ERROR = ("not a valid POSIX TZ rule: names of 3 or more letters (or quoted: <+03>), "
              "offsets under 24 hours, dates Jn, n or Mm.w.d, times within 167 hours (like "
              "'CET-1CEST,M3.5.0,M10.5.0/3')")
NO_ZONE = "no zone of that name, and not a POSIX TZ rule (like 'CET-1CEST,M3.5.0,M10.5.0/3')"
EMPTY = ("empty: give a zone name (Europe/Berlin), an absolute path to a TZif file, or a POSIX "
         "TZ rule ('CET-1CEST,M3.5.0,M10.5.0/3')")


def instant(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


def state(zone: ZoneInfo, at: int) -> tuple[int, bool]:
    """The UTC offset in seconds and whether daylight saving time is on, at an instant."""
    moment = datetime.fromtimestamp(at, zone)
    offset, dst = moment.utcoffset(), moment.dst()
    assert offset is not None
    assert dst is not None
    return int(offset.total_seconds()), bool(dst)


# -- the forms ---------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "key"), [
    ("Asia/Tokyo", "Asia/Tokyo"),
    (":Asia/Tokyo", "Asia/Tokyo"),
    ("UTC", "UTC"),
    ("EST5EDT", "EST5EDT"),  # a zone file of that name wins over the POSIX rule, as in glibc
], ids=["name", "colon-name", "utc", "name-shaped-like-a-rule"])
def test_a_name_is_the_zoneinfo_zone_of_that_name(spec: str, key: str) -> None:
    """A name gives the very ZoneInfo object zoneinfo gives for it."""
    assert load_zone(spec) is ZoneInfo(key)


@pytest.mark.parametrize(("rule", "winter", "summer"), [
    ("JST-9", (32400, False), (32400, False)),
    ("<+0330>-3:30", (12600, False), (12600, False)),
    ("<-0930>9:30", (-34200, False), (-34200, False)),
    ("EST5EDT,M3.2.0,M11.1.0", (-18000, False), (-14400, True)),
    ("CET-1CEST,M3.5.0,M10.5.0/3", (3600, False), (7200, True)),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", (39600, True), (36000, False)),
    ("NZST-12NZDT,M9.5.0,M4.1.0/3", (46800, True), (43200, False)),
    ("ABC3DEF,J60/2,J300/2", (-10800, False), (-7200, True)),
    ("ABC3DEF,59/2,299/2", (-10800, False), (-7200, True)),
    ("IST-1GMT0,M10.5.0,M3.5.0/1", (0, True), (3600, False)),
], ids=["fixed", "quoted-half-hour", "quoted-west", "us", "eu", "australia", "new-zealand",
        "julian-1-based", "julian-0-based", "negative-dst"])
def test_a_posix_rule_becomes_a_zone(rule: str, winter: tuple[int, bool],
                                     summer: tuple[int, bool]) -> None:
    """A POSIX rule loads under its own text, with its offsets in January and July."""
    zone = load_zone(rule)
    assert str(zone) == rule
    assert state(zone, instant(2026, 1, 15, 12)) == winter
    assert state(zone, instant(2026, 7, 15, 12)) == summer


def test_a_rule_of_dst_all_year_is_dst_at_every_instant() -> None:
    """RFC 8536's all-year DST rule never shows standard time, not even around a new year
    (where glibc shows it for five hours of each UTC year)."""
    zone = load_zone("EST5EDT4,0/0,J365/25")
    for year in (1970, 2023, 2024, 2100):
        for at in range(instant(year, 1, 1) - 86400, instant(year, 1, 1) + 86400, 600):
            assert state(zone, at) == (-14400, True), at
        assert state(zone, instant(year, 7, 1)) == (-14400, True)


def test_a_zero_based_day_counts_february_29() -> None:
    """Day 59 counting from 0 is March 1, or February 29 in a leap year (zoneinfo alone puts
    it a day early)."""
    zone = load_zone("ABC3DEF,59/2,299/2")
    for year, day in ((2023, datetime(2023, 3, 1)), (2024, datetime(2024, 2, 29))):
        change = instant(day.year, day.month, day.day, 5)  # 02:00 at UTC-3
        assert (state(zone, change - 1), state(zone, change)) == (
            (-10800, False), (-7200, True)), year


def test_a_leading_colon_gives_the_same_zone() -> None:
    """':spec' and 'spec' are one cached object, keyed without the colon."""
    assert load_zone(":JST-9") is load_zone("JST-9")
    assert str(load_zone(":JST-9")) == "JST-9"


@pytest.mark.usefixtures("system_zones")
@pytest.mark.parametrize("name", ["Asia/Tokyo", "Europe/Berlin"], ids=["tokyo", "berlin"])
def test_a_path_reads_the_file_like_the_name(name: str) -> None:
    """A TZif path gives the zone of the same name at every instant, keyed by the path."""
    path = str(SYSTEM_ZONES / name)
    by_path, by_name = load_zone(path), ZoneInfo(name)
    assert str(by_path) == path
    assert load_zone(":" + path) is by_path
    for at in range(instant(1880, 1, 1), instant(2100, 1, 1), 86400 * 7):
        moment = datetime.fromtimestamp(at, by_path)
        expected = datetime.fromtimestamp(at, by_name)
        assert (moment.utcoffset(), moment.dst(), moment.tzname()) == (
            expected.utcoffset(), expected.dst(), expected.tzname()), moment


def test_names_come_from_the_tzdata_package_without_system_zone_data(tmp_path: Path) -> None:
    """With an empty zone search path, a name loads from the tzdata package."""
    code = ("import zoneinfo; from datetime import datetime; "
            "from torchd.core.schedule.zones import load_zone;"
            "z = load_zone('Europe/Berlin'); print(zoneinfo.TZPATH, [int(datetime(2026, m, 1,"
            " tzinfo=z).utcoffset().total_seconds()) for m in (1, 7)])")
    env = {**os.environ, "PYTHONTZPATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=30)
    assert run.stdout.strip() == f"('{tmp_path}',) [3600, 7200]"


# -- refusals ----------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "message"), [
    ("", f"time zone '': {EMPTY}"),
    (":", f"time zone '': {EMPTY}"),
    ("Foo/Bar", f"time zone 'Foo/Bar': {NO_ZONE}"),
    ("hello", f"time zone 'hello': {NO_ZONE}"),
    ("Asia//Tokyo", f"time zone 'Asia//Tokyo': {NO_ZONE}"),
    ("Europe/Berlin\n", f"time zone 'Europe/Berlin\\n': {NO_ZONE}"),
    ("UTC+", f"time zone 'UTC+': {RULE_ERROR}"),
    ("AB-1", f"time zone 'AB-1': {RULE_ERROR}"),
    ("<A>1", f"time zone '<A>1': {RULE_ERROR}"),
    ("ABC-24", f"time zone 'ABC-24': {RULE_ERROR}"),
    ("ABC001", f"time zone 'ABC001': {RULE_ERROR}"),
    ("ABC-1:60", f"time zone 'ABC-1:60': {RULE_ERROR}"),
    ("JST-9 ", f"time zone 'JST-9 ': {RULE_ERROR}"),
    ("CET-1CEST,M13.5.0,M10.5.0", f"time zone 'CET-1CEST,M13.5.0,M10.5.0': {RULE_ERROR}"),
    ("CET-1CEST,M3.6.0,M10.5.0", f"time zone 'CET-1CEST,M3.6.0,M10.5.0': {RULE_ERROR}"),
    ("CET-1CEST,M3.5.7,M10.5.0", f"time zone 'CET-1CEST,M3.5.7,M10.5.0': {RULE_ERROR}"),
    ("CET-1CEST,J0,J365", f"time zone 'CET-1CEST,J0,J365': {RULE_ERROR}"),
    ("CET-1CEST,0,366", f"time zone 'CET-1CEST,0,366': {RULE_ERROR}"),
    ("CET-1CEST,M3.5.0/168,M10.5.0", f"time zone 'CET-1CEST,M3.5.0/168,M10.5.0': {RULE_ERROR}"),
    ("CET-1CEST,M3.5.0", f"time zone 'CET-1CEST,M3.5.0': {RULE_ERROR}"),
    ("ABC3DEF,1/144,200", "time zone 'ABC3DEF,1/144,200': the time in '1/144' is past 143 "
                          "hours, the most zoneinfo can take with a zero-based day"),
    ("JST-9JDT", "time zone 'JST-9JDT': a POSIX TZ rule with daylight saving time must say when"
                 " it starts and ends (like 'CET-1CEST,M3.5.0,M10.5.0/3')"),
    ("../../etc/passwd", "time zone '../../etc/passwd': a zone name cannot contain '.' or '..' "
                         "parts (give a file as an absolute path)"),
    ("Asia/../Asia/Tokyo", "time zone 'Asia/../Asia/Tokyo': a zone name cannot contain '.' or "
                           "'..' parts (give a file as an absolute path)"),
    ("America", "time zone 'America': a directory of zones, not a zone"),
    ("zone.tab", "time zone 'zone.tab': its file in the zone data is not a TZif file"),
    ("/nonexistent/zone", "time zone '/nonexistent/zone': no such file"),
    ("/dev/zero", "time zone '/dev/zero': not a regular file"),
    ("/", "time zone '/': a directory, not a TZif file"),
], ids=["empty", "colon-only", "unknown-name", "word", "empty-part", "newline", "no-offset",
        "two-letter-name", "one-letter-quoted", "24-hours", "three-digit-hours", "minute-60",
        "trailing-space", "month-13", "week-6", "weekday-7", "julian-0", "day-366",
        "time-168h", "one-date", "zero-based-day-at-144h", "dst-without-dates", "dot-dot",
        "dot-dot-inside", "directory-name", "not-tzif-name", "missing-path", "device",
        "directory-path"])
def test_refused_with_the_reason(spec: str, message: str) -> None:
    """What cannot be used is refused, saying what was given and why."""
    with pytest.raises(ZoneError) as caught:
        load_zone(spec)
    assert str(caught.value) == message


@pytest.fixture
def tzif_bytes() -> Callable[[str], bytes]:
    """The bytes of a named zone's TZif file, from the system or the tzdata package."""
    def read(name: str) -> bytes:
        system = SYSTEM_ZONES / name
        if system.is_file():
            return system.read_bytes()
        import importlib.resources
        return importlib.resources.files("tzdata.zoneinfo").joinpath(name).read_bytes()
    return read


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda good: b"",
    "garbage": lambda good: b"garbage\n" * 20,
    "header-only": lambda good: good[:44],
    "cut-in-half": lambda good: good[:len(good) // 2],
    "cut-in-footer": lambda good: good[:-1],  # zoneinfo alone loops forever on this one
    "bad-version": lambda good: good[:4] + b"x" + good[5:],
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_file_is_refused(tmp_path: Path, tzif_bytes: Callable[[str], bytes],
                                   damage: Callable[[bytes], bytes]) -> None:
    """A damaged TZif file is refused, promptly."""
    path = tmp_path / "zone"
    path.write_bytes(damage(tzif_bytes("Europe/Berlin")))
    with pytest.raises(ZoneError) as caught:
        load_zone(str(path))
    assert str(caught.value) == f"time zone '{path}': not a TZif file"


def test_a_dangling_symlink_names_its_target(tmp_path: Path) -> None:
    """A symlink to nothing says where it points."""
    link = tmp_path / "localtime"
    link.symlink_to(tmp_path / "zoneinfo" / "Foo" / "Bar")
    with pytest.raises(ZoneError) as caught:
        load_zone(str(link))
    assert str(caught.value) == (
        f"time zone '{link}': no such file (a symlink to {tmp_path}/zoneinfo/Foo/Bar)")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """A named pipe is refused at once rather than blocking the daemon's start."""
    fifo = tmp_path / "zone"
    os.mkfifo(fifo)
    with pytest.raises(ZoneError) as caught:
        load_zone(str(fifo))
    assert str(caught.value) == f"time zone '{fifo}': not a regular file"


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    """A file that cannot be read is refused with the system's reason (as nobody, where the
    tests run as root, who reads every file; in a directory nobody may enter)."""
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:
            tmp_path = stack.enter_context(user_owned_dir("root"))
            tmp_path.chmod(0o755)
        path = tmp_path / "zone"
        path.write_bytes(b"TZif")
        path.chmod(0)
        code = ("from torchd.core.schedule.zones import ZoneError, load_zone\n"
                f"try:\n    load_zone({str(path)!r})\nexcept ZoneError as exc:\n    print(exc)")
        command = (torchd_as("nobody") if os.geteuid() == 0 else torchd_cmd)()
        python = command[:command.index("-m")]
        result = subprocess.run([*python, "-c", code], capture_output=True, text=True,
                                check=True)
    assert result.stdout == f"time zone '{path}': cannot be read: Permission denied\n"


# -- the oracle: the C library, in a subprocess, for the same TZ values --------------------

ORACLE_RULES = {  # id: (rule, changes of offset or DST flag a year)
    "fixed-east": ("JST-9", 0),
    "fixed-zero": ("UTC0", 0),
    "fixed-far-west": ("<-12>12", 0),
    "fixed-far-east": ("<+14>-14", 0),
    "quoted-half-hour": ("<+0330>-3:30", 0),
    "seconds-in-offsets": (
        "<+053015>-5:30:15<+063045>-6:30:45,M3.5.0/1:30:45,M10.5.0/2:15:10", 2),
    "us": ("EST5EDT,M3.2.0,M11.1.0", 2),
    "eu": ("CET-1CEST,M3.5.0,M10.5.0/3", 2),
    "australia": ("AEST-10AEDT,M10.1.0,M4.1.0/3", 2),
    "new-zealand": ("NZST-12NZDT,M9.5.0,M4.1.0/3", 2),
    "half-hour-dst": ("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 2),
    "negative-dst": ("IST-1GMT0,M10.5.0,M3.5.0/1", 2),
    "julian-1-based": ("ABC3DEF,J60/2,J300/2", 2),
    "julian-0-based": ("ABC3DEF,59/2,299/2", 2),
    "julian-year-ends": ("ABC3DEF,J1/12,J365/12", 2),
    "negative-times": ("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", 2),
    "hour-24": ("<-04>4<-03>,M9.1.6/24,M4.1.6/24", 2),
    "past-24h": ("<-03>3<-02>,M3.5.0/25,M10.5.0/49", 2),
    "julian-0-based-year-ends": ("ABC3DEF,0/12,364/12", 2),
    "julian-0-based-extreme-times": ("ABC3DEF,100/143,200/-143", 2),
    "colon": (":CET-1CEST,M3.5.0,M10.5.0/3", 2),
}
ORACLE_PATHS = {
    "tokyo": "/usr/share/zoneinfo/Asia/Tokyo",
    "berlin": "/usr/share/zoneinfo/Europe/Berlin",
    "new-york": "/usr/share/zoneinfo/America/New_York",
    "lord-howe": "/usr/share/zoneinfo/Australia/Lord_Howe",
    "dublin": "/usr/share/zoneinfo/Europe/Dublin",
    "colon-path": ":/usr/share/zoneinfo/America/Sao_Paulo",
}
# glibc takes a POSIX rule's year from the UTC date, so near a UTC new year it can use the
# wrong year's changes (the all-year DST rule shows standard time for the first hours of each
# UTC year); the rules above change well inside the year. glibc also evaluates a rule in a
# year before 1970 with 1970's dates (compute_change in tzset.c), so rules are compared from
# 1970 on; TZif data is compared before that too.
RULE_YEARS = (1970, 2000, 2023, 2024, 2038, 2100)
PATH_YEARS = (1950, 1969, 1970, 2000, 2024, 2038, 2100)
GRID = 86400
ORACLE = """
import json, os, sys, time
answers = {}
for spec, instants in json.load(sys.stdin).items():
    os.environ["TZ"] = spec
    time.tzset()
    answers[spec] = [[t.tm_gmtoff, t.tm_isdst] for t in map(time.localtime, instants)]
json.dump(answers, sys.stdout)
"""


@cache
def probe_instants(spec: str, years: tuple[int, ...]) -> tuple[list[int], int]:
    """A daily grid over the years, plus each change of offset or DST flag between grid
    points (found by bisection) and the seconds either side of it; and the count of changes."""
    zone = load_zone(spec)
    instants, changes = [], 0
    for year in years:
        grid = list(range(instant(year, 1, 1), instant(year + 1, 1, 1) + 1, GRID))
        instants += grid
        states = [state(zone, at) for at in grid]
        for (start, before), (end, after) in pairwise(zip(grid, states, strict=True)):
            if before != after:
                first = first_change(zone, start, end)
                instants += [first - 1, first, first + 1]
                changes += 1
    return instants, changes


def first_change(zone: ZoneInfo, low: int, high: int) -> int:
    """The first second in (low, high] whose state differs from low's (bisection)."""
    before = state(zone, low)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if state(zone, middle) == before else (low, middle)
    return high


@pytest.fixture(scope="module")
def libc_answers() -> dict[str, list[list[int]]]:
    """(tm_gmtoff, tm_isdst) from the C library for every spec at its probe instants."""
    question = {rule: probe_instants(rule, RULE_YEARS)[0] for rule, _ in ORACLE_RULES.values()}
    if (SYSTEM_ZONES / "Europe" / "Berlin").is_file():
        question |= {path: probe_instants(path, PATH_YEARS)[0] for path in ORACLE_PATHS.values()}
    run = subprocess.run([sys.executable, "-I", "-c", ORACLE], input=json.dumps(question),
                         capture_output=True, text=True, check=True, timeout=60)
    answers: dict[str, list[list[int]]] = json.loads(run.stdout)
    return answers


def check_against_libc(spec: str, years: tuple[int, ...],
                       answers: dict[str, list[list[int]]]) -> int:
    """Assert zoneinfo and glibc agree at every probe instant; the changes probed."""
    zone = load_zone(spec)
    instants, changes = probe_instants(spec, years)
    ours = [state(zone, at) for at in instants]
    differences = [
        (datetime.fromtimestamp(at, UTC).isoformat(), mine, tuple(libc))
        for at, mine, libc in zip(instants, ours, answers[spec], strict=True)
        if mine != (libc[0], bool(libc[1]))]
    assert differences[:5] == [], f"{len(differences)} differences"
    return changes


@pytest.mark.parametrize(("rule", "yearly"), ORACLE_RULES.values(), ids=ORACLE_RULES.keys())
def test_posix_rules_agree_with_the_c_library(rule: str, yearly: int,
                                              libc_answers: dict[str, list[list[int]]]) -> None:
    """A rule's offset and DST flag match glibc's for the same TZ, around every change."""
    assert check_against_libc(rule, RULE_YEARS, libc_answers) == yearly * len(RULE_YEARS)


@pytest.mark.usefixtures("system_zones")
@pytest.mark.parametrize("path", ORACLE_PATHS.values(), ids=ORACLE_PATHS.keys())
def test_tzif_paths_agree_with_the_c_library(path: str,
                                             libc_answers: dict[str, list[list[int]]]) -> None:
    """A TZif path's offset and DST flag match glibc's for TZ set to that path."""
    assert check_against_libc(path, PATH_YEARS, libc_answers) > 0


# -- the host's zone ----------------------------------------------------------------------

@pytest.fixture
def etc(tmp_path: Path, tzif_bytes: Callable[[str], bytes]) -> Path:
    """A stand-in /etc, and a fake zoneinfo tree holding Europe/Berlin and Fake/Zone."""
    tree = tmp_path / "usr" / "share" / "zoneinfo"
    for name, source in (("Europe/Berlin", "Europe/Berlin"), ("Fake/Zone", "Asia/Tokyo")):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(tzif_bytes(source))
    (tmp_path / "etc").mkdir()
    return tmp_path / "etc"


def host(etc: Path, environ: dict[str, str] | None = None) -> str:
    return host_zone_spec(environ=environ or {}, localtime=str(etc / "localtime"),
                          timezone_file=str(etc / "timezone"))


@pytest.mark.parametrize(("value", "spec"), [
    ("Asia/Tokyo", "Asia/Tokyo"),
    (":Asia/Tokyo", ":Asia/Tokyo"),
    ("JST-9", "JST-9"),
    ("/usr/share/zoneinfo/Asia/Tokyo", "/usr/share/zoneinfo/Asia/Tokyo"),
    ("Foo/Bar", "Foo/Bar"),
], ids=["name", "colon-name", "rule", "path", "invalid-kept-for-the-error"])
def test_tz_wins_as_given(etc: Path, value: str, spec: str) -> None:
    """A non-empty TZ is the host's zone, as written, whatever /etc holds."""
    (etc / "localtime").symlink_to(etc.parent / "usr/share/zoneinfo/Europe/Berlin")
    assert host(etc, {"TZ": value}) == spec


def test_an_empty_tz_is_not_used(etc: Path) -> None:
    """TZ='' falls through to /etc/localtime."""
    (etc / "localtime").symlink_to(etc.parent / "usr/share/zoneinfo/Europe/Berlin")
    assert host(etc, {"TZ": ""}) == "Europe/Berlin"


def test_no_localtime_is_utc(etc: Path) -> None:
    """No /etc/localtime at all is UTC, as in glibc, whatever /etc/timezone says."""
    (etc / "timezone").write_text("Europe/Berlin\n")
    assert host(etc) == "UTC"


@pytest.mark.parametrize("target", ["{root}/usr/share/zoneinfo/Europe/Berlin",
                                    "../usr/share/zoneinfo/Europe/Berlin"],
                         ids=["absolute", "relative"])
def test_a_symlink_into_zoneinfo_gives_the_name(etc: Path, target: str) -> None:
    """/etc/localtime -> .../zoneinfo/Europe/Berlin is 'Europe/Berlin'."""
    (etc / "localtime").symlink_to(target.format(root=etc.parent))
    assert host(etc) == "Europe/Berlin"


def test_a_dangling_symlink_to_a_known_name_gives_the_name(etc: Path) -> None:
    """A slim container's link to absent system data still names a zone tzdata has."""
    (etc / "localtime").symlink_to("/nonexistent/zoneinfo/Europe/Berlin")
    assert host(etc) == "Europe/Berlin"


def test_a_dangling_symlink_to_an_unknown_name_fails_on_load(etc: Path) -> None:
    """A link to nothing, under a name no zone data has, is refused rather than UTC."""
    (etc / "localtime").symlink_to(etc.parent / "usr/share/zoneinfo/Foo/Bar")
    spec = host(etc)
    assert spec == str(etc / "localtime")
    with pytest.raises(ZoneError) as caught:
        load_zone(spec)
    assert str(caught.value) == (f"time zone '{spec}': no such file (a symlink to "
                                 f"{etc.parent}/usr/share/zoneinfo/Foo/Bar)")


def test_a_symlink_to_an_unknown_name_reads_the_file(etc: Path) -> None:
    """A link into a zoneinfo tree under a name no zone data has is read as the file."""
    (etc / "localtime").symlink_to(etc.parent / "usr/share/zoneinfo/Fake/Zone")
    spec = host(etc)
    assert spec == str(etc / "localtime")
    assert state(load_zone(spec), instant(2026, 7, 1)) == (32400, False)


def test_a_symlink_elsewhere_reads_the_file(etc: Path, tzif_bytes: Callable[[str], bytes]) -> None:
    """A link to a file outside any zoneinfo tree is read as the file."""
    (etc.parent / "tokyo.tzif").write_bytes(tzif_bytes("Asia/Tokyo"))
    (etc / "localtime").symlink_to(etc.parent / "tokyo.tzif")
    assert host(etc) == str(etc / "localtime")


@pytest.mark.usefixtures("system_zones")
def test_a_copy_named_by_etc_timezone_gives_the_name(etc: Path) -> None:
    """A copied zone file with /etc/timezone naming identical zone data is that name."""
    shutil.copyfile(SYSTEM_ZONES / "Europe" / "Berlin", etc / "localtime")
    (etc / "timezone").write_text("Europe/Berlin\n")
    assert host(etc) == "Europe/Berlin"


@pytest.mark.parametrize("timezone", [None, "Europe/Berlin\n", "Foo/Bar\n", "../../etc/passwd",
                                      "JST-9\n"],
                         ids=["no-timezone-file", "stale-name", "unknown-name", "path-trick",
                              "rule"])
def test_a_copy_otherwise_is_read_as_the_file(etc: Path, tzif_bytes: Callable[[str], bytes],
                                              timezone: str | None) -> None:
    """A copied zone file that /etc/timezone does not name exactly is read as the file."""
    (etc / "localtime").write_bytes(tzif_bytes("Asia/Tokyo"))
    if timezone is not None:
        (etc / "timezone").write_text(timezone)
    spec = host(etc)
    assert spec == str(etc / "localtime")
    assert state(load_zone(spec), instant(2026, 7, 1)) == (32400, False)


def test_a_garbage_localtime_fails_on_load(etc: Path) -> None:
    """A damaged /etc/localtime is refused rather than UTC, even when /etc/timezone names a
    zone."""
    (etc / "localtime").write_bytes(b"garbage\n")
    (etc / "timezone").write_text("Europe/Berlin\n")
    spec = host(etc)
    assert spec == str(etc / "localtime")
    with pytest.raises(ZoneError) as caught:
        load_zone(spec)
    assert str(caught.value) == f"time zone '{spec}': not a TZif file"


def test_the_real_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without arguments, the process's own TZ is read."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert host_zone_spec() == "Asia/Tokyo"
