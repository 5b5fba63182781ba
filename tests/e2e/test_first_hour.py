"""The operator's first hour (issue 23), through the real CLI: messages that say what to
write, usage errors that exit 2, one way of writing times, `list`, the logs of a task that
never started, and what a killed daemon left running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from croniter import croniter

from tests.helpers import Daemon, lines, process_gone, torchd_cmd, wait_for

Factory = Callable[..., Daemon]

pytestmark = pytest.mark.e2e


def torchd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=False)


def test_a_negative_count_says_what_it_must_be(write_tasks: Callable[..., Path]) -> None:
    config = write_tasks("""
        tasks:
          - {name: a, schedule: "@hourly", command: "true", max_running: -1}
        """)
    result = torchd("check", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{config}:3: task 'a': max_running: must be 0 or more, got -1")


def test_a_bad_time_is_a_usage_error_that_exits_2(write_tasks: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    config = write_tasks('tasks: [{name: a, schedule: "@hourly", command: "true"}]\n')
    after = torchd("next", "-c", str(config), "--after", "tomorrow")
    assert (after.returncode, after.stderr.splitlines()[0]) == (
        2, "--after: 'tomorrow' is not an ISO 8601 time such as 2026-11-01T00:00:00-04:00 "
           "or 2026-11-01T04:00:00Z")
    submit = torchd("submit", "--state-dir", str(tmp_path / "no-daemon"), "--at",
                    "tomorrow", "--", "true")  # refused before any daemon is asked
    assert (submit.returncode, submit.stderr.strip()) == (
        2, "torchd submit: at: 'tomorrow' is not an ISO 8601 time such as "
           "2026-12-01T10:00:00+01:00, nor a duration such as 10m")


def test_a_state_dir_that_is_a_file_is_a_usage_error(write_tasks: Callable[..., Path],
                                                    tmp_path: Path) -> None:
    """Not "already running" nor a traceback: one line, exit 2."""
    config = write_tasks('tasks: [{name: a, schedule: "@hourly", command: "true"}]\n')
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("")
    for args in (("start", "-c", str(config)), ("status",), ("stop",)):
        result = torchd(*args, "--state-dir", str(not_a_dir))
        assert (result.returncode, result.stderr) == (
            2, f"torchd: the state dir {not_a_dir} is not a directory\n"), args


def test_history_of_a_state_dir_without_one_says_so(tmp_path: Path) -> None:
    """A mistyped --state-dir is not "no runs recorded" with exit 0."""
    typo = tmp_path / "sttae"
    result = torchd("history", "--state-dir", str(typo))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"torchd: no run history in {typo} (no history.db: no daemon "
                             "has run with this state dir, or daemon.history is off)\n")


def test_a_broken_file_still_leads_to_its_daemon(tmp_path: Path,
                                                 write_tasks: Callable[..., Path],
                                                 daemon_factory: Factory) -> None:
    """After a broken edit, `-c FILE` still finds the daemon by the file's state_dir:
    `status` shows it, `reload` prints the file's errors and exits 2; `reload -c` with
    another file is refused, since the daemon's file is fixed at start."""
    state = tmp_path / "state"
    config = write_tasks(f"""
        daemon: {{state_dir: {state}, watch: false}}
        tasks:
          - {{name: a, schedule: "@hourly", command: "true"}}
        """)
    daemon = daemon_factory(config).start()
    config.write_text(config.read_text().replace('"@hourly"', '"61 * * * * *"'))
    status = torchd("status", "-c", str(config))
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"torchd 0.1.0 running, pid {daemon.pid}")
    reload = torchd("reload", "-c", str(config))
    assert reload.returncode == 2
    assert reload.stderr.splitlines() == [
        f"{config}:4: task 'a': schedule: second field '61' is out of range 0-59",
        "1 problem found; the daemon keeps its previous config"]
    other = write_tasks('tasks: [{name: b, schedule: "@hourly", command: "true"}]\n',
                        "other.yaml")
    refused = torchd("reload", "-c", str(other), "--state-dir", str(state))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"torchd: the daemon (pid {daemon.pid}) runs {config} and reloads only that file; "
        f"to run {other}, stop it and start it with -c {other}\n")


