"""The reload diff: old config vs new, by task name. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import attrgetter

from torchd.core.model import Config, TaskSpec

# Applying a plan holds the loop: admitting 10,000 tasks at start takes 40-70 ms, and a
# reload also retires the old ones; 10 µs a task leaves a margin. Below WORTH_WAITING the
# apply goes ahead at once.
APPLY_SECONDS_PER_TASK = 10e-6
WORTH_WAITING = 0.005
AFTER_FIRE = 0.005  # how long after the fire's instant to apply: its batch starts first

_COMPARED = tuple(f.name for f in fields(TaskSpec) if f.compare and f.name != "name")
_COMPARED_VALUES = attrgetter(*_COMPARED)  # one C call per spec, not one getattr per field


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadPlan:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    changed_fields: dict[str, tuple[str, ...]]  # task -> the keys that differ

    def as_dict(self) -> dict[str, object]:
        return {
            "added": list(self.added),
            "changed": {name: list(self.changed_fields[name]) for name in self.changed},
            "removed": list(self.removed),
            "unchanged": len(self.unchanged),
        }


NAMES_IN_A_LINE = 10  # a log line names this many tasks of each kind, then counts the rest


def describe(plan: ReloadPlan) -> str:
    """A log line's account of a plan: `1 added (a), 1 changed (b: schedule), 0 removed`,
    naming at most NAMES_IN_A_LINE tasks of each kind."""
    changed = [f"{name}: {', '.join(plan.changed_fields[name])}"
               for name in plan.changed[:NAMES_IN_A_LINE]]  # 10,000 would cost the loop
    return ", ".join(f"{count} {verb}{_named(shown, count)}" for verb, shown, count in (
        ("added", plan.added[:NAMES_IN_A_LINE], len(plan.added)),
        ("changed", changed, len(plan.changed)),
        ("removed", plan.removed[:NAMES_IN_A_LINE], len(plan.removed))))


def _named(shown: Sequence[str], count: int) -> str:
    if not count:
        return ""
    more = count - len(shown)
    return f" ({'; '.join(shown)}{f' and {more} more' if more > 0 else ''})"


def changed_fields(old: TaskSpec, new: TaskSpec) -> tuple[str, ...]:
    return tuple(name for name, before, after in
                 zip(_COMPARED, _COMPARED_VALUES(old), _COMPARED_VALUES(new), strict=True)
                 if before != after)


def plan(old: Config | None, new: Config) -> ReloadPlan:
    before = old.by_name() if old is not None else {}
    after = new.by_name()
    added, changed, unchanged = [], [], []
    diffs: dict[str, tuple[str, ...]] = {}
    for name, spec in after.items():
        previous = before.get(name)
        if previous is None:
            added.append(name)
        elif previous is spec:  # reused by the parse cache
            unchanged.append(name)
        else:
            differing = changed_fields(previous, spec)
            if differing:
                changed.append(name)
                diffs[name] = differing
            else:
                unchanged.append(name)
    removed = [name for name in before if name not in after]
    return ReloadPlan(added=tuple(added), changed=tuple(changed), removed=tuple(removed),
                      unchanged=tuple(unchanged), changed_fields=diffs)


def apply_delay(diff: ReloadPlan, next_due: float | None, now: float) -> float:
    """Seconds to wait before applying `diff` so that it does not hold the loop through the
    next fire's instant: 0 when the apply is short or fits before that fire, else until
    just after it."""
    needed = (len(diff.added) + len(diff.changed) + len(diff.removed)) * APPLY_SECONDS_PER_TASK
    if needed < WORTH_WAITING or next_due is None or next_due - now > needed:
        return 0.0
    return max(next_due - now, 0.0) + AFTER_FIRE
