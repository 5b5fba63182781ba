"""The real daemon as a subprocess: what fires, when, and how often."""

from __future__ import annotations

import itertools
import json
import math
import pwd
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    fire_ids,
    libfaketime,
    lines,
    record_cmd,
    require_root,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _seconds(fire_id: str) -> int:
    stamp = fire_id.split("@", 1)[1]
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def test_per_second_tasks_fire_once_per_second(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """Three per-second tasks over more than 10 s: no duplicate and no missing second.
    (`max_running: 0`: a run that a loaded machine makes last a second must not turn the
    next fire into a skip.)"""
    outs = [tmp_path / f"out{i}" for i in range(3)]
    tasks = "".join(f"""
          - name: tick{i}
            schedule: "* * * * * *"
            max_running: 0
            command: '{record_cmd(out)}'
        """ for i, out in enumerate(outs))
    daemon = daemon_factory(write_tasks("tasks:" + tasks)).start()
    wait_for(lambda: all(len(lines(o)) >= 12 for o in outs), timeout=25, message="12 fires each")
    daemon.cli("stop")
    for index, out in enumerate(outs):
        ids = fire_ids(out)
        assert all(i.startswith(f"tick{index}@") for i in ids)
        assert len(ids) == len(set(ids)), "a fire ran twice"
        seconds = sorted(_seconds(i) for i in ids)
        assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "a second was lost"


def test_a_second_that_passes_while_the_daemon_loads_still_fires(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """Launched 50 ms before a whole second, the daemon cannot serve by then (Python alone
    takes longer to start and import): that second's fire runs late, once it serves,
    rather than being skipped for the next one."""
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - name: tick
            schedule: "* * * * * *"
            command: '{record_cmd(out)}'
        """)
    for attempt in range(5):
        now = time.time()
        boundary = math.floor(now) + (1 if now % 1 < 0.95 else 2)
        time.sleep(boundary - 0.05 - now)
        daemon = daemon_factory(config, state=f"state{attempt}").start()
        if daemon.spawned_by < boundary:  # else the machine stalled: launched too late
            break
        daemon.kill_everything()
    else:
        pytest.fail("could not launch the daemon within 50 ms of a whole second in 5 tries")
    wait_for(lambda: lines(out), timeout=10, message="the first fire")
    assert _seconds(fire_ids(out)[0]) == boundary


def test_five_field_schedule_fires_at_second_zero(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """Under libfaketime the daemon starts at 10:00:57; the minute task fires at 10:01:00."""
    out = tmp_path / "out"
    config = write_tasks(f"""
        daemon: {{timezone: UTC}}
        tasks:
          - name: minutely
            schedule: "* * * * *"
            command: '{record_cmd(out)}'
        """)
    daemon = daemon_factory(config)
    daemon.start_env = libfaketime(FAKETIME="@2026-11-22 10:00:57")
    daemon.start()
    wait_for(lambda: lines(out), timeout=15, message="the minute fire")
    assert fire_ids(out) == ["minutely@2026-11-22T10:01:00Z"]


def test_host_filter(tmp_path: Path, write_tasks: Callable[..., Path],
                     daemon_factory: Callable[..., Daemon]) -> None:
    """127.0.0.1 is an address of every host; 203.0.113.7 (TEST-NET-3) of none."""
    here, away = tmp_path / "here", tmp_path / "away"
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - name: here
            schedule: "* * * * * *"
            hosts: ["127.0.0.1"]
            command: '{record_cmd(here)}'
          - name: away
            schedule: "* * * * * *"
            hosts: ["203.0.113.7"]
            command: '{record_cmd(away)}'
        """)).start()
    wait_for(lambda: len(lines(here)) >= 3, timeout=10, message="three fires of 'here'")
    status = json.loads(daemon.cli("status", "--json").stdout)
    by_name = {t["name"]: t for t in status["tasks"]}
    assert by_name["away"]["for_this_host"] is False
    assert by_name["away"]["next_fire"] is None
    assert by_name["here"]["for_this_host"] is True
    assert not away.exists()


