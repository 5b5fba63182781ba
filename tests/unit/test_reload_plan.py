"""How the daemon's log names what a reload changed."""

from __future__ import annotations

from torchd.core.reloadplan import NAMES_IN_A_LINE, ReloadPlan, describe


def test_a_reload_line_names_the_tasks_up_to_a_limit() -> None:
    added = tuple(f"t{i}" for i in range(NAMES_IN_A_LINE + 3))
    plan = ReloadPlan(added=added, changed=("b",), removed=(), unchanged=("c",),
                      changed_fields={"b": ("schedule", "command")})
    shown = "; ".join(added[:NAMES_IN_A_LINE])
    assert describe(plan) == (f"{len(added)} added ({shown} and 3 more), "
                              "1 changed (b: schedule, command), 0 removed")
