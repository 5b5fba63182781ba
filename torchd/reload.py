"""The reload diff: old config vs new, by task name. Pure."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter

from torchd.model import Config, TaskSpec

_COMPARED = tuple(f.name for f in fields(TaskSpec) if f.compare and f.name != "name")
_COMPARED_VALUES = attrgetter(*_COMPARED)  # one C call per spec, not one getattr per field


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadPlan:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    changed_fields: dict[str, tuple[str, ...]]  # task -> the keys that differ

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def as_dict(self) -> dict[str, object]:
        return {
            "added": list(self.added),
            "changed": {name: list(self.changed_fields[name]) for name in self.changed},
            "removed": list(self.removed),
            "unchanged": len(self.unchanged),
        }


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