def test_a_broken_file_without_a_state_dir_says_which_one_is_used(
        write_tasks: Callable[..., Path], tmp_path: Path) -> None:
    config = write_tasks("tasks: [{name: a, schedule: '61 * * * * *', command: 'true'}]\n")
    result = subprocess.run(torchd_cmd("status", "-c", str(config)), capture_output=True,
                            text=True, timeout=60, check=False,
                            env={**os.environ, "TORCHD_STATE_DIR": str(tmp_path / "x")})
    assert result.stderr.splitlines()[0] == (
        f"torchd: {config} does not load and names no daemon.state_dir that can be read; "
        f"using {tmp_path / 'x'}")
    assert result.returncode == 3


def test_day_ranges_ending_on_sunday_and_wrapping_ranges_fire_as_croniter_has_them(
        write_tasks: Callable[..., Path]) -> None:
    """`check` accepts MON-SUN, Fri-Sun, Mon-Sun/2 (Sunday at the end is 7) and ranges
    that wrap around (Nov-Mar, 22-2, Fri-Mon); `next` gives croniter's fire times."""
    schedules = {"every-day": "30 8 * * MON-SUN", "weekend": "0 0 9 * * Fri-Sun",
                 "every-other": "0 0 12 * * Mon-Sun/2", "winter": "0 0 0 1 Nov-Mar *",
                 "night": "0 0 22-2 * * *", "long-weekend": "0 15 7 * * Fri-Mon"}
    config = write_tasks("daemon: {timezone: UTC}\ntasks:\n" + "".join(
        f'  - {{name: {name}, schedule: "{text}", command: "true"}}\n'
        for name, text in schedules.items()))
    check = torchd("check", "-c", str(config))
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{config}: OK, 6 task(s)")
    preview = torchd("next", "-c", str(config), "-n", "12", "--json", "--after",
                     "2026-01-01T00:00:00Z")
    assert preview.returncode == 0, preview.stderr
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for name, text in schedules.items():
        oracle = croniter(text, start, second_at_beginning=len(text.split()) == 6)
        expected = [oracle.get_next(datetime).isoformat() for _ in range(12)]
        assert [datetime.fromisoformat(at) for at in json.loads(preview.stdout)[name]] == [
            datetime.fromisoformat(at) for at in expected], name


