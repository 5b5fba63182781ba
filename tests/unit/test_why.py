"""core.why: what each combination of records says about one fire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from torchd.cli.why import past_instants
from torchd.core.model import fire_id
from torchd.core.schedule.cronexpr import parse_schedule
from torchd.core.schedule.zones import load_zone
from torchd.core.why import Session, explain, explain_future, membership, paused_at, sessions

T = 1_000_000.0  # the instant asked about


def show(ts: float) -> str:
    return f"t{ts - T:+g}"


def load(at: float, kind: str, added: tuple[str, ...] = (), *,
         removed: tuple[str, ...] = (), changed: tuple[str, ...] = (),
         inactive: dict[str, str] | None = None, pid: int = 1) -> dict[str, Any]:
    return {"at": at, "kind": kind, "pid": pid, "added": list(added), "changed": list(changed),
            "removed": list(removed), "inactive": inactive or {}}


def run(outcome: str | None, *, attempt: int = 1, reason: str | None = None,
        at: float = T, started: bool = True, **extra: Any) -> dict[str, Any]:
    return {"run_id": f"r{attempt}", "fire_id": fire_id("job", T), "scheduled": T, "at": at,
            "started": at if started else None, "outcome": outcome, "attempt": attempt,
            "host": "h1", "reason": reason, "exit_code": 0 if outcome == "ok" else 1,
            "signal": None, "duration": 0.5, **extra}


UP = [load(T - 100, "start", ("job",))]
CASES = [
    pytest.param([run("ok")], UP, [], False, ("ran",
                 "ran: run r1 on h1: ok (exit 0, 0.500s)"), id="ran"),
    pytest.param([run("failed", attempt=1), run("ok", attempt=2)], UP, [], False, ("ran",
                 "ran after 2 attempts: run r2 on h1: ok (exit 0, 0.500s)"), id="retried"),
    pytest.param([run("failed")], UP, [], False, ("failed",
                 "ran: run r1 on h1: failed (exit 1, 0.500s)"), id="failed"),
    pytest.param([run(None)], UP, [], False, ("running", "running: run r1 on h1"),
                 id="running"),
    pytest.param([run("skipped", reason="1 run(s) still running (max_running=1)",
                      started=False)], UP, [], False, ("skipped",
                 "skipped: 1 run(s) still running (max_running=1)"), id="skipped"),
    pytest.param([run("dropped", reason="the queue is full", started=False)], UP, [], False,
                 ("dropped", "dropped from the queue: the queue is full"), id="dropped"),
    pytest.param([], [load(T - 100, "start", ("job",)), load(T - 50, "stop"),
                      load(T + 50, "start", ("job",))], [], False, ("down",
                 "missed: the daemon was down: stopped t-50 to t+50"), id="down-stopped"),
    pytest.param([], [load(T - 100, "start", ("job",)), load(T - 80, "reload"),
                      load(T + 50, "start", ("job",))], [], False, ("down",
                 "missed: the daemon was down: ended without a stop record (killed?) after "
                 "t-80 to t+50"), id="down-killed"),
    pytest.param([{**run("missed", reason="3 fire(s) missed: catchup none", started=False),
                   "fire_id": fire_id("job", T + 20), "scheduled": T + 20,
                   "missed_from": T - 20, "at": T + 50}],
                 [load(T - 100, "start", ("job",)), load(T - 50, "stop"),
                  load(T + 50, "start", ("job",))], [], False, ("down",
                 "missed: the daemon was down: stopped t-50 to t+50; at its start: 3 fire(s) "
                 "missed: catchup none"), id="down-then-caught"),
    pytest.param([], [load(T - 100, "start", ("job",)), load(T - 50, "stop")], [], False,
                 ("down", "missed: the daemon was down: stopped t-50 and has not started "
                 "since; its next start settles the missed fires"),
                 id="down-still"),
    pytest.param([], [load(T - 100, "start", ("other",))], [], False, ("absent",
                 "not run: the task was not in the file at that time (not in it since t-100)"),
                 id="not-in-file"),
    pytest.param([], [load(T - 100, "start", ("job",)), load(T - 10, "reload",
                                                             removed=("job",))],
                 [], False, ("absent", "not run: the task was not in the file at that time "
                 "(not in it since t-10)"), id="removed"),
    pytest.param([], [load(T - 100, "start", ("job",), inactive={"job": "not for this host"})],
                 [], False, ("inactive", "not run: not for this host at that time"),
                 id="other-host"),
    pytest.param([], UP, [{"at": T - 5, "action": "pause", "target": "job"}], False,
                 ("paused", "not run: paused since t-5"), id="paused"),
    pytest.param([], UP, [{"at": T - 5, "action": "pause", "target": "all"},
                          {"at": T - 1, "action": "resume", "target": "all"}], False,
                 ("unknown", "no record of this fire (pruned from the history, or added by a "
                 "reload after it)"), id="resumed"),
    pytest.param([], [load(T - 100, "start", ("job",)), load(T - 10, "reload",
                                                             changed=("job",)),
                      load(T + 10, "reload", changed=("job",)),
                      load(T + 20, "reload", changed=("job",))], [], False,
                 ("unknown", "no record of this fire: the task was changed by the reload at "
                  "t+10, and its schedule before may not have had this instant"),
                 id="changed-after"),
    pytest.param([], UP, [], True, ("elsewhere", "not run here: run_on: one and no record on "
                 "this host: another host likely claimed it (its history has the run)"),
                 id="cluster"),
    pytest.param([], [load(T + 10, "start", ("job",))], [], False, ("unknown",
                 "no record: before the first daemon start the history has (it records "
                 "loads since this version)"), id="before-history"),
]


@pytest.mark.parametrize(("rows", "loads", "pauses", "one", "expected"), CASES)
def test_explain(rows: list[dict[str, Any]], loads: list[dict[str, Any]],
                 pauses: list[dict[str, Any]], one: bool, expected: tuple[str, str]) -> None:
    """Each kind of record (or its absence) gives its verdict and sentence."""
    answer = explain("job", T, rows=rows, loads=loads, pauses=pauses, run_on_one=one,
                     show=show)
    assert (answer.verdict, answer.reason) == expected
    assert answer.fire_id == "job@1970-01-12T13:46:40Z"


def test_sessions_close_a_killed_daemon_at_the_next_start() -> None:
    """A start with no stop before it ends the earlier daemon, uncleanly, at its last
    record."""
    lives = sessions([load(0, "start", pid=1), load(5, "reload", pid=1),
                      load(9, "start", pid=2), load(12, "stop", pid=2)])
    assert lives == [Session(0, None, False, 5, 1), Session(9, 12, True, 12, 2)]


def test_membership_replays_reloads() -> None:
    """Added by a reload, then removed: in the file only in between."""
    loads = [load(0, "start", ("a",)), load(10, "reload", added=("job",)),
             load(20, "reload", removed=("job",))]
    assert membership(loads, "job", 5) == (False, None, 0.0)
    assert membership(loads, "job", 15) == (True, None, 10.0)
    assert membership(loads, "job", 25) == (False, None, 20.0)


def test_a_resume_ends_the_pause() -> None:
    """A pause holds until a resume of the task or of every task."""
    rows = [{"at": 1, "action": "pause", "target": "job"},
            {"at": 3, "action": "resume", "target": "job"}]
    assert (paused_at(rows, 2), paused_at(rows, 4)) == (1.0, None)


FUTURE = [
    pytest.param({"enabled": False}, "no next fire: the task is disabled (enabled: false)",
                 id="disabled"),
    pytest.param({"for_this_host": False},
                 "no next fire here: the task is not for this host (hosts:)", id="host"),
    pytest.param({"paused": True}, "no next fire: the task is paused (torchd resume)",
                 id="paused"),
    pytest.param({"kind": "daemon"}, "daemon task: kept running, no schedule", id="daemon"),
    pytest.param({"at_start": True, "next_fire": None},
                 "no next fire: @reboot runs once, when the daemon starts", id="reboot"),
    pytest.param({"after": ("a", "b")}, "fires when its upstreams end (a, b): no upstream "
                 "success yet", id="after-none"),
    pytest.param({"after": ("a",), "upstream_last": T - 3}, "fires when its upstreams end "
                 "(a): the last upstream success ended at t-3", id="after-ok"),
    pytest.param({"after": ("a",), "on": "failure"}, "fires when its upstreams end (a): "
                 "no upstream failure yet", id="after-failure-none"),
    pytest.param({"after": ("a",), "on": "always", "upstream_last": T - 3},
                 "fires when its upstreams end (a): the last upstream run ended at t-3",
                 id="after-always"),
    pytest.param({"next_fire": None, "bounded": "end_at 2026-01-01T00:00:00.000Z has passed"},
                 "no next fire: end_at 2026-01-01T00:00:00.000Z has passed", id="ended"),
    pytest.param({}, "next fire", id="next"),
]


@pytest.mark.parametrize(("given", "reason"), FUTURE)
def test_explain_future(given: dict[str, Any], reason: str) -> None:
    """The next fire, or the one reason there is none."""
    facts: dict[str, Any] = {"next_fire": T + 60, "enabled": True, "for_this_host": True,
                             "paused": False, "kind": "cron", "at_start": False, "after": (),
                             "upstream_last": None, "bounded": None, **given}
    assert explain_future("job", show=show, **facts).reason == reason


def test_a_missed_fire_names_the_catchup_policy() -> None:
    """A fire missed while the daemon was down says which catch-up policy settled it."""
    loads = [load(T - 100, "start", ("job",)), load(T - 50, "stop"),
             load(T + 50, "start", ("job",))]
    missed = {**run("missed", reason="2 fire(s) missed", started=False),
              "fire_id": fire_id("job", T + 20), "scheduled": T + 20, "missed_from": T,
              "at": T + 50}
    answer = explain("job", T, rows=[missed], loads=loads, pauses=[], run_on_one=False,
                     show=show, catchup="catchup: last, starting_deadline: 60s")
    assert answer.reason == ("missed: the daemon was down: stopped t-50 to t+50; at its "
                             "start: 2 fire(s) missed (catchup: last, starting_deadline: 60s)")


@pytest.mark.parametrize(("holder", "reason"), [
    pytest.param("h2", "not run here: claimed and run by host h2 (run_on: one; its history "
                 "has the run)", id="claimed"),
    pytest.param(None, "not run: the cluster had already run a later fire of the task "
                 "(run_on: one)", id="later-fire-ran"),
])
def test_a_lost_claim_names_the_host(holder: str | None, reason: str) -> None:
    """A claim another host won is recorded, and named."""
    claim = {"fire_id": fire_id("job", T), "scheduled": T, "holder": holder, "at": T}
    answer = explain("job", T, rows=[], loads=UP, pauses=[], run_on_one=True, show=show,
                     claims=[claim])
    assert (answer.verdict, answer.reason) == ("elsewhere", reason)


def test_past_instants_are_the_schedules_last_fires() -> None:
    """The last N fires at or before a time, oldest first, looking back as far as needed."""
    until = datetime(2026, 12, 6, 10, 7, 30, tzinfo=UTC).timestamp()
    every_five = parse_schedule("0 */5 * * * *", load_zone("UTC"))
    assert [datetime.fromtimestamp(t, UTC).strftime("%H:%M") for t in
            past_instants(every_five, until, 3)] == ["09:55", "10:00", "10:05"]
    yearly = parse_schedule("0 0 0 1 1 *", load_zone("UTC"))
    assert [datetime.fromtimestamp(t, UTC).year for t in
            past_instants(yearly, until, 2)] == [2025, 2026]


def test_a_killed_daemon_is_down_from_when_it_was_last_seen() -> None:
    """A `seen` row (its last run record) moves a killed daemon's end past its last load."""
    loads = [load(T - 100, "start", ("job",)), {"at": T - 30, "kind": "seen"},
             load(T + 50, "start", ("job",))]
    answer = explain("job", T, rows=[], loads=loads, pauses=[], run_on_one=False, show=show)
    assert answer.reason == ("missed: the daemon was down: ended without a stop record "
                             "(killed?) after t-30 to t+50")


def test_the_row_of_a_missed_stretch_names_its_policy() -> None:
    """The fire that names a missed row (its last) reads like the others of the stretch."""
    row = {**run("missed", reason="2 fire(s) missed", started=False), "missed_from": T - 1}
    answer = explain("job", T, rows=[row], loads=UP, pauses=[], run_on_one=False,
                     show=show, catchup="catchup: none")
    assert (answer.verdict, answer.reason) == ("missed",
                                               "missed: 2 fire(s) missed (catchup: none)")
