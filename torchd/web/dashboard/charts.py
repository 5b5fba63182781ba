"""Charts as SVG drawn on the server: here the geometry, in the template the elements
(autoescaped like everything else). No JavaScript."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchd.web.dashboard.shown import Shown

WIDTH, HEIGHT, GAP = 600, 120, 2
AXIS = 14  # px under the bars for the scale's text
MIN_SLOTS = 40  # a few runs get narrow bars, not wide blocks


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # the outcome's class
    title: str  # what a hover shows
    href: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    top: str  # the longest duration, written
    median_y: float | None  # where the typical duration's line goes
    median: str


def duration_chart(runs: list[dict[str, Any]], typical: float | None,
                   shown: Shown) -> Chart | None:
    """Bars of the runs' durations, oldest left; None when no run has one."""
    timed = [r for r in reversed(runs) if r.get("duration") is not None]
    if not timed:
        return None
    longest = max(*(r["duration"] for r in timed), 0.001)
    step = WIDTH / max(len(timed), MIN_SLOTS)
    plot = HEIGHT - AXIS
    bars = []
    for index, run in enumerate(timed):
        height = max(run["duration"] / longest * plot, 1.0)
        bars.append(Bar(x=round(index * step, 1), y=round(plot - height, 1),
                        width=round(max(step - GAP, 1.0), 1), height=round(height, 1),
                        css=shown.outcome_class(run["outcome"]),
                        title=f"{shown.at(run['at'])}: {run['outcome'] or 'running'}, "
                              f"{shown.span(run['duration'])}",
                        href=f"/runs/{run['run_id']}"))
    median_y = None if typical is None else round(plot - typical / longest * plot, 1)
    return Chart(width=WIDTH, height=HEIGHT, bars=bars, top=shown.span(longest),
                 median_y=median_y, median=shown.span(typical))