def test_max_running_skips_and_logs(tmp_path: Path, write_tasks: Callable[..., Path],
                                    daemon_factory: Callable[..., Daemon]) -> None:
    out = tmp_path / "out"
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - name: slow
            schedule: "* * * * * *"
            command: '{record_cmd(out)}; sleep 2.5'
        """)).start()
    wait_for(lambda: "skipped: 1 run(s) still running (max_running=1)" in daemon.stderr(),
             timeout=10, message="a skipped fire in the log")
    wait_for(lambda: len(lines(out)) >= 2, timeout=10, message="a second run")
    seconds = [_seconds(i) for i in fire_ids(out)]
    assert seconds[1] - seconds[0] >= 3  # the fires in between were skipped


def test_daemon_task_restarts_with_backoff(tmp_path: Path, write_tasks: Callable[..., Path],
                                           daemon_factory: Callable[..., Daemon]) -> None:
    out = tmp_path / "out"
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - name: flappy
            type: daemon
            command: 'date +%s.%N >> {out}; exit 3'
        """)).start()
    wait_for(lambda: len(lines(out)) >= 3, timeout=15, message="three starts")
    starts = [float(x) for x in lines(out)[:3]]
    # 1 s, then 2 s: the lower bounds are the backoff; the upper ones leave a loaded
    # machine room to notice the exit and spawn again.
    assert 0.9 <= starts[1] - starts[0] < 3.0
    assert 1.9 <= starts[2] - starts[1] < 5.0
    status = json.loads(daemon.cli("status", "--json").stdout)
    (instance,) = status["tasks"][0]["instances"]
    assert instance["restarts"] >= 2
    assert instance["last_error"] == "exited with exit=3"


