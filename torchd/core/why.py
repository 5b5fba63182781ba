"""Why a task's fire did or did not run (`torchd why`): pure reasoning over plain rows.

The caller reads the history (the task's run records, the daemon's loads and stops, the
pauses of the audit) and the task file; this module joins them for one scheduled instant
and says what happened, most telling first: a record of the fire itself (ran, skipped,
dropped, missed, retried), else the daemon was down, the task was not in the file, not
active here, paused, or (with `run_on: one`) run by another host. For the future: the next
fire, or why there is none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchd.core.model import RunOutcome, fire_id
from torchd.core.nofire import NoFire, no_fire

Show = Callable[[float], str]  # how a time is written in a reason


@dataclass(frozen=True, slots=True)
class Session:
    """A daemon's life as the loads table tells: from its start to its stop; `end` None
    with `clean` False when it ended without a stop record (killed), `last_seen` then being
    its last record."""

    start: float
    end: float | None
    clean: bool
    last_seen: float
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What happened to one fire: a verdict word and a sentence, with the records used."""

    instant: float
    fire_id: str
    verdict: str  # ran | running | failed | skipped | dropped | missed | down | absent |
    #               inactive | paused | elsewhere | unknown | next | none
    reason: str
    records: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"instant": self.instant, "fire_id": self.fire_id, "verdict": self.verdict,
                "reason": self.reason, "records": self.records}


def sessions(loads: Sequence[dict[str, Any]]) -> list[Session]:
    """Each daemon's start to stop, from the loads rows (oldest first; a row of another
    kind, such as `seen`, tells when the running daemon was last at work)."""
    found: list[Session] = []
    start: float | None = None
    pid: int | None = None
    seen = 0.0
    for row in loads:
        kind, at = row["kind"], float(row["at"])
        if kind == "start":
            if start is not None:
                found.append(Session(start, None, False, seen, pid))
            start, pid, seen = at, row.get("pid"), at
        elif kind == "stop" and start is not None:
            found.append(Session(start, at, True, at, pid))
            start = None
        else:
            seen = max(seen, at)
    if start is not None:
        found.append(Session(start, None, False, seen, pid))
    return found


def down_around(instant: float,
                lives: Sequence[Session]) -> tuple[float, float | None, bool] | None:
    """(down from, up again at or None, the stop was recorded) when no daemon ran at
    `instant` after one had; None when one ran, or none had been recorded before."""
    before = [s for s in lives if s.start <= instant]
    if not before:
        return None
    last = before[-1]
    after = [s.start for s in lives if s.start > instant]
    up_again = after[0] if after else None
    if last.clean and last.end is not None and last.end < instant:
        return last.end, up_again, True
    if not last.clean and up_again is not None:  # killed: down from its last record
        return last.last_seen, up_again, False
    return None


def membership(loads: Sequence[dict[str, Any]], task: str,
               instant: float) -> tuple[bool | None, str | None, float | None]:
    """(in the file, why inactive here or None, when that last changed) at `instant`, by
    replaying the starts and reloads before it; (None, None, None) when none is recorded."""
    present: bool | None = None
    inactive: str | None = None
    changed_at: float | None = None
    for row in loads:
        if float(row["at"]) > instant:
            break
        if row["kind"] not in ("start", "reload"):
            continue
        was = present
        if row["kind"] == "start":
            present = task in row["added"]
        elif task in row["added"]:
            present = True
        elif task in row["removed"]:
            present = False
        if present != was:
            changed_at = float(row["at"])
        inactive = (row.get("inactive") or {}).get(task) if present else None
    return present, inactive, changed_at


def paused_at(pauses: Sequence[dict[str, Any]], instant: float) -> float | None:
    """When the pause in force at `instant` began (audit rows, oldest first), or None."""
    since: float | None = None
    for row in pauses:
        if float(row["at"]) > instant:
            break
        if row["action"] == "pause":
            since = since if since is not None else float(row["at"])
        else:
            since = None
    return since


def _run_text(row: dict[str, Any]) -> str:
    what = row["outcome"]
    detail = []
    if row.get("exit_code") is not None:
        detail.append(f"exit {row['exit_code']}")
    if row.get("signal") is not None:
        detail.append(f"signal {row['signal']}")
    if row.get("duration") is not None:
        detail.append(f"{row['duration']:.3f}s")
    if row.get("reason") and what not in ("ok",):
        detail.append(str(row["reason"]))
    text = f"run {row['run_id']} on {row.get('host') or '?'}: {what}"
    return f"{text} ({', '.join(detail)})" if detail else text


def from_records(instant: float, fid: str, rows: Sequence[dict[str, Any]]) -> Answer | None:
    """The answer the fire's own records give (its run, its attempts, a skip, a drop), or
    None when there is none."""
    mine = [r for r in rows if r.get("fire_id") == fid]
    if not mine:
        return None
    mine.sort(key=lambda r: (r.get("attempt") or 0, r["at"]))
    last = mine[-1]
    outcome = last.get("outcome")
    if outcome in ("skipped", "dropped", "missed"):
        verb = {"skipped": "skipped", "dropped": "dropped from the queue",
                "missed": "missed"}[outcome]
        return Answer(instant, fid, outcome, f"{verb}: {last.get('reason') or '?'}", mine)
    if outcome is None:
        return Answer(instant, fid, "running", f"running: run {last['run_id']} on "
                      f"{last.get('host') or '?'}", mine)
    attempts = [r for r in mine
                if r.get("started") is not None or r["outcome"] == RunOutcome.START_ERROR]
    retried = f" after {len(attempts)} attempts" if len(attempts) > 1 else ""
    verdict = "ran" if outcome == "ok" else "failed"
    return Answer(instant, fid, verdict, f"ran{retried}: {_run_text(last)}", mine)


