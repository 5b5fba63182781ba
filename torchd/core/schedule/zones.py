"""Time zones the way the C library reads TZ, with clear errors instead of a silent UTC.

A zone is given as glibc takes `TZ`: an optional leading ':' (dropped), then an absolute path
to a TZif file, a zone name looked up like `zoneinfo.ZoneInfo` does (TZPATH, then the tzdata
package), or a POSIX TZ rule such as 'CET-1CEST,M3.5.0,M10.5.0/3'. A rule becomes a real
ZoneInfo through a TZif file built in memory with no transitions and the rule as its footer
(RFC 8536), so zoneinfo applies the rule itself.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import zoneinfo
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from torchd.core.errors import TorchdError

_EXAMPLE = "CET-1CEST,M3.5.0,M10.5.0/3"

# POSIX TZ rule grammar, as strict as glibc where zoneinfo is looser (two-letter or quoted
# one-letter names, minutes or seconds of 60 and more, three-digit offset hours).
_NAME = r"[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>"
_OFFSET = r"[+-]?(?:[01]?[0-9]|2[0-3])(?::[0-5][0-9]){0,2}"  # under 24 h: zoneinfo's limit
_DATE = (r"J(?:36[0-5]|3[0-5][0-9]|[12][0-9]{2}|[1-9][0-9]?)"  # Jn: 1-365, no Feb 29
         r"|36[0-5]|3[0-5][0-9]|[12][0-9]{2}|[1-9]?[0-9]"      # n: 0-365, counting Feb 29
         r"|M(?:0?[1-9]|1[0-2])\.[1-5]\.[0-6]")                # Mm.w.d
_TIME = r"[+-]?(?:16[0-7]|1[0-5][0-9]|[0-9]{1,2})(?::[0-5][0-9]){0,2}"  # RFC 8536 v3: ±167 h
_WHEN = rf"(?:{_DATE})(?:/{_TIME})?"
_RULE = re.compile(
    rf"(?P<std>{_NAME})(?P<offset>{_OFFSET})"
    rf"(?P<dst>(?:{_NAME})(?:{_OFFSET})?(?P<dates>,{_WHEN},{_WHEN})?)?", re.ASCII)
_TIME_OF_CHANGE = re.compile(r"/([+-]?)([0-9]+)", re.ASCII)
_RULE_LIKE = re.compile(r"(?:[A-Za-z]+|<[^>]*>)[-+0-9]", re.ASCII)  # a name, then an offset

_MAX_TZIF_BYTES = 1 << 20  # the largest zone files are a few kilobytes


class ZoneError(TorchdError):
    """A time zone that cannot be used; the message gives the zone as written and why."""

    def __init__(self, spec: str, why: str) -> None:
        self.spec = spec
        self.why = why
        super().__init__(f"time zone {spec!r}: {why}")


@lru_cache(maxsize=64)
def load_zone(spec: str) -> ZoneInfo:
    """The zone `spec` names, read as glibc reads TZ: an optional leading ':', then an
    absolute path to a TZif file, a zone name (system zone data, else the tzdata package),
    or a POSIX TZ rule. `str()` of the zone is `spec` without the ':'. Cached: call
    `load_zone.cache_clear()` to see changed files. Raises ZoneError."""
    if spec.startswith(":"):
        return load_zone(spec[1:])
    if not spec:
        raise ZoneError(spec, "empty: give a zone name (Europe/Berlin), an absolute path to a "
                        f"TZif file, or a POSIX TZ rule ('{_EXAMPLE}')")
    if spec.startswith("/"):
        return _from_file(spec)
    if {".", ".."} & set(spec.split("/")):
        raise ZoneError(spec, "a zone name cannot contain '.' or '..' parts "
                        "(give a file as an absolute path)")
    zone = _named(spec) if _name_shaped(spec) else None
    return zone if zone is not None else _from_rule(spec)


def host_zone_spec(*, environ: Mapping[str, str] | None = None,
                   localtime: str = "/etc/localtime",
                   timezone_file: str = "/etc/timezone") -> str:
    """This host's zone, for `load_zone`, found as the C library finds it: $TZ when set and
    not empty, as given; else from `localtime`: a symlink into a zoneinfo tree gives the
    name after '/zoneinfo/' when that name loads; a regular file gives the name in
    `timezone_file` when the zone data of that name is byte-identical; else the path, so
    that a dangling symlink or a damaged file fails in `load_zone` with the reason. No
    `localtime` at all is UTC, as in glibc."""
    tz = (os.environ if environ is None else environ).get("TZ", "")
    if tz:
        return tz
    if not os.path.lexists(localtime):
        return "UTC"
    if os.path.islink(localtime):
        _, marker, name = os.path.realpath(localtime).rpartition("/zoneinfo/")
        return name if marker and _is_zone_name(name) else localtime
    name = _first_line(timezone_file)
    if name and _is_zone_name(name) and _same_bytes(name, localtime):
        return name
    return localtime


def _named(name: str) -> ZoneInfo | None:
    """The zone of that name in the zone data, None when there is none."""
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        return None
    except IsADirectoryError:
        raise ZoneError(name, "a directory of zones, not a zone") from None
    except OSError as exc:
        raise ZoneError(name, f"its zone file cannot be read: {exc.strerror}") from None
    except ValueError:
        raise ZoneError(name, "its file in the zone data is not a TZif file") from None


def _from_file(path: str) -> ZoneInfo:
    link = f" (a symlink to {os.path.realpath(path)})" if os.path.islink(path) else ""
    try:
        with open(path, "rb", opener=_nonblocking) as file:  # a FIFO must not hang us
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ZoneError(path, "not a regular file")
            data = file.read(_MAX_TZIF_BYTES + 1)
    except FileNotFoundError:
        raise ZoneError(path, f"no such file{link}") from None
    except IsADirectoryError:
        raise ZoneError(path, "a directory, not a TZif file") from None
    except OSError as exc:
        raise ZoneError(path, f"cannot be read{link}: {exc.strerror}") from None
    # zoneinfo loops forever on a version 2+ file cut inside its footer (CPython gh-143241)
    truncated = data[4:5] not in (b"\0", b"1") and not data.endswith(b"\n")
    if len(data) > _MAX_TZIF_BYTES or truncated:
        raise ZoneError(path, f"not a TZif file{link}")
    try:
        return ZoneInfo.from_file(io.BytesIO(data), key=path)
    except (ValueError, AssertionError, EOFError, IndexError, struct.error):
        raise ZoneError(path, f"not a TZif file{link}") from None


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def _from_rule(rule: str) -> ZoneInfo:
    match = _RULE.fullmatch(rule)
    if match is None and _RULE_LIKE.match(rule):
        raise ZoneError(rule, "not a valid POSIX TZ rule: names of 3 or more letters (or "
                        "quoted: <+03>), offsets under 24 hours, dates Jn, n or Mm.w.d, "
                        f"times within 167 hours (like '{_EXAMPLE}')")
    if match is None:
        raise ZoneError(rule, f"no zone of that name, and not a POSIX TZ rule (like "
                        f"'{_EXAMPLE}')")
    if match["dst"] and not match["dates"]:
        # glibc takes the dates from the posixrules file (New York's history, and New York's
        # own offsets after 2037): nothing to copy
        raise ZoneError(rule, "a POSIX TZ rule with daylight saving time must say when it "
                        f"starts and ends (like '{_EXAMPLE}')")
    footer = rule
    if match["dates"]:
        dates = [_zero_based_for_zoneinfo(rule, when) for when in match["dates"][1:].split(",")]
        footer = rule[:match.start("dates")] + "," + ",".join(dates)
    try:
        return ZoneInfo.from_file(io.BytesIO(_tzif(footer, match["std"], match["offset"])),
                                  key=rule)
    except ValueError as exc:
        raise ZoneError(rule, f"not a usable POSIX TZ rule: {exc}") from None


def _zero_based_for_zoneinfo(rule: str, when: str) -> str:
    """A rule date as zoneinfo must read it to mean what POSIX and glibc mean. zoneinfo puts
    the zero-based day n one day early (day n - 1: it counts from December 31); the same
    day number a day later in time is the right instant, leap years included."""
    date, _, time = when.partition("/")
    if not date[0].isdigit():
        return when  # Jn and Mm.w.d are read right
    seconds = _seconds(time or "2") + 86400
    if seconds > 167 * 3600:
        raise ZoneError(rule, f"the time in {when!r} is past 143 hours, the most zoneinfo "
                        "can take with a zero-based day")
    sign, (hours, rest) = "-" if seconds < 0 else "", divmod(abs(seconds), 3600)
    return f"{date}/{sign}{hours}:{rest // 60:02}:{rest % 60:02}"


def _seconds(clock: str) -> int:
    """Seconds in a POSIX [+-]hh[:mm[:ss]]."""
    hms = [int(part) for part in clock.lstrip("+-").split(":")] + [0, 0]
    seconds = hms[0] * 3600 + hms[1] * 60 + hms[2]
    return -seconds if clock.startswith("-") else seconds


def _tzif(rule: str, name: str, offset: str) -> bytes:
    """A TZif file with no transitions, one local time type (the standard time) and the
    rule as its footer; version 3 when a time of change is negative or past 24:00."""
    utc_offset = -_seconds(offset)  # POSIX counts hours west of Greenwich
    extended = any(sign == "-" or int(hours) > 24
                   for sign, hours in _TIME_OF_CHANGE.findall(rule))
    version = b"3" if extended else b"2"
    abbreviation = name.strip("<>").encode("ascii") + b"\0"

    def header(chars: int) -> bytes:
        # isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        return b"TZif" + version + bytes(15) + struct.pack(">6L", 0, 0, 0, 0, 1, chars)

    version1 = header(1) + struct.pack(">lBB", 0, 0, 0) + b"\0"  # minimal, as zic -b slim
    version2 = header(len(abbreviation)) + struct.pack(">lBB", utc_offset, 0, 0) + abbreviation
    return version1 + version2 + b"\n" + rule.encode("ascii") + b"\n"


def _name_shaped(name: str) -> bool:
    """Whether a name can be looked up: no empty, '.' or '..' parts, no NUL."""
    parts = name.split("/")
    return all(parts) and not {".", ".."} & set(parts) and "\0" not in name


def _is_zone_name(name: str) -> bool:
    try:
        return _name_shaped(name) and _named(name) is not None
    except ZoneError:
        return False


def _first_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline(256).strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _same_bytes(name: str, path: str) -> bool:
    """Whether the system zone data's file for `name` holds exactly what `path` holds."""
    for directory in zoneinfo.TZPATH:  # read now: reset_tzpath() rebinds it
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            try:
                with open(candidate, "rb") as ours, open(path, "rb") as theirs:
                    return ours.read(_MAX_TZIF_BYTES) == theirs.read(_MAX_TZIF_BYTES)
            except OSError:
                return False
    return False


def parse_instant(text: str, zone_name: str) -> float:
    """Epoch seconds of an ISO 8601 time; one without an offset is read in the zone.
    ValueError if `text` is not such a time."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=load_zone(zone_name))
    return moment.timestamp()
