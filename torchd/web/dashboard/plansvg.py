"""The daily plan drawn as one SVG, on the server, from the `timeline` reply.

Time runs left to right, a column per slot: the past window's runs left of the now line,
coloured by their worst outcome in the slot; the next window's fires right of it, darker
the more fires a slot has (a full slot, with more fires than were counted, darkest). A
slot where a fire is due while the task's run before it would still be going (at its
longest run of the past window) is outlined in red. Across the top, the fires of the
page's tasks per slot; a busy slot (at least BUSY_FACTOR times the average, and BUSY_MIN
fires) is shaded across every row. Neighbouring slots that look the same are one
rectangle, so a per-second task is one, not thousands.

Every element carries data attributes (task, slot, count, outcome) and a <title> (the
tooltip), so the picture reads without JavaScript and tests read it as XML."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from torchd.core.timefmt import from_iso
from torchd.core.timeline import SLOT_CAP, Slots

LABEL = 220  # px: the task names' column
PX = 2  # px per slot
ROW = 16  # px per task row
TOP = 58  # px: the axis and the page's fire counts
BUSY_FACTOR = 3.0
BUSY_MIN = 10
# Worst first: a slot's runs take the colour of the worst outcome among them.
OUTCOME_COLOURS = {
    "failed": "#c62828", "timeout": "#ad1457", "start-error": "#6a1b9a", "lost": "#4e342e",
    "killed": "#ef6c00", "missed": "#f9a825", "dropped": "#fbc02d", "skipped": "#bdbdbd",
    "running": "#1565c0", "ok": "#2e7d32",
}
FIRE_COLOUR = "#1e88e5"
BUSY_COLOUR = "#fff3e0"
OVERLAP_COLOUR = "#d32f2f"


@dataclass(frozen=True, slots=True)
class Frame:
    """Where things go: slots `first`..`last` across, one row per task."""

    slots: Slots
    first: int
    last: int
    now: float
    zone: tzinfo

    def x(self, slot: int) -> int:
        return LABEL + (slot - self.first) * PX

    @property
    def width(self) -> int:
        return self.x(self.last + 1) + 8


def busy_slots(reply: dict[str, Any]) -> tuple[dict[int, int], set[int], int]:
    """The page's fires per slot, the busy slots, and the threshold they reach."""
    total: dict[int, int] = {}
    for row in reply["tasks"]:
        for slot, count in row["fires"]:
            total[slot] = total.get(slot, 0) + count
    future = reply["last"] + 1  # slots 0..last
    mean = sum(total.values()) / future if future > 0 else 0.0
    threshold = max(BUSY_MIN, round(BUSY_FACTOR * mean + 0.4999))
    return total, {slot for slot, count in total.items() if count >= threshold}, threshold


