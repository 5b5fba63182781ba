"""The `list` reply, made from `status`'s task snapshots: per task its next fire (or why
there is none), its last run and its schedule, ordered like `systemctl list-timers`. Pure.

Times are compared as text: the JSON form (`core.timefmt.iso_utc`) sorts as time does.
"""

from __future__ import annotations

from typing import Any

from torchd.control.verbs import LastRun, ListRow
from torchd.core.nofire import NoFire, no_fire


def idle_reason(task: dict[str, Any]) -> str | None:
    """Why a task has no next fire, in a few words; None when it has one."""
    cause = no_fire(enabled=task["enabled"], for_this_host=task["for_this_host"],
                    paused=task["paused"], daemon=task["type"] == "daemon",
                    at_start=task["schedule"] == "@reboot", after=bool(task.get("upstreams")),
                    has_next=bool(task["next_fire"]))
    if cause is NoFire.DAEMON:
        window = task.get("window")
        if window and not window.get("open"):
            return f"window closed, opens {window.get('next_opening') or 'never'}"
    if cause is NoFire.AFTER:
        return f"after {', '.join(task['upstreams'])}"
    return None if cause is None else cause.value


def last_run(task: dict[str, Any]) -> LastRun | None:
    """The latest of: the run going on, the last run that ended, the last start error."""
    found: list[LastRun] = []
    if task["running_since"]:
        found.append({"at": task["running_since"], "outcome": "running", "exit_code": None,
                      "signal": None, "error": None})
    ended = task["last_run"]
    if ended:
        found.append({"at": ended["started"], "outcome": ended["outcome"],
                      "exit_code": ended["exit_code"], "signal": ended["signal"],
                      "error": None})
    if task["last_start_error_at"]:
        found.append({"at": task["last_start_error_at"], "outcome": "start-error",
                      "exit_code": None, "signal": None, "error": task["last_start_error"]})
    return max(found, key=lambda last: last["at"], default=None)


def list_rows(tasks: list[dict[str, Any]]) -> list[ListRow]:
    """One row per task: those with a next fire first, soonest first; then the others by
    name."""
    rows: list[ListRow] = []
    for task in tasks:
        idle = idle_reason(task)
        rows.append({"name": task["name"], "next_fire": None if idle else task["next_fire"],
                     "idle": idle, "last": last_run(task), "schedule": task["schedule"],
                     "timezone": task["timezone"]})
    rows.sort(key=lambda row: (row["next_fire"] is None, row["next_fire"] or "", row["name"]))
    return rows
