"""`list`: the daemon's tasks by next fire, with their last run, like `systemctl
list-timers` (the order and the reasons are the daemon's: control.listing)."""

from __future__ import annotations

import argparse
import json
import time

from torchd.cli.common import (
    EXIT_OK,
    call,
    not_running,
    outcome_text,
    print_table,
    resolve_state_dir,
    text_zone,
)
from torchd.core.timefmt import from_iso, local_iso, relative

HEADER = ("NEXT", "LEFT", "LAST", "PASSED", "TASK", "OUTCOME", "SCHEDULE")


def cmd_list(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    reply = call(state_dir, "list", timeout=30)  # a ControlError: main says it, exits 1
    if reply is None:
        return not_running(state_dir)
    if args.json:
        print(json.dumps(reply["tasks"], indent=2))
        return EXIT_OK
    now = time.time()
    rows = [HEADER]
    for task in reply["tasks"]:
        zone = text_zone(task["timezone"], args.utc)
        next_fire, left = "-", task["idle"] or "-"
        if task["next_fire"]:
            at = from_iso(task["next_fire"])
            next_fire, left = local_iso(at, zone), relative(at, now)
        last, passed, outcome = "-", "-", "-"
        if task["last"]:
            at = from_iso(task["last"]["at"])
            last, passed = local_iso(at, zone), relative(at, now)
            outcome = task["last"]["outcome"]
            if outcome not in ("running", "start-error"):
                outcome = outcome_text(task["last"])
        rows.append((next_fire, left, last, passed, task["name"], outcome,
                     task["schedule"] or "-"))
    print_table(rows)
    count = len(rows) - 1
    print(f"\n{count} task{'s' if count != 1 else ''} listed.")
    return EXIT_OK