def test_a_wrapping_range_with_a_step_says_what_to_write(
        write_tasks: Callable[..., Path]) -> None:
    """Implementations disagree on where the step goes after the wrap: refused, with the
    values to list instead."""
    config = write_tasks("""
        tasks:
          - {name: a, schedule: "0 0 9 * * Fri-Mon/2", command: "true"}
          - {name: b, schedule: "0 22-4/3 * * *", command: "true"}
        """)
    result = torchd("check", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines()[:2] == [
        f"{config}:3: task 'a': schedule: day-of-week field: range 'Fri-Mon/2' wraps around "
        "and has a step, which cron implementations read differently; list the values "
        "instead, e.g. 'Fri,Sun'",
        f"{config}:4: task 'b': schedule: hour field: range '22-4/3' wraps around and has a "
        "step, which cron implementations read differently; list the values instead, e.g. "
        "'22,1,4'"]


def test_next_after_reads_a_skipped_or_repeated_wall_time_as_the_readme_says(
        write_tasks: Callable[..., Path]) -> None:
    """Without an offset, a wall time that DST skips is read on the clock before the change
    (02:15 on a New York spring-forward day is 03:15 EDT); one it repeats, as its first
    showing (EDT). An offset picks the second showing."""
    config = write_tasks("""
        daemon: {timezone: America/New_York}
        tasks:
          - {name: hourly, schedule: "0 20 * * * *", command: "true"}
        """)

    def first_fires(after: str) -> list[str]:
        result = torchd("next", "-c", str(config), "-n", "2", "--json", "--after", after)
        assert result.returncode == 0, result.stderr
        # JSON is UTC; the same instants as the zone's wall times below
        return [datetime.fromisoformat(at) for at in json.loads(result.stdout)["hourly"]]

    at = datetime.fromisoformat
    assert first_fires("2026-03-08T02:15:00") == [
        at("2026-03-08T03:20:00-04:00"), at("2026-03-08T04:20:00-04:00")]
    assert first_fires("2026-11-01T01:15:00") == [
        at("2026-11-01T01:20:00-04:00"), at("2026-11-01T01:20:00-05:00")]
    assert first_fires("2026-11-01T01:15:00-05:00") == [
        at("2026-11-01T01:20:00-05:00"), at("2026-11-01T02:20:00-05:00")]


def check(config: Path) -> list[str]:
    """`torchd check` on a file that must not load: its stderr lines (exit 2, nothing out)."""
    result = torchd("check", "-c", str(config))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    return result.stderr.splitlines()


def test_a_tab_is_a_tab_error_even_on_a_cron_line(write_tasks: Callable[..., Path]) -> None:
    """Line and column, the line with a caret under the column, and the hint that fits: the
    tab, not the quoting of a schedule that is quoted already."""
    config = write_tasks('tasks:\n  - name: a\n\tschedule: "*/5 * * * *"\n    command: x\n')
    assert check(config) == [
        f"{config}:3:1: YAML syntax error: found a tab character that violates indentation "
        "(YAML indents with spaces, not tabs)",
        '    \tschedule: "*/5 * * * *"',
        "    ^",
        "1 problem found; nothing was changed"]


def test_an_unquoted_cron_expression_says_to_quote_it(write_tasks: Callable[..., Path]) -> None:
    config = write_tasks("tasks:\n  - name: a\n    schedule: */5 * * * *\n    command: x\n")
    assert check(config) == [
        f"{config}:3:15: YAML syntax error: did not find expected alphabetic or numeric "
        "character (an unquoted '*' starts a YAML alias: quote cron expressions, as in "
        'schedule: "*/5 * * * * *")',
        "        schedule: */5 * * * *",
        "                  ^",
        "1 problem found; nothing was changed"]


def test_a_misindented_key_says_to_check_the_indentation(
        write_tasks: Callable[..., Path]) -> None:
    """Not the cron hint, though the line holds a '*'."""
    config = write_tasks('tasks:\n  - name: a\n    schedule: "@hourly"\n   command: ls *.txt\n')
    assert check(config) == [
        f"{config}:4:4: YAML syntax error: did not find expected '-' indicator (check this "
        "line's indentation against the lines above: the keys of a mapping align, and so do "
        "the items of a list)",
        "       command: ls *.txt",
        "       ^",
        "1 problem found; nothing was changed"]


def test_every_bad_host_and_variable_is_reported(write_tasks: Callable[..., Path]) -> None:
    """Each bad item of a list or mapping, with its number or key; host patterns that are no
    address, network, host name nor glob are refused."""
    config = write_tasks("""
        tasks:
          - name: a
            schedule: "@hourly"
            command: "true"
            hosts: ["10.0.0.0/33", "fe80::/129", "", "999.1.1.1", "web-[", "web-*"]
            env: {DEBUG: yes, N: 3}
        """)
    assert check(config) == [
        f"{config}:6: task 'a': hosts: item 1: '10.0.0.0/33' is not a valid CIDR network: '33' "
        "is not a valid netmask",
        f"{config}:6: task 'a': hosts: item 2: 'fe80::/129' is not a valid CIDR network: '129' "
        "is not a valid netmask",
        f"{config}:6: task 'a': hosts: item 3: empty host pattern; expected an IP address "
        "(10.0.0.5), a CIDR network (10.0.0.0/24), a host name (web-1.example.com) or a glob "
        "(web-*)",
        f"{config}:6: task 'a': hosts: item 4: '999.1.1.1' is not a valid IPv4 address: Octet "
        "999 (> 255) not permitted in '999.1.1.1'; digits and dots alone make an address, not "
        "a host name",
        f"{config}:6: task 'a': hosts: item 5: 'web-[' is not a valid glob: its '[' has no "
        "closing ']'",
        f"{config}:7: task 'a': env: DEBUG: expected text, got a boolean (yes); quote it if you "
        "mean the text: 'yes'",
        f"{config}:7: task 'a': env: N: expected text, got a number (3); quote it if you mean "
        "the text: '3'",
        "7 problems found; nothing was changed"]


UTC_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # JSON: UTC to the millisecond
TOKYO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00"  # text: to the second, in the task's zone


def test_every_verb_writes_times_by_one_rule(write_tasks: Callable[..., Path],
                                            daemon_factory: Factory) -> None:
    """JSON: UTC to the millisecond; text: the task's zone to the second (UTC with --utc),
    whatever the host's zone, with the distance from now beside next fires."""
    config = write_tasks("""
        daemon: {timezone: UTC}
        tasks:
          - {name: tick, schedule: "@every 1s", command: "true", timezone: Asia/Tokyo}
        """)
    preview = torchd("next", "-c", str(config), "-n", "1")
    assert re.fullmatch(rf"tick\n  {TOKYO}  \((in 1s|now)\)\n", preview.stdout), preview.stdout
    assert re.fullmatch(UTC_MS, json.loads(torchd("next", "-c", str(config), "-n", "1",
                                                  "--json").stdout)["tick"][0])
    daemon = daemon_factory(config).start()
    runs = wait_for(lambda: [r for r in json.loads(daemon.cli("history", "--json").stdout)
                             if r["outcome"] == "ok"], message="an ended run")
    assert all(re.fullmatch(UTC_MS, runs[0][key])
               for key in ("at", "scheduled", "started", "ended"))
    assert runs[0]["timezone"] == "Asia/Tokyo"
    task = json.loads(daemon.cli("status", "--json").stdout)["tasks"][0]
    assert re.fullmatch(UTC_MS, task["next_fire"])
    assert re.fullmatch(UTC_MS, task["last_run"]["started"])
    history = daemon.cli("history", "-n", "1").stdout.splitlines()
    assert re.fullmatch(rf"\S+ +tick +{TOKYO} .*", history[1]), history
    in_utc = daemon.cli("history", "-n", "1", "--utc").stdout.splitlines()
    assert re.search(r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 ", in_utc[1]), in_utc
    status = daemon.cli("status").stdout.splitlines()
    row = next(line for line in status if line.startswith("tick "))
    assert re.search(rf" {TOKYO} \((in \d+s|now)\) ", row), row


def _columns(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip())


def test_list_shows_the_tasks_by_next_fire_then_the_idle_ones_with_why(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """Like `systemctl list-timers`: NEXT, LEFT, LAST, PASSED, the task, the last run's
    outcome, the schedule; the tasks that will not fire last, each with the reason."""
    config = write_tasks("""
        daemon: {timezone: UTC}
        tasks:
          - {name: a-often, schedule: "* * * * * *", command: "exit 3"}
          - {name: b-hourly, schedule: "0 0 * * * *", command: "true"}
          - {name: c-yearly, schedule: "0 0 0 1 1 *", command: "true"}
          - {name: held, schedule: "@hourly", command: "true"}
          - {name: turned-off, schedule: "@hourly", command: "true", enabled: false}
          - {name: elsewhere, schedule: "@hourly", command: "true", hosts: ["203.0.113.7"]}
          - {name: keeper, type: daemon, command: "sleep 300"}
          - {name: boot, schedule: "@reboot", command: "true"}
        """)
    daemon = daemon_factory(config).start()
    assert daemon.cli("pause", "held").returncode == 0

    def listed_with_a_failed_run() -> list[list[str]] | None:
        result = daemon.cli("list")
        assert result.returncode == 0, result.stderr
        table = [_columns(line) for line in result.stdout.splitlines()]
        return table if table[1][-2:] == ["failed(3)", "* * * * * *"] else None

    table = wait_for(listed_with_a_failed_run, message="the failed run listed")
    assert table[0] == ["NEXT", "LEFT", "LAST", "PASSED", "TASK", "OUTCOME", "SCHEDULE"]
    assert table[-1] == ["8 tasks listed."]
    rows = {row[4]: row for row in table[1:-2]}
    assert [row[4] for row in table[1:-2]] == [
        "a-often", "b-hourly", "c-yearly", "boot", "elsewhere", "held", "keeper", "turned-off"]
    often = rows["a-often"]
    assert re.fullmatch(r"\S+\+00:00", often[0]), often
    assert often[1] in ("in 1s", "now")
    assert re.fullmatch(r"\S+\+00:00", often[2]), often
    assert often[3].endswith(("s ago", "now"))
    assert rows["elsewhere"] == ["-", "not for this host", "-", "-", "elsewhere", "-",
                                 "@hourly"]
    # NEXT, LEFT, OUTCOME, SCHEDULE (LAST and PASSED are times)
    assert [row[:2] + row[5:] for row in (rows[n] for n in ("boot", "held", "keeper",
                                                             "turned-off"))] == [
        ["-", "at start only", "ok(0)", "@reboot"],
        ["-", "paused", "-", "@hourly"],
        ["-", "daemon task", "running", "-"],
        ["-", "disabled", "-", "@hourly"]]
    as_json = json.loads(daemon.cli("list", "--json").stdout)
    assert [(t["name"], t["idle"]) for t in as_json][2:5] == [
        ("c-yearly", None), ("boot", "at start only"), ("elsewhere", "not for this host")]
    assert as_json[0]["last"]["outcome"] == "failed"
    assert re.fullmatch(UTC_MS, as_json[0]["next_fire"])


def test_logs_of_a_task_that_never_started_shows_why(write_tasks: Callable[..., Path],
                                                    daemon_factory: Factory) -> None:
    """A command that is not there: `logs` shows the start error like a run's output, from
    the daemon and from the state dir alike, not "no record of a run"."""
    config = write_tasks("""
        tasks:
          - {name: missing, schedule: "* * * * * *", command: ["/no/such/program"]}
        """)
    daemon = daemon_factory(config).start()
    run = wait_for(lambda: json.loads(daemon.cli("history", "--json", "-n", "1").stdout),
                   message="a start error")[0]
    shown = daemon.cli("logs", "missing", "--run", run["run_id"])
    assert (shown.returncode, shown.stdout) == (0, (
        f"--- torchd {run['at']} start-error run={run['run_id']} fire={run['fire_id']} "
        "error=No such file or directory: /no/such/program\n"))
    latest = daemon.cli("logs", "missing")
    assert latest.returncode == 0, latest.stderr
    assert " start-error run=" in latest.stdout
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.cli("logs", "missing", "--run", run["run_id"]).stdout == shown.stdout


def test_status_after_a_kill_9_counts_the_runs_left_behind(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """`status` of a daemon killed with SIGKILL names the process groups it left running
    (those the next start ends), and after that start, none."""
    pids = tmp_path / "pids"
    config = write_tasks(f"""
        tasks:
          - {{name: keeper, type: daemon, command: "echo $$ >> {pids}; exec sleep 300"}}
        """)
    daemon = daemon_factory(config).start()
    wait_for(lambda: lines(pids), message="the keeper's pid")
    # The daemon journals a run just after spawning it; the run may write its pid first.
    wait_for(lambda: any(f" {lines(pids)[0]} " in f" {line} "
                         for line in lines(daemon.state_dir / "children.journal")),
             message="the keeper in the child journal")
    daemon.descendants()  # remembered for the teardown
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    keeper = int(lines(pids)[0])
    status = daemon.cli("status")
    assert (status.returncode, status.stdout) == (3, (
        f"torchd is not running (state dir {daemon.state_dir})\n"
        f"1 process group left by a daemon that died is still running (pid {keeper}); the "
        "next start ends it\n"))
    assert json.loads(daemon.cli("status", "--json").stdout)["leftover_groups"] == [keeper]
    successor = daemon_factory(config).start()
    wait_for(lambda: process_gone(keeper), message="the left run ended by the next start")
    successor.signal(signal.SIGTERM)
    assert successor.wait_exit() == 0
    assert daemon.cli("status").stdout == (
        f"torchd is not running (state dir {daemon.state_dir})\n")