def test_environment_cwd_and_log_framing(tmp_path: Path, write_tasks: Callable[..., Path],
                                         daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - name: envy
            schedule: "* * * * * *"
            cwd: {tmp_path}
            env: {{GREETING: hello}}
            command: ["/bin/sh", "-c", "echo $GREETING $TORCHD_TASK $PWD; echo oops >&2; \\
              read x || echo stdin-empty; echo $TORCHD_SCHEDULED"]
        """)).start()
    log = daemon.log_dir / "envy.log"
    wait_for(lambda: " end " in log.read_text() if log.exists() else False, timeout=10,
             message="one complete run in the log")
    text = log.read_text().splitlines()
    header, *body = text[: text.index(next(t for t in text if " end " in t)) + 1]
    footer = body.pop()
    assert header.startswith("--- torchd ")
    assert " start run=" in header
    assert " fire=envy@" in header
    assert " pid=" in header
    assert " config=" in header
    assert body[:3] == [f"hello envy {tmp_path}", "oops", "stdin-empty"]
    assert datetime.fromisoformat(body[3]).utcoffset() is not None
    assert " end run=" in footer
    assert " exit=0 " in footer
    assert footer.endswith("outcome=ok")
    assert time.time() - datetime.fromisoformat(body[3]).timestamp() < 30


@pytest.mark.parametrize("cwd", [None, "/tmp"], ids=["posix_spawn", "with-cwd"])
def test_children_inherit_no_descriptors(cwd: str | None, write_tasks: Callable[..., Path],
                                         daemon_factory: Callable[..., Daemon]) -> None:
    """A run sees stdin, stdout and stderr only (3 is ls's own handle on the directory)."""
    cwd_line = f"cwd: {cwd}" if cwd else ""
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - name: fds
            schedule: "* * * * * *"
            {cwd_line}
            command: ["/bin/ls", "/proc/self/fd"]
        """)).start()
    log = daemon.log_dir / "fds.log"
    wait_for(lambda: log.exists() and " end " in log.read_text(), timeout=10,
             message="one complete run")
    text = log.read_text().splitlines()
    body = text[1:next(i for i, line in enumerate(text) if " end run=" in line)]
    assert body == ["0", "1", "2", "3"]


def test_reboot_runs_once_at_start(tmp_path: Path, write_tasks: Callable[..., Path],
                                   daemon_factory: Callable[..., Daemon]) -> None:
    boot, tick = tmp_path / "boot", tmp_path / "tick"
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - {{name: boot, schedule: "@reboot", command: '{record_cmd(boot)}'}}
          - {{name: tick, schedule: "* * * * * *", command: '{record_cmd(tick)}'}}
        """)).start()
    wait_for(lambda: len(lines(tick)) >= 3, timeout=10, message="three ticks")
    assert len(lines(boot)) == 1
    assert json.loads(daemon.cli("status", "--json").stdout)["tasks"][0]["next_fire"] is None


@pytest.mark.parametrize("catchup", ["none", "last", "all"])
def test_missed_fires_after_a_restart(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon], catchup: str) -> None:
    """The daemon stops; the next one starts with its clock two minutes on (libfaketime):
    about 120 per-second fires were missed. `catchup` decides which run, with their
    original fire ids, and none of the first daemon's fires runs again."""
    out = tmp_path / "out"
    config = write_tasks(f"""
        daemon: {{timezone: UTC}}
        tasks:
          - name: tick
            schedule: "* * * * * *"
            command: '{record_cmd(out)}'
            max_running: 0
            catchup: {catchup}
        """)
    first = daemon_factory(config).start()
    wait_for(lambda: len(lines(out)) >= 2, timeout=10, message="two fires")
    assert first.cli("stop").returncode == 0
    before = fire_ids(out)
    # The first daemon's last fire as its history has it: a fire that the stop ended
    # before its command wrote to `out` was run all the same.
    ran = json.loads(first.cli("history", "tick", "-n", "1000", "--json").stdout)
    last_before = max(_iso_seconds(r["scheduled"]) for r in ran)
    assert last_before - max(_seconds(i) for i in before) in (0, 1)

    later = daemon_factory(config)
    later.state_dir = first.state_dir  # same state dir: same ledger
    later.start_env = libfaketime(FAKETIME="+120")
    later.start()
    def log_text() -> str:
        return later.stderr()

    wait_for(lambda: "missed" in log_text() or "catching up" in log_text(), timeout=15,
             message="the missed fires handled")
    expected_catchups = {"none": 0, "last": 1, "all": 100}[catchup]
    wait_for(lambda: len(fire_ids(out)) >= len(before) + expected_catchups + 2, timeout=20,
             message="catch-up runs and a regular fire")
    later.cli("stop")
    after = [_seconds(i) for i in fire_ids(out)[len(before):]]
    assert all(second > last_before for second in after), "a fire ran twice"
    assert len(after) == len(set(after))
    missed = re.search(r"missed (\d+) fire\(s\) from (\S+) to (\S+)", log_text())
    caught = re.search(r"catching up (\d+) missed fire\(s\), (\S+) to (\S+)", log_text())
    if catchup == "all":
        assert caught is not None
        first_caught, last_caught = _iso_seconds(caught[2]), _iso_seconds(caught[3])
        assert int(caught[1]) == 100
        assert last_caught - first_caught == 99
        assert set(range(first_caught, last_caught + 1)) <= set(after)
        assert "catchup all runs at most the 100 most recent" in log_text()
        assert missed is not None
        assert _iso_seconds(missed[2]) == last_before + 1  # the older ones, counted
        return
    assert missed is not None
    count, first_missed, last_missed = int(missed[1]), _iso_seconds(missed[2]), _iso_seconds(
        missed[3])
    assert first_missed == last_before + 1
    assert last_missed - first_missed >= 115  # two minutes of per-second fires
    rows = json.loads(later.cli("history", "tick", "-n", "1000", "--json").stdout)
    assert [r["reason"] for r in rows if r["outcome"] == "missed"] == [
        f"{count} fire(s) missed from {missed[2]} to {missed[3]}"]
    if catchup == "none":
        assert caught is None
        assert count == last_missed - first_missed + 1
        assert not set(range(first_missed, last_missed + 1)) & set(after)
    else:
        assert caught is not None
        assert (caught[1], caught[2]) == ("1", caught[3])
        # the line names the last fire not run: the one before the fire caught up
        assert count == last_missed - first_missed + 1
        assert _iso_seconds(caught[3]) == last_missed + 1
        assert last_missed + 1 in after
        assert [r["fire_id"] for r in rows if r["trigger"] == "catchup"] == [
            f"tick@{caught[3].replace('.000Z', 'Z')}"]
        assert not set(range(first_missed, last_missed + 1)) & set(after)


def _iso_instant(fire_id: str) -> float:
    return datetime.fromisoformat(fire_id.split("@", 1)[1].replace("Z", "+00:00")).timestamp()