def _missed_covering(instant: float, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    for row in rows:
        if row.get("outcome") != "missed":
            continue
        first = row.get("missed_from")
        first = row["scheduled"] if first is None else first
        if first <= instant <= row["scheduled"]:
            return row
    return None


def explain(task: str, instant: float, *, rows: Sequence[dict[str, Any]],
            loads: Sequence[dict[str, Any]], pauses: Sequence[dict[str, Any]],
            run_on_one: bool, show: Show, catchup: str = "",
            claims: Sequence[dict[str, Any]] = (), fid: str | None = None) -> Answer:
    """Why the fire of `task` at `instant` (a past scheduled instant) ran or did not.
    `catchup` (e.g. `catchup: none`) is added to a missed fire's reason. `fid`: the fire's
    id when it is not TASK@INSTANT (a downstream's fire is named after its upstream run)."""
    policy = f" ({catchup})" if catchup else ""
    fid = fid or fire_id(task, instant)
    found = from_records(instant, fid, rows)
    if found is not None and found.verdict != "missed":  # a missed one: was the daemon down?
        return found
    claim = next((c for c in claims if c.get("fire_id") == fid), None)
    if claim is not None:
        holder = claim.get("holder")
        return Answer(instant, fid, "elsewhere", (
            f"not run here: claimed and run by host {holder} (run_on: one; its history has "
            "the run)" if holder else "not run: the cluster had already run a later fire of "
            "the task (run_on: one)"), [claim])
    missed = _missed_covering(instant, rows)
    lives = sessions(loads)
    down = down_around(instant, lives)
    if down is not None:
        start, up, clean = down
        until = f"to {show(up)}" if up is not None else "and has not started since"
        how = "stopped" if clean else "ended without a stop record (killed?) after"
        reason = f"missed: the daemon was down: {how} {show(start)} {until}"
        if missed is not None:
            reason += f"; at its start: {missed.get('reason')}{policy}"
        elif up is None:
            reason += f"; its next start settles the missed fires{policy}"
        return Answer(instant, fid, "down", reason, [missed] if missed else [])
    if missed is not None:
        return Answer(instant, fid, "missed", f"missed: {missed.get('reason')}{policy}",
                      [missed])
    if not lives or instant < lives[0].start:
        return Answer(instant, fid, "unknown", "no record: before the first daemon start the "
                      "history has (it records loads since this version)", [])
    present, inactive, changed = membership(loads, task, instant)
    if present is False:
        since = f" (not in it since {show(changed)})" if changed is not None else ""
        return Answer(instant, fid, "absent", f"not run: the task was not in the file at "
                      f"that time{since}", [])
    if inactive is not None:
        return Answer(instant, fid, "inactive", f"not run: {inactive} at that time", [])
    pause = paused_at(pauses, instant)
    if pause is not None:
        return Answer(instant, fid, "paused", f"not run: paused since {show(pause)}", [])
    if run_on_one:
        return Answer(instant, fid, "elsewhere", "not run here: run_on: one and no record on "
                      "this host: another host likely claimed it (its history has the run)",
                      [])
    changed_by = next((float(r["at"]) for r in loads if r["kind"] == "reload"
                       and float(r["at"]) > instant and task in (r.get("changed") or ())), None)
    if changed_by is not None:  # the instant comes from the schedule as it is now
        return Answer(instant, fid, "unknown", "no record of this fire: the task was changed "
                      f"by the reload at {show(changed_by)}, and its schedule before may not "
                      "have had this instant", [])
    return Answer(instant, fid, "unknown", "no record of this fire (pruned from the history, "
                  "or added by a reload after it)", [])


# What `why` says for each reason there is no next fire (core.nofire has their order).
NO_FIRE_SAYS = {
    NoFire.DISABLED: "no next fire: the task is disabled (enabled: false)",
    NoFire.NOT_HERE: "no next fire here: the task is not for this host (hosts:)",
    NoFire.PAUSED: "no next fire: the task is paused (torchd resume)",
    NoFire.DAEMON: "daemon task: kept running, no schedule",
    NoFire.AT_START: "no next fire: @reboot runs once, when the daemon starts",
}


# An upstream run that counts for an edge with `on:` this, as `why` names it.
COUNTED_RUN = {"success": "success", "failure": "failure", "always": "run"}


def explain_future(task: str, *, next_fire: float | None, enabled: bool, for_this_host: bool,
                   paused: bool, kind: str, at_start: bool, after: Sequence[str],
                   on: str = "success", upstream_last: float | None, bounded: str | None,
                   show: Show) -> Answer:
    """The next fire, or why there is none: disabled, not for this host, paused, a daemon
    task, @reboot, fired by upstreams (`upstream_last`: when the latest upstream run that
    counts for `on` ended), or its schedule ended (`bounded` says how)."""
    cause = no_fire(enabled=enabled, for_this_host=for_this_host, paused=paused,
                    daemon=kind == "daemon", at_start=at_start, after=bool(after),
                    has_next=next_fire is not None)
    if cause is None:
        assert next_fire is not None  # noqa: S101 - no_fire says so
        return Answer(next_fire, fire_id(task, next_fire), "next", "next fire", [])
    if cause is NoFire.AFTER:
        counted = COUNTED_RUN[on]
        last = (f"the last upstream {counted} ended at {show(upstream_last)}"
                if upstream_last is not None else f"no upstream {counted} yet")
        reason = f"fires when its upstreams end ({', '.join(after)}): {last}"
    elif cause is NoFire.ENDED:
        reason = f"no next fire: {bounded or 'the schedule has no more fires'}"
    else:
        reason = NO_FIRE_SAYS[cause]
    return Answer(next_fire or 0.0, "", "none", reason, [])
