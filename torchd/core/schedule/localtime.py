"""Wall-clock time in a zone against instants, with DST gaps and repeated hours explicit.

A wall time is counted in whole "wall seconds" since 1970-01-01 00:00 on the zone's clock
face; an instant is epoch seconds. Most wall times show once; one in a spring-forward gap
never shows; one in a fall-back hour shows twice.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache

DAY = 86400
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_WALL_EPOCH = datetime(1970, 1, 1)  # a clock face: deliberately naive


_NEVER_CHANGING = re.compile(
    r"(Etc/)?(UTC|UCT|Universal|Zulu|GMT|GMT[+-]?0|Greenwich)|Etc/GMT[+-][0-9]{1,2}")


@lru_cache(maxsize=64)
def fixed_offset(zone: tzinfo) -> int | None:
    """The offset of a zone that never changes it (UTC and the Etc/GMT zones), else None."""
    if isinstance(zone, timezone) or _NEVER_CHANGING.fullmatch(str(zone)):
        return offset_at(zone, 0)
    return None


def offset_at(zone: tzinfo, instant: float) -> int:
    """The zone's UTC offset in seconds at an instant."""
    offset = datetime.fromtimestamp(instant, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def wall_seconds(year: int, month: int, day: int, time_of_day: int) -> int:
    return (date(year, month, day).toordinal() - EPOCH_ORDINAL) * DAY + time_of_day


def wall_date(wall: int) -> tuple[date, int]:
    """The date and second of the day of a wall time."""
    days, time_of_day = divmod(wall, DAY)
    return date.fromordinal(days + EPOCH_ORDINAL), time_of_day


def wall_offsets(zone: tzinfo, wall: int) -> tuple[int, int]:
    """The offsets a wall time is read with before (fold 0) and after (fold 1) a change.
    Equal: it shows once. First larger: it shows twice (fall back). First smaller: it
    never shows (spring-forward gap)."""
    local = (_WALL_EPOCH + timedelta(seconds=wall)).replace(tzinfo=zone)
    before, after = local.utcoffset(), local.replace(fold=1).utcoffset()
    if before is None or after is None:
        return 0, 0
    return int(before.total_seconds()), int(after.total_seconds())


def first_change(zone: tzinfo, low: int, high: int) -> int:
    """The first instant in (low, high] whose offset differs from low's, when high's
    differs (binary search; zones change offset on whole seconds)."""
    base = offset_at(zone, low)
    while high - low > 1:
        middle = (low + high) // 2
        if offset_at(zone, middle) == base:
            low = middle
        else:
            high = middle
    return high


def change_between(zone: tzinfo, start: int, end: int, offset: int) -> int | None:
    """The first instant in (start, end] where the offset stops being `offset`, or None.
    Probes daily, so two changes within one day of each other would go unseen; no zone
    has had that."""
    probe = start
    while probe < end:
        following = min(probe + DAY, end)
        if offset_at(zone, following) != offset:
            return first_change(zone, probe, following)
        probe = following
    return None


def first_instant(zone: tzinfo, wall: int) -> int:
    """The earliest instant a wall time shows; for a time in a gap, the instant the gap
    ends (the clock jumps over it there)."""
    before, after = wall_offsets(zone, wall)
    if before >= after:
        return wall - before
    # In a gap: read with the old offset it lands after the change, with the new before.
    return first_change(zone, wall - after, wall - before)


def repeat_end(zone: tzinfo, instant: float) -> float | None:
    """If the instant is in the second showing of a repeated hour, the wall time at which
    the repetition ends; else None."""
    local = datetime.fromtimestamp(instant, zone)
    if not local.fold:
        return None
    before, after = wall_offsets(zone, int(instant + offset_at(zone, instant)))
    change = first_change(zone, int(instant) - (before - after), int(instant))
    return float(change + before)