def _iso_seconds(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def test_timeout_and_retries(tmp_path: Path, write_tasks: Callable[..., Path],
                             daemon_factory: Callable[..., Daemon]) -> None:
    """A run that fails is retried with its attempt number; one that runs too long is
    stopped and recorded as timed out, then retried too."""
    out = tmp_path / "attempts"
    config = write_tasks(f"""
        tasks:
          - name: flaky
            schedule: "@reboot"
            command: 'echo "$TORCHD_ATTEMPT $TORCHD_FIRE_ID" >> {out}; exit 4'
            retries: {{max: 2, delay: 0.2s, backoff: 2}}
          - name: stuck
            schedule: "@reboot"
            command: "sleep 60"
            timeout: 0.5s
            kill_grace: 1s
            retries: {{max: 1, delay: 0.2s}}
        """)
    daemon = daemon_factory(config).start()
    stuck_log = daemon.log_dir / "stuck.log"
    wait_for(lambda: len(lines(out)) == 3, timeout=10, message="three attempts of flaky")
    wait_for(lambda: sum("outcome=timeout" in line for line in lines(stuck_log)) == 2,
             timeout=10, message="stuck timed out twice (first attempt and its retry)")
    assert [line.split()[0] for line in lines(out)] == ["1", "2", "3"]
    assert len({line.split()[1] for line in lines(out)}) == 1
    headers = [line for line in lines(daemon.log_dir / "flaky.log") if " start " in line]
    assert [("attempt=" in h) for h in headers] == [False, True, True]
    wait_for(lambda: "no retries left" in daemon.stderr(), timeout=5, message="the last word")
    assert "stuck run" in daemon.stderr()
    assert "timed out after 0.5s" in daemon.stderr()


def test_one_time_task_runs_once_across_restarts(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    out = tmp_path / "out"
    when = datetime.fromtimestamp(math.ceil(time.time()) + 2).astimezone()
    config = write_tasks(f"""
        tasks:
          - name: once
            at: "{when.isoformat()}"
            command: '{record_cmd(out)}'
        """)
    first = daemon_factory(config).start()
    wait_for(lambda: lines(out), timeout=10, message="the one-time fire")
    assert first.cli("stop").returncode == 0
    again = daemon_factory(config)
    again.state_dir = first.state_dir
    again.start()
    wait_for(lambda: "no fire to come (it ran already)" in again.stderr(), timeout=5,
             message="the restarted daemon to see it done")
    status = json.loads(again.cli("status", "--json").stdout)
    (task,) = status["tasks"]
    assert task["next_fire"] is None
    assert len(fire_ids(out)) == 1
    assert _seconds(fire_ids(out)[0]) == int(when.timestamp())


def test_run_as_another_user_with_umask_nice_and_limits(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    require_root()
    report = ("ids=$(id -u):$(id -g) umask=$(umask) nice=$(nice) files=$(ulimit -n) "
              "cpu=$(ulimit -t) home=$HOME user=$USER")
    config = write_tasks(f"""
        tasks:
          - name: confined
            schedule: "@reboot"
            command: 'echo "{report}"'
            user: nobody
            umask: "0027"
            nice: 7
            limits: {{nofile: 256, cpu: 30}}
        """)
    daemon = daemon_factory(config).start()
    log = daemon.log_dir / "confined.log"
    wait_for(lambda: any("ids=" in line for line in lines(log)), timeout=10,
             message="the confined run's output")
    (output,) = [line for line in lines(log) if "ids=" in line]
    nobody = pwd.getpwnam("nobody")
    assert output == (f"ids={nobody.pw_uid}:{nobody.pw_gid} umask=0027 nice=7 files=256 "
                      f"cpu=30 home={nobody.pw_dir} user=nobody")


def test_wall_clock_jumps_while_running(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """libfaketime reads its offset from a file the test rewrites: the daemon's wall clock
    jumps an hour forward (the missed fires follow `catchup`), then back (nothing runs
    twice: the next fire is planned after the last one, not from the clock)."""
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    out = tmp_path / "out"
    config = write_tasks(f"""
        daemon: {{timezone: UTC}}
        tasks:
          - name: tick
            schedule: "* * * * * *"
            command: '{record_cmd(out)}'
            max_running: 0
            catchup: last
        """)
    daemon = daemon_factory(config)
    daemon.start_env = libfaketime(FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_NO_CACHE="1")
    daemon.start()
    wait_for(lambda: len(lines(out)) >= 2, timeout=10, message="fires before the jump")
    before_jump = max(_seconds(i) for i in fire_ids(out))
    offset.write_text("+3600\n")
    wait_for(lambda: any(_seconds(i) > before_jump + 3590 for i in fire_ids(out)),
             timeout=15, message="fires after the forward jump")
    missed = re.search(r"missed (\d+) fire\(s\)", daemon.stderr())
    assert missed is not None
    assert 3585 <= int(missed[1]) <= 3600
    assert "catching up 1 missed fire(s)" in daemon.stderr()
    offset.write_text("+0\n")
    wait_for(lambda: "the wall clock stepped back" in daemon.stderr(), timeout=10,
             message="the daemon to see the clock step back")
    latest = max(_seconds(i) for i in fire_ids(out))
    status = json.loads(daemon.cli("status", "--json").stdout)
    (task,) = status["tasks"]
    assert _iso_seconds(task["next_fire"]) > latest  # planned after the last fire
    ids = fire_ids(out)
    assert len(ids) == len(set(ids)), "a fire ran twice"


def _under_faketime(daemon_factory: Callable[..., Daemon], config: Path, start_utc: str
                    ) -> Daemon:
    daemon = daemon_factory(config, env={"TZ": "UTC"})
    daemon.start_env = libfaketime(FAKETIME=f"@{start_utc}")
    return daemon.start()


def test_spring_forward_with_the_real_daemon(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """New York, 2026-03-08: 02:00 EST becomes 03:00 EDT. 02:30 never shows, so the
    02:30 task runs once at 03:00 EDT; the hourly :30 task follows elapsed time and has
    nothing to make up."""
    fixed, hourly = tmp_path / "fixed", tmp_path / "hourly"
    config = write_tasks(f"""
        daemon: {{timezone: America/New_York}}
        tasks:
          - name: at-0230
            schedule: "0 30 2 * * *"
            command: '{record_cmd(fixed)}'
          - name: hourly-30
            schedule: "0 30 * * * *"
            command: '{record_cmd(hourly)}'
        """)
    daemon = _under_faketime(daemon_factory, config, "2026-03-08 06:59:53")  # 01:59:53 EST
    wait_for(lambda: lines(fixed), timeout=15, message="the gap's fire")
    assert fire_ids(fixed) == ["at-0230@2026-03-08T07:00:00Z"]  # 03:00 EDT
    status = json.loads(daemon.cli("status", "--json").stdout)
    next_fires = {t["name"]: t["next_fire"] for t in status["tasks"]}
    assert next_fires == {"at-0230": "2026-03-09T06:30:00.000Z",  # 02:30 EDT next day
                          "hourly-30": "2026-03-08T07:30:00.000Z"}  # 03:30 EDT
    assert lines(hourly) == []


def test_fall_back_with_the_real_daemon(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """New York, 2026-11-01: 02:00 EDT becomes 01:00 EST. A task for every second of the
    1 o'clock hour runs in its first showing only; an every-second task runs through."""
    in_hour_one, every_second = tmp_path / "hour-one", tmp_path / "every"
    config = write_tasks(f"""
        daemon: {{timezone: America/New_York}}
        tasks:
          - name: hour-one
            schedule: "* * 1 * * *"
            command: '{record_cmd(in_hour_one)}'
            max_running: 0
          - name: every
            schedule: "* * * * * *"
            command: '{record_cmd(every_second)}'
            max_running: 0
        """)
    _under_faketime(daemon_factory, config, "2026-11-01 05:59:53")  # 01:59:53 EDT
    change = int(datetime.fromisoformat("2026-11-01T06:00:00+00:00").timestamp())
    wait_for(lambda: any(_seconds(i) >= change + 3 for i in fire_ids(every_second)),
             timeout=15, message="three seconds into the repeated hour")
    hour_one = sorted(_seconds(i) for i in fire_ids(in_hour_one))
    assert hour_one
    assert max(hour_one) == change - 1  # 01:59:59 EDT, then nothing at 01:00:00 EST onwards
    every = sorted(_seconds(i) for i in fire_ids(every_second))
    assert {change - 1, change, change + 1, change + 2} <= set(every)


def test_overlap_queue_with_the_real_daemon(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """Each run takes 1.5 s, fires come every second, one run at a time, one may wait:
    runs follow each other without overlapping, oldest fire first, and the fires that do
    not fit are dropped with a log line."""
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - name: slow
            schedule: "* * * * * *"
            command: '{record_cmd(out, extra=" $(date +%s.%N)")}; sleep 1.5; echo end >> {out}'
            overlap: queue
            queue_limit: 1
        """)
    daemon = daemon_factory(config).start()
    wait_for(lambda: sum(line == "end" for line in lines(out)) >= 3, timeout=20,
             message="three queued runs done")
    daemon.cli("stop")
    records = lines(out)
    kinds = ["end" if line == "end" else "start" for line in records]
    assert kinds[:6] == ["start", "end"] * 3  # never two at once
    started = [_seconds(line.split()[0]) for line in records if line != "end"]
    assert started == sorted(started)
    assert "dropped: queue full (1 fire(s) waiting)" in daemon.stderr()


def test_window_random_and_jitter_with_the_real_daemon(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    windowed, spread, randomly = tmp_path / "windowed", tmp_path / "spread", tmp_path / "random"
    start = math.ceil(time.time()) + 3
    iso = lambda ts: datetime.fromtimestamp(ts).astimezone().isoformat()  # noqa: E731
    config = write_tasks(f"""
        tasks:
          - name: windowed
            schedule: "* * * * * *"
            start_at: "{iso(start)}"
            end_at: "{iso(start + 2)}"
            max_running: 0  # a slow run on a loaded machine: no skip
            command: '{record_cmd(windowed)}'
          - name: spread
            schedule: "*/2 * * * * *"
            jitter: 1s
            max_running: 0  # a slow run on a loaded machine: no skip
            command: '{record_cmd(spread)}'
          - name: random
            schedule: "@random 1s 2s"
            max_running: 0  # a slow run on a loaded machine: no skip
            command: '{record_cmd(randomly)}'
        """)
    daemon_factory(config).start()
    wait_for(lambda: len(lines(spread)) >= 3 and len(lines(randomly)) >= 4
             and len(lines(windowed)) >= 3 and time.time() > start + 4, timeout=20,
             message="fires of every kind")
    assert [_seconds(i) for i in fire_ids(windowed)] == [start, start + 1, start + 2]
    for line in lines(spread):  # started within the jitter after the fire's own second
        fire, began = _seconds(line.split()[0]), float(line.split()[1])
        assert fire <= began <= fire + 3  # 1 s of jitter, and room for a busy machine
    scheduled = [_iso_instant(i) for i in fire_ids(randomly)]  # exact, to the millisecond
    gaps = [b - a for a, b in itertools.pairwise(scheduled)]
    assert all(1.0 <= round(gap, 3) <= 2.0 for gap in gaps)
    assert len({round(gap, 3) for gap in gaps}) > 1  # drawn, not fixed


def test_overlap_replace_and_the_daemon_wide_limit(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """`replace`: each fire ends the run before it (which ignores TERM: KILL after
    kill_grace). `daemon.max_running: 1`: of two tasks due each second, one at a time runs,
    the other fire is skipped and said so."""
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - name: stuck
            schedule: "*/2 * * * * *"
            command: {json.dumps(["/bin/sh", "-c", f"trap '' TERM; {record_cmd(out)}; sleep 30"])}
            overlap: replace
            kill_grace: 0.5s
        """)
    daemon = daemon_factory(config).start()
    wait_for(lambda: len(lines(out)) >= 3, timeout=15, message="three replacing runs")
    footers = [line for line in lines(daemon.log_dir / "stuck.log") if " end " in line]
    assert len(footers) >= 2
    assert all("signal=SIGKILL" in f and "outcome=killed" in f for f in footers)
    assert "stopping run" in daemon.stderr()
    assert daemon.cli("stop", "--timeout", "1").returncode == 0

    limited = write_tasks(f"""
        daemon: {{max_running: 1}}
        tasks:
          - {{name: a, schedule: "* * * * * *",
             command: {json.dumps("sleep 0.5; " + record_cmd(out, " a"))}}}
          - {{name: b, schedule: "* * * * * *",
             command: {json.dumps("sleep 0.5; " + record_cmd(out, " b"))}}}
        """, name="limited.yaml")
    other = daemon_factory(limited, state="limited").start()
    wait_for(lambda: other.stderr().count("daemon.max_running=1 runs across all tasks") >= 3,
             timeout=15, message="fires held back by the daemon-wide limit")
    ids = [line.split()[0] for line in lines(out) if line.endswith((" a", " b"))]
    seconds = [_seconds(i) for i in ids]
    assert len(seconds) == len(set(seconds))  # one run per second across both tasks