def draw(reply: dict[str, Any], zone: tzinfo) -> Markup:
    """The SVG of one page of the plan (times on the axis in `zone`)."""
    now = from_iso(reply["now"])
    frame = Frame(Slots(from_iso(reply["origin"]), reply["slot"]), reply["first"],
                  reply["last"], now, zone)
    total, busy, threshold = busy_slots(reply)
    height = TOP + ROW * len(reply["tasks"]) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plan" role="img" '
             f'viewBox="0 0 {frame.width} {height}" width="{frame.width}" height="{height}" '
             f'data-origin="{frame.slots.origin:.0f}" data-now="{now:.3f}" '
             f'data-slot="{reply["slot"]}" '
             f'data-first="{frame.first}" data-last="{frame.last}" data-px="{PX}" '
             f'data-label="{LABEL}" data-busy="{threshold}">',
             "<title>The past runs and next fires of the tasks below</title>"]
    parts.extend(_busy_bands(frame, busy, height))
    parts.extend(_axis(frame, height))
    parts.extend(_page_counts(frame, total, busy, threshold))
    for index, row in enumerate(reply["tasks"]):
        parts.extend(_row(frame, row, TOP + index * ROW))
    now_x = LABEL + (now - frame.slots.start(frame.first)) / frame.slots.width * PX
    parts.append(f'<line class="now" x1="{now_x:.1f}" x2="{now_x:.1f}" y1="14" '
                 f'y2="{height}" stroke="#111827" stroke-width="1"><title>now</title></line>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value in it is escaped or a number


def _busy_bands(frame: Frame, busy: set[int], height: int) -> Iterator[str]:
    for start, end in _runs_of(sorted(busy)):
        yield (f'<rect class="busy" x="{frame.x(start)}" y="{TOP - 20}" '
               f'width="{(end - start + 1) * PX}" height="{height - TOP + 20}" '
               f'fill="{BUSY_COLOUR}" data-slot="{start}" data-slots="{end - start + 1}"/>')


def _axis(frame: Frame, height: int) -> Iterator[str]:
    start = frame.slots.start(frame.first)
    end = frame.slots.start(frame.last + 1)
    hours = (end - start) / 3600
    step = next((s for s in (1, 2, 3, 6, 12, 24) if hours / s <= 18), 24)
    quarter = 900
    t = (int(start) // quarter + 1) * quarter
    while t < end:
        moment = datetime.fromtimestamp(t, frame.zone)
        if moment.minute == 0 and moment.hour % step == 0:
            x = LABEL + (t - start) / frame.slots.width * PX
            label = moment.strftime("%a %H:%M" if moment.hour == 0 else "%H:%M")
            yield (f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="14" y2="{height}" '
                   f'stroke="#e5e7eb" stroke-width="1"/>'
                   f'<text x="{x:.1f}" y="11" font-size="10" text-anchor="middle">'
                   f"{escape(label)}</text>")
        t += quarter
    yield (f'<text x="4" y="11" font-size="10" fill="#6b7280">'
           f"{escape(datetime.fromtimestamp(frame.now, frame.zone).tzname() or '')}</text>")


def _page_counts(frame: Frame, total: dict[int, int], busy: set[int],
                 threshold: int) -> Iterator[str]:
    """The page's fires per slot as bars above the rows."""
    yield (f'<text x="4" y="{TOP - 6}" font-size="11" fill="#6b7280">fires, these tasks '
           f"(busy: {threshold}+)</text>")
    peak = max(total.values(), default=0)
    for slot, count in sorted(total.items()):
        bar = max(1, round(18 * count / peak))
        colour = OVERLAP_COLOUR if slot in busy else FIRE_COLOUR
        when = _when(frame, slot)
        yield (f'<rect class="load{" busy-slot" if slot in busy else ""}" '
               f'x="{frame.x(slot)}" y="{TOP - 2 - bar}" width="{PX}" height="{bar}" '
               f'fill="{colour}" data-slot="{slot}" data-count="{count}">'
               f"<title>{escape(when)}: {count} fire{'s' if count != 1 else ''}"
               f"{' (busy)' if slot in busy else ''}</title></rect>")


def _row(frame: Frame, row: dict[str, Any], y: int) -> Iterator[str]:
    name = row["name"]
    label = name if len(name) <= 32 else name[:31] + "…"
    grey = "" if row["active"] else ' fill="#9ca3af"'  # not fired on this host
    yield (f'<a href="/tasks/{escape(quote(name, safe=""))}"><text class="task" '
           f'data-task="{escape(name)}" x="4" y="{y + ROW - 4}" font-size="11"{grey}>'
           f"<title>{escape(name)} ({escape(row['schedule'] or 'no schedule')})</title>"
           f"{escape(label)}</text></a>")
    yield (f'<line x1="{LABEL}" x2="{frame.x(frame.last + 1)}" y1="{y + ROW}" y2="{y + ROW}" '
           f'stroke="#f3f4f6" stroke-width="1"/>')
    task = escape(name)
    yield from _past(frame, row, y, task)
    yield from _future(frame, row, y, task)


def _past(frame: Frame, row: dict[str, Any], y: int, task: Markup) -> Iterator[str]:
    by_slot: dict[int, dict[str, int]] = {}
    for slot, outcome, count in row["runs"]:
        by_slot.setdefault(slot, {})[outcome] = count
    shown = [(slot, _worst(counts)) for slot, counts in sorted(by_slot.items())]
    for start, end, outcome in _spans(shown):
        counts: dict[str, int] = {}
        for slot in range(start, end + 1):
            for key, value in by_slot.get(slot, {}).items():
                counts[key] = counts.get(key, 0) + value
        told = ", ".join(f"{value} {key}" for key, value in sorted(counts.items()))
        yield (f'<rect class="run outcome-{escape(outcome)}" x="{frame.x(start)}" '
               f'y="{y + 3}" width="{(end - start + 1) * PX}" height="{ROW - 6}" '
               f'fill="{OUTCOME_COLOURS.get(outcome, "#757575")}" data-task="{task}" '
               f'data-slot="{start}" data-slots="{end - start + 1}" '
               f'data-outcome="{escape(outcome)}"><title>{task}: '
               f"{escape(_span_text(frame, start, end))}: {escape(told)}</title></rect>")


def _future(frame: Frame, row: dict[str, Any], y: int, task: Markup) -> Iterator[str]:
    full = set(row["full"])
    overlaps = set(row["overlaps"])
    shown = [(slot, (min(count, SLOT_CAP) if slot not in full else SLOT_CAP + 1,
                     slot in overlaps)) for slot, count in row["fires"]]
    for start, end, (count, overlap) in _spans(shown):
        shade = 0.35 + 0.65 * min(count, SLOT_CAP) / SLOT_CAP
        many = f"more than {SLOT_CAP}" if count > SLOT_CAP else str(count)
        each = " each" if end > start else ""
        late = ", due while the run before would still go" if overlap else ""
        outline = (f' stroke="{OVERLAP_COLOUR}" stroke-width="1.5"' if overlap else "")
        kinds = ("fire" + (" overlap" if overlap else "")
                 + (" full" if count > SLOT_CAP else ""))
        yield (f'<rect class="{kinds}" '
               f'x="{frame.x(start)}" y="{y + 3}" width="{(end - start + 1) * PX}" '
               f'height="{ROW - 6}" fill="{FIRE_COLOUR}" fill-opacity="{shade:.2f}"{outline} '
               f'data-task="{task}" data-slot="{start}" data-slots="{end - start + 1}" '
               f'data-count="{count if count <= SLOT_CAP else SLOT_CAP}">'
               f"<title>{task}: {escape(_span_text(frame, start, end))}: {many} "
               f"fire{'s' if count != 1 else ''}{each}{late}</title></rect>")


def _worst(counts: dict[str, int]) -> str:
    return next((outcome for outcome in OUTCOME_COLOURS if outcome in counts),
                min(counts))


def _spans(cells: list[tuple[int, Any]]) -> Iterator[tuple[int, int, Any]]:
    """Neighbouring slots with the same look as one (start, end, look)."""
    start = end = None
    look: Any = None
    for slot, value in cells:
        if start is not None and end is not None and slot == end + 1 and value == look:
            end = slot
            continue
        if start is not None and end is not None:
            yield start, end, look
        start = end = slot
        look = value
    if start is not None and end is not None:
        yield start, end, look


def _runs_of(slots: list[int]) -> Iterator[tuple[int, int]]:
    for start, end, _ in _spans([(slot, True) for slot in slots]):
        yield start, end


def _when(frame: Frame, slot: int) -> str:
    return datetime.fromtimestamp(frame.slots.start(slot), frame.zone).strftime("%H:%M")


def _span_text(frame: Frame, start: int, end: int) -> str:
    return f"{_when(frame, start)} to {_when(frame, end + 1)}"
