"""Task-file parsing: every problem reported as FILE:LINE: task 'NAME': FIELD: message.
(The owner and mode checks on a real file are in tests/integration/test_config_files.py.)"""

from __future__ import annotations

import os
import textwrap
from datetime import datetime

import pytest

from torchd.config.loader import ParseCache, parse_config
from torchd.core.errors import ConfigError, ConfigProblem
from torchd.core.hostmatch import HostIdentity
from torchd.core.model import RetryPolicy, TaskKind, TaskSpec


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text).encode(), "t.yaml", identity=None)
    return [str(p) for p in caught.value.problems]


def task_file(body: str) -> str:
    return "tasks:\n  - name: job\n" + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param('schedule: "61 * * * * *"\ncommand: "true"\n',
                 "t.yaml:3: task 'job': schedule: second field '61' is out of range 0-59",
                 id="second-out-of-range"),
    pytest.param('schedule: "* * * 30 2 *"\ncommand: "true"\n',
                 "t.yaml:3: task 'job': schedule: '* * * 30 2 *' can never fire "
                 "(no matching date)", id="never-fires"),
    pytest.param('schedule: "* * * *"\ncommand: "true"\n',
                 "t.yaml:3: task 'job': schedule: '* * * *' has 4 fields; expected 6 (second "
                 "minute hour day-of-month month day-of-week) or 5 (classic cron)",
                 id="field-count"),
    pytest.param('schedule: "0 0 0 * FOO *"\ncommand: "true"\n',
                 "t.yaml:3: task 'job': schedule: month field: 'FOO' is not a number or a name "
                 "(JAN, FEB, MAR, APR, MAY, JUN, JUL, AUG, SEP, OCT, NOV, DEC)", id="bad-name"),
    pytest.param('schedule: "@fortnightly"\ncommand: "true"\n',
                 "t.yaml:3: task 'job': schedule: unknown macro '@fortnightly'; known: "
                 "@annually, @daily, @hourly, @midnight, @monthly, @weekly, @yearly, "
                 "@every <duration>, @random <min> <max>, @reboot", id="unknown-macro"),
    pytest.param('schedule: "@every 10 parsecs"\ncommand: "true"\n',
                 "t.yaml:3: task 'job': schedule: @every: '10 parsecs' is not a duration: use "
                 "seconds (30) or units s, m, h, d (e.g. '1h30m')", id="bad-every"),
    pytest.param('schedule: "@every 1s"\ncommand: no\n',
                 "t.yaml:4: task 'job': command: expected text, got a boolean (no); quote it "
                 "if you mean the text: 'no'", id="command-no"),
    pytest.param('schedule: 12:30:00\ncommand: "true"\n',
                 "t.yaml:3: task 'job': schedule: expected text, got a number (12:30:00); "
                 "quote it if you mean the text: '12:30:00'", id="sexagesimal"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nschedul: "x"\n',
                 "t.yaml:5: task 'job': schedul: unknown key (did you mean 'schedule'?); "
                 "known keys: name, schedule, after, command, type, hosts, max_running, env, "
                 "cwd, enabled, timezone, catchup, starting_deadline, overlap, queue_limit, "
                 "kill_grace, timeout, retries, at, start_at, end_at, jitter, user, group, "
                 "umask, nice, limits, log, hooks, run_on, http, lint, dst, window",
                 id="unknown-key"),
    pytest.param('schedule: "@hourly"\nat: 2026-12-01T10:00:00Z\ncommand: "true"\n',
                 "t.yaml:4: task 'job': at: give either schedule (repeating) or at (once), "
                 "not both", id="schedule-and-at"),
    pytest.param('at: next tuesday\ncommand: "true"\n',
                 "t.yaml:3: task 'job': at: 'next tuesday' is not an ISO 8601 time such as "
                 "2026-12-01T10:00:00+08:00", id="at-text"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nstart_at: "2027-01-01T00:00:00"\n'
                 'end_at: "2026-01-01T00:00:00"\n',
                 "t.yaml:6: task 'job': end_at: must be after start_at", id="window"),
    pytest.param('type: daemon\ncommand: "true"\njitter: 5s\n',
                 "t.yaml:5: task 'job': jitter: a daemon task is kept running and takes no "
                 "schedule", id="daemon-jitter"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\ntimeout: 0\n',
                 "t.yaml:5: task 'job': timeout: must be more than 0", id="timeout-zero"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nretries: {max: 2, backoff: 0.5}\n',
                 "t.yaml:5: task 'job': retries: backoff: expected a number of at least 1, got "
                 "a number (0.5)", id="retries-backoff"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nretries: {delay: 5s}\n',
                 "t.yaml:5: task 'job': retries: 'max' (how many retries) is required",
                 id="retries-max"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nretries: {max: 1, every: 5s}\n',
                 "t.yaml:5: task 'job': retries: unknown key 'every'; known: max, delay, "
                 "backoff, max_delay", id="retries-key"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\ntimezone: Mars/Olympus\n',
                 "t.yaml:5: task 'job': timezone: unknown time zone 'Mars/Olympus': no zone "
                 "of that name, and not a POSIX TZ rule (like 'CET-1CEST,M3.5.0,M10.5.0/3')",
                 id="task-zone"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\ncatchup: some\n',
                 "t.yaml:5: task 'job': catchup: 'some' is not one of: none, last, all",
                 id="catchup-choice"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\noverlap: stack\n',
                 "t.yaml:5: task 'job': overlap: 'stack' is not one of: skip, queue, replace",
                 id="overlap-choice"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nstarting_deadline: soon\n',
                 "t.yaml:5: task 'job': starting_deadline: 'soon' is not a duration: use "
                 "seconds (30) or units s, m, h, d (e.g. '1h30m')", id="deadline-duration"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nkill_grace: [1]\n',
                 "t.yaml:5: task 'job': kill_grace: expected a duration such as 30s or 5m, "
                 "got a list", id="grace-type"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nqueue_limit: 0\n',
                 "t.yaml:5: task 'job': queue_limit: must be at least 1, got 0",
                 id="queue-limit"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\ncommand: "false"\n',
                 "t.yaml:5: task 'job': command: duplicate key (first given at line 4)",
                 id="duplicate-key"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nmax_running: "2"\n',
                 "t.yaml:5: task 'job': max_running: expected a whole number written in "
                 "decimal, got text", id="max-running-text"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nenabled: yes\n',
                 "t.yaml:5: task 'job': enabled: write true or false, not 'yes'",
                 id="enabled-yes"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\ntype: cronjob\n',
                 "t.yaml:5: task 'job': type: 'cronjob' is not a task type; use cron or daemon",
                 id="bad-type"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nhosts: ["10.0.0.0/33"]\n',
                 "t.yaml:5: task 'job': hosts: item 1: '10.0.0.0/33' is not a valid CIDR "
                 "network: '33' is not a valid netmask", id="bad-cidr"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nhosts: ["999.1.1.1"]\n',
                 "t.yaml:5: task 'job': hosts: item 1: '999.1.1.1' is not a valid IPv4 address: "
                 "Octet 999 (> 255) not permitted in '999.1.1.1'; digits and dots alone make "
                 "an address, not a host name", id="bad-octet"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nhosts: ["web-["]\n',
                 "t.yaml:5: task 'job': hosts: item 1: 'web-[' is not a valid glob: its '[' has "
                 "no closing ']'", id="open-glob"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nhosts: "web-1"\n',
                 "t.yaml:5: task 'job': hosts: expected a list, got text", id="hosts-not-list"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nenv: {PORT: 8080}\n',
                 "t.yaml:5: task 'job': env: PORT: expected text, got a number (8080); quote it "
                 "if you mean the text: '8080'", id="env-number"),
    pytest.param('schedule: "@hourly"\ncommand: []\n',
                 "t.yaml:4: task 'job': command: must not be an empty list", id="empty-argv"),
    pytest.param('schedule: "@hourly"\ncommand: ["echo", "a\\0b"]\n',
                 "t.yaml:4: task 'job': command: item 2: must not contain a NUL character "
                 "(\\0)", id="nul-in-argument"),
    pytest.param('schedule: "@hourly"\ncommand: "true"\nenv: {A: "x\\0"}\n',
                 "t.yaml:5: task 'job': env: A: must not contain a NUL character (\\0)",
                 id="nul-in-env"),
    pytest.param('command: "true"\n',
                 "t.yaml:2: task 'job': schedule: is required for a cron task (or 'at' for a "
                 "one-time task)",
                 id="schedule-missing"),
    pytest.param('type: daemon\nschedule: "@hourly"\ncommand: "true"\n',
                 "t.yaml:4: task 'job': schedule: a daemon task is kept running and takes "
                 "no schedule", id="daemon-with-schedule"),
])
def test_single_problem(body: str, expected: str) -> None:
    """Each bad field is reported with file, line, task and field."""
    assert problems(task_file(body)) == [expected]


def test_name_that_yaml_reads_as_a_number() -> None:
    """`name: 0700` is an octal number to YAML 1.1, not the text 0700."""
    found = problems('tasks:\n  - name: 0700\n    schedule: "@hourly"\n    command: "true"\n')
    assert found == ["t.yaml:2: task '0700': name: expected text, got a number (0700); quote it "
                     "if you mean the text: '0700'"]


def test_every_problem_is_reported_at_once() -> None:
    """All errors across tasks and the daemon section come back together, in line order."""
    found = problems("""\
        daemon:
          timezone: Mars/Base
        tasks:
          - name: a
            schedule: "61 * * * * *"
            command: "true"
          - name: a
            schedule: "@hourly"
            command: no
          - name: "bad name!"
            schedule: "@hourly"
            command: "true"
        """)
    assert found == [
        "t.yaml:2: daemon.timezone: unknown time zone 'Mars/Base': no zone of that name, and "
        "not a POSIX TZ rule (like 'CET-1CEST,M3.5.0,M10.5.0/3')",
        "t.yaml:5: task 'a': schedule: second field '61' is out of range 0-59",
        "t.yaml:7: task 'a': name: duplicate task name (first defined at line 4)",
        "t.yaml:9: task 'a': command: expected text, got a boolean (no); quote it if you mean "
        "the text: 'no'",
        "t.yaml:10: task 'bad name!': name: 'bad name!' may only use letters, digits, '_', "
        "'.' and '-'",
    ]


@pytest.mark.parametrize(("data", "expected"), [
    pytest.param(b"", "t.yaml:1: the file is empty; expected a 'tasks:' list", id="empty"),
    pytest.param(b"# only a comment\n", "t.yaml:1: the file is empty; expected a 'tasks:' "
                 "list", id="comment-only"),
    pytest.param(b"tasks:\n  - name: caf\xe9\n", "t.yaml:2: not valid UTF-8 (byte 0xe9 at "
                 "offset 20)", id="latin-1"),
    pytest.param(b"tasks: [\n", "t.yaml:2:1: YAML syntax error: did not find expected node "
                 "content", id="syntax"),
    pytest.param(b"tasks: []\nextra: 1\n", "t.yaml:2: extra: unknown key; known keys: daemon, "
                 "tasks", id="unknown-top-key"),
    pytest.param(b"daemon: {}\n", "t.yaml:1: tasks: is required (a list of tasks)",
                 id="no-tasks"),
    pytest.param(b"tasks: 3\n", "t.yaml:1: tasks: expected a list, got a number (3)",
                 id="tasks-not-list"),
    pytest.param(b"tasks: []\n---\ntasks: []\n", "t.yaml:3: the file holds more than one YAML "
                 "document", id="two-documents"),
])
def test_file_level_problem(data: bytes, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "t.yaml", identity=None)
    assert [str(p) for p in caught.value.problems] == [expected]


INDENT_HINT = ("(check this line's indentation against the lines above: the keys of a mapping "
               "align, and so do the items of a list)")
ALIAS_HINT = ("(an unquoted '*' starts a YAML alias: quote cron expressions, as in "
              'schedule: "*/5 * * * * *")')


@pytest.mark.parametrize(("text", "expected", "excerpt"), [
    pytest.param("tasks:\n  - name: a\n    schedule: */3 * * * * *\n    command: x\n",
                 "t.yaml:3:15: YAML syntax error: did not find expected alphabetic or numeric "
                 f"character {ALIAS_HINT}",
                 ["        schedule: */3 * * * * *", "                  ^"], id="unquoted-cron"),
    pytest.param("tasks:\n  - {name: a, schedule: */5 * * * *, command: x}\n",
                 "t.yaml:2:25: YAML syntax error: did not find expected alphabetic or numeric "
                 f"character {ALIAS_HINT}",
                 ["      - {name: a, schedule: */5 * * * *, command: x}",
                  "                            ^"], id="unquoted-cron-in-flow"),
    pytest.param("tasks:\n  - name: a\n    schedule: *5 * * * *\n    command: x\n",
                 f"t.yaml:3:15: YAML syntax error: found undefined alias {ALIAS_HINT}",
                 ["        schedule: *5 * * * *", "                  ^"], id="star-digit"),
    pytest.param('tasks:\n  - name: a\n\tschedule: "*/5 * * * *"\n    command: x\n',
                 "t.yaml:3:1: YAML syntax error: found a tab character that violates "
                 "indentation (YAML indents with spaces, not tabs)",
                 ['    \tschedule: "*/5 * * * *"', "    ^"], id="tab-before-quoted-cron"),
    pytest.param('tasks:\n  - name: a\n    schedule: "@hourly"\n   command: ls *.txt\n',
                 "t.yaml:4:4: YAML syntax error: did not find expected '-' indicator "
                 f"{INDENT_HINT}", ["       command: ls *.txt", "       ^"],
                 id="key-indented-less"),
    pytest.param("tasks:\n  - name: a\n    command: x\n - name: b\n    command: y\n",
                 f"t.yaml:4:2: YAML syntax error: did not find expected key {INDENT_HINT}",
                 ["     - name: b", "     ^"], id="items-not-aligned"),
    pytest.param("tasks:\n  - name: a\n    schedule: daily\n      command: x\n",
                 "t.yaml:4:14: YAML syntax error: mapping values are not allowed in this "
                 f"context {INDENT_HINT}", ["          command: x", "                 ^"],
                 id="key-indented-more"),
    pytest.param("tasks:\n  - name: a\n    command: curl -H Accept: json\n",
                 "t.yaml:3:28: YAML syntax error: mapping values are not allowed in this "
                 "context (': ' inside an unquoted value starts a mapping: quote the value)",
                 ["        command: curl -H Accept: json", "                               ^"],
                 id="colon-in-value"),
    pytest.param("tasks:\n  - name: a\n    schedule: @hourly\n",
                 "t.yaml:3:15: YAML syntax error: found character that cannot start any token "
                 """('@' cannot start an unquoted value: quote it, as in schedule: "@hourly")""",
                 ["        schedule: @hourly", "                  ^"], id="unquoted-macro"),
    pytest.param('tasks:\n  - name: a\n    schedule: "*/5 * * * *\n',
                 "t.yaml:3:15: YAML syntax error: found unexpected end of stream (the quote "
                 "that opens here is not closed)",
                 ['        schedule: "*/5 * * * *', "                  ^"], id="unclosed-quote"),
    pytest.param('tasks:\n  - name: "caf\u00e9\x01"\n',
                 "t.yaml:2:16: YAML error: unacceptable character #x0001: control characters "
                 "are not allowed", ['      - name: "caf\u00e9\ufffd"', "                   ^"],
                 id="control-character"),
])
def test_syntax_error(text: str, expected: str, excerpt: list[str]) -> None:
    """Line and column, the line with a caret under the column, and a hint that fits the
    error: the cron hint only for a '*' YAML read as an alias."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text.encode(), "t.yaml", identity=None)
    problem, = caught.value.problems
    assert (str(problem), list(problem.excerpt())) == (expected, excerpt)


def test_excerpt_of_a_long_line_is_cut_around_the_column() -> None:
    source = "x" * 150 + "!" + "y" * 150
    problem = ConfigProblem("t.yaml", 1, None, None, "bad", column=151, source=source)
    line, caret = problem.excerpt()
    assert line == "    ..." + "x" * 50 + "!" + "y" * 49 + "..."
    assert caret == "    " + " " * 53 + "^"


def test_every_bad_item_of_a_list_or_mapping_is_reported() -> None:
    """Not only the first: each bad item with its line, and its number or key."""
    found = problems("""\
        daemon:
          hooks:
            on_start: {webhook: {url: "ftp://x", headers: {A: 1}, timeout: 0}}
            on_crash: x
        tasks:
          - name: job
            schedule: "@hourly"
            command: ["echo", 5, no]
            hosts: ["10.0.0.0/33", "fe80::/129", "",
                    "web-1"]
            env: {DEBUG: yes, N: 3, OK: "x", 1X: a}
            retries: {max: -1, delay: soon, every: 5s}
            limits:
              nofile: lots
              cpu: 60
              core: -1
        """)
    assert found == [
        "t.yaml:3: daemon.hooks: on_start: webhook: url: 'ftp://x' is not an http:// or "
        "https:// URL",
        "t.yaml:3: daemon.hooks: on_start: webhook: headers: A: expected text, got a number "
        "(1); quote it if you mean the text: '1'",
        "t.yaml:3: daemon.hooks: on_start: webhook: timeout: must be more than 0",
        "t.yaml:4: daemon.hooks: unknown hook 'on_crash'; known: on_start, on_success, "
        "on_failure, on_missed",
        "t.yaml:8: task 'job': command: item 2: expected text, got a number (5); quote it if "
        "you mean the text: '5'",
        "t.yaml:8: task 'job': command: item 3: expected text, got a boolean (no); quote it if "
        "you mean the text: 'no'",
        "t.yaml:9: task 'job': hosts: item 1: '10.0.0.0/33' is not a valid CIDR network: '33' "
        "is not a valid netmask",
        "t.yaml:9: task 'job': hosts: item 2: 'fe80::/129' is not a valid CIDR network: '129' "
        "is not a valid netmask",
        "t.yaml:9: task 'job': hosts: item 3: empty host pattern; expected an IP address "
        "(10.0.0.5), a CIDR network (10.0.0.0/24), a host name (web-1.example.com) or a glob "
        "(web-*)",
        "t.yaml:11: task 'job': env: DEBUG: expected text, got a boolean (yes); quote it if "
        "you mean the text: 'yes'",
        "t.yaml:11: task 'job': env: N: expected text, got a number (3); quote it if you mean "
        "the text: '3'",
        "t.yaml:11: task 'job': env: '1X' is not a valid environment variable name",
        "t.yaml:12: task 'job': retries: max: must be 0 or more, got -1",
        "t.yaml:12: task 'job': retries: delay: 'soon' is not a duration: use seconds (30) or "
        "units s, m, h, d (e.g. '1h30m')",
        "t.yaml:12: task 'job': retries: unknown key 'every'; known: max, delay, backoff, "
        "max_delay",
        "t.yaml:14: task 'job': limits: nofile: expected a whole number or 'unlimited', got "
        "text",
        "t.yaml:16: task 'job': limits: core: must be 0 or more, got -1",
    ]


def test_valid_file_becomes_frozen_specs() -> None:
    config = parse_config(textwrap.dedent("""\
        daemon: {state_dir: /tmp/x, timezone: Europe/London, watch: false}
        tasks:
          - name: report
            schedule: "*/5 * * * *"
            command: ["/usr/bin/report", "--daily"]
            hosts: ["10.0.0.0/24", "127.0.0.1", "web-*"]
            max_running: 0
            env: {MODE: fast}
            cwd: /tmp
          - name: keeper
            type: daemon
            command: sleep 100
            enabled: false
        """).encode(), "t.yaml", identity=None)
    assert config.daemon.state_dir == "/tmp/x"
    assert config.daemon.timezone == "Europe/London"
    assert config.daemon.watch is False
    report, keeper = config.tasks
    assert report.schedule is not None
    assert report.schedule.text == "*/5 * * * *"
    assert report.command == ("/usr/bin/report", "--daily")
    assert report.max_running == 0
    assert report.env == (("MODE", "fast"),)
    assert report.line == 3
    assert keeper.kind is TaskKind.DAEMON
    assert keeper.command == ("/bin/sh", "-c", "sleep 100")
    assert keeper.enabled is False
    assert keeper.active is False


def test_host_filter_is_evaluated_against_the_identity() -> None:
    import ipaddress

    identity = HostIdentity(hostnames=frozenset({"web-3"}),
                            addresses=frozenset({ipaddress.ip_address("127.0.0.1")}))
    config = parse_config(textwrap.dedent("""\
        tasks:
          - {name: here, schedule: "@hourly", command: "true", hosts: ["127.0.0.1"]}
          - {name: glob, schedule: "@hourly", command: "true", hosts: ["web-*"]}
          - {name: away, schedule: "@hourly", command: "true", hosts: ["203.0.113.7"]}
        """).encode(), "t.yaml", identity=identity)
    assert [t.for_this_host for t in config.tasks] == [True, True, False]


def test_digest_changes_with_content() -> None:
    one = parse_config(b"tasks: []\n", "t.yaml", identity=None)
    two = parse_config(b"tasks: []\n# edit\n", "t.yaml", identity=None)
    assert one.digest != two.digest
    assert len(one.digest) == 12


def test_schedule_cache_reuses_and_prunes() -> None:
    """A reload reuses the Schedule of an unchanged expression and forgets unused ones."""
    cache = ParseCache()
    first = parse_config(b'tasks: [{name: a, schedule: "*/5 * * * * *", command: "true"},'
                         b' {name: b, schedule: "@hourly", command: "true"}]\n', "t.yaml",
                         identity=None, cache=cache)
    second = parse_config(b'tasks: [{name: a, schedule: "*/5 * * * * *", command: "x"}]\n',
                          "t.yaml", identity=None, cache=cache)
    assert second.tasks[0].schedule is first.tasks[0].schedule
    assert [key.split("\0")[0] for key in cache.schedules] == ["*/5 * * * * *"]


def _parse(text: str, cache: ParseCache) -> tuple[TaskSpec, ...]:
    return parse_config(textwrap.dedent(text).encode(), "t.yaml", identity=None,
                        cache=cache).tasks


def test_unchanged_tasks_are_reused_with_their_new_line() -> None:
    cache = ParseCache()
    old = _parse("""\
        tasks:
          - {name: a, schedule: "@hourly", command: "true"}
          - name: b
            schedule: "@daily"
            command: "true"
        """, cache)
    moved = """\
        tasks:
          # a new comment moves every task down one line
          - {name: a, schedule: "@hourly", command: "false"}
          - name: b
            schedule: "@daily"
            command: "true"
        """
    new = _parse(moved, cache)
    assert new[0] is not old[0]
    assert new[0].command == ("/bin/sh", "-c", "false")
    assert new[1] == old[1]
    assert new[1].line == 4
    assert old[1].line == 3
    third = _parse(moved, cache)
    assert third[0] is new[0]
    assert third[1] is new[1]


def test_reused_tasks_follow_the_daemon_settings() -> None:
    """A task's text is reused only against the same daemon section: here its zone."""
    cache = ParseCache()
    body = 'tasks: [{name: a, schedule: "0 0 9 * * *", command: "true"}]\n'
    assert _parse("daemon: {timezone: UTC}\n" + body, cache)[0].timezone == "UTC"
    again = _parse("daemon: {timezone: Europe/Paris}\n" + body, cache)
    assert again[0].timezone == "Europe/Paris"


def test_an_alias_is_read_again_when_its_anchor_changes() -> None:
    cache = ParseCache()
    text = """\
        tasks:
          - {name: a, schedule: &when "@hourly", command: "true"}
          - {name: b, schedule: *when, command: "true"}
        """
    assert _parse(text, cache)[1].schedule_text == "@hourly"
    assert _parse(text.replace('"@hourly"', '"@daily"'), cache)[1].schedule_text == "@daily"


@pytest.mark.parametrize("anchored", [
    '  - name: a\n    schedule: &when "@hourly"\n    command: "true"\n',
    '  - name: a\n    schedule:\n      &when\n      "@hourly"\n    command: "true"\n',
    '  - name: a\n    schedule: !!str &when "@hourly"\n    command: "true"\n',
    '  - {name: a, command: "true", schedule:\n      &when "@hourly"}\n',
    '  - name: a\n    schedule: "@hourly"\n    command: [&when "@hourly"]\n',
    '  - name: a\n    schedule: "@hourly"\n    command:\n      - &when "@hourly"\n',
], ids=["block", "own-line", "after-tag", "flow-next-line", "flow-list", "block-list"])
def test_an_anchor_anywhere_makes_its_alias_read_again(anchored: str) -> None:
    cache = ParseCache()
    text = "tasks:\n" + anchored + '  - {name: b, schedule: *when, command: "a && b"}\n'
    assert _parse(text, cache)[1].schedule_text == "@hourly"
    changed = text.replace('"@hourly"', '"@daily"')
    assert _parse(changed, cache)[1].schedule_text == "@daily"


def test_shell_ampersands_do_not_stop_reuse() -> None:
    """`&&` in a command is no YAML anchor: unchanged tasks are still reused."""
    cache = ParseCache()
    text = """\
        tasks:
          - {name: a, schedule: "@hourly", command: "cd /tmp && true"}
          - name: b
            schedule: "@daily"
            command: cd /tmp && sleep 1 & wait
        """
    old = _parse(text, cache)
    new = _parse(text.replace("cd /tmp && true", "cd / && true"), cache)
    assert new[0] is not old[0]
    assert new[1] is old[1]


def test_reused_tasks_are_still_checked_for_duplicate_names() -> None:
    cache = ParseCache()
    line = '  - {name: a, schedule: "@hourly", command: "true"}\n'
    _parse("tasks:\n" + line, cache)
    with pytest.raises(ConfigError) as caught:
        _parse("tasks:\n" + line + line, cache)
    assert [str(p) for p in caught.value.problems] == [
        "t.yaml:3: task 'a': name: duplicate task name (first defined at line 2)"]
    assert _parse("tasks:\n" + line, cache)[0].line == 2


def test_execution_policies_and_task_zone() -> None:
    config = parse_config(textwrap.dedent("""\
        daemon: {timezone: UTC}
        tasks:
          - name: report
            schedule: "0 30 1 * * *"
            command: "true"
            timezone: America/New_York
            catchup: all
            starting_deadline: 1h
            overlap: queue
            queue_limit: 3
            kill_grace: 2.5
            timeout: 1m30s
            retries: {max: 3, delay: 5s, backoff: 3, max_delay: 1m}
          - name: plain
            schedule: "0 30 1 * * *"
            command: "true"
        """).encode(), "t.yaml", identity=None)
    report, plain = config.tasks
    assert (report.timezone, plain.timezone) == ("America/New_York", "UTC")
    assert (report.catchup, report.starting_deadline) == ("all", 3600.0)
    assert (report.overlap, report.queue_limit, report.kill_grace) == ("queue", 3, 2.5)
    assert (plain.catchup, plain.starting_deadline, plain.overlap) == ("none", None, "skip")
    assert report.timeout == 90.0
    assert report.retries == RetryPolicy(max=3, delay=5.0, backoff=3.0, max_delay=60.0)
    assert report.retries is not None
    assert [report.retries.delay_before(n) for n in (2, 3, 4)] == [5.0, 15.0, 45.0]
    assert report.retries.delay_before(5) == 60.0  # capped by max_delay
    assert (plain.timeout, plain.retries) == (None, None)
    # The same expression in two zones is two schedules, five hours apart.
    assert report.schedule is not None
    assert plain.schedule is not None
    in_new_york, in_utc = report.schedule.next_after(0.0), plain.schedule.next_after(0.0)
    assert in_new_york is not None
    assert in_utc is not None
    assert in_new_york - in_utc == 5 * 3600  # 1970-01-01 01:30 EST is 06:30 UTC


def test_one_time_and_windowed_tasks() -> None:
    config = parse_config(textwrap.dedent("""\
        daemon: {timezone: UTC}
        tasks:
          - name: once
            at: 2026-12-01T10:00:00+08:00
            command: "true"
          - name: once-local
            at: "2026-12-01T10:00:00"
            timezone: Asia/Tokyo
            command: "true"
          - name: season
            schedule: "@daily"
            start_at: 2026-12-01T00:00:00Z
            end_at: "2026-12-03T00:00:00Z"
            jitter: 30s
            command: "true"
        """).encode(), "t.yaml", identity=None)
    once, once_local, season = config.tasks
    assert once.schedule is not None
    assert once.schedule.next_after(0.0) == _utc("2026-12-01T02:00:00")
    assert once.schedule.next_after(_utc("2026-12-01T02:00:00")) is None
    assert once_local.schedule is not None
    assert once_local.schedule.next_after(0.0) == _utc("2026-12-01T01:00:00")  # 10:00 JST
    assert (once.catchup, season.catchup) == ("last", "none")  # a one-time task catches up
    assert season.jitter == 30.0
    assert season.schedule is not None
    fires, cursor = [], 0.0
    while (cursor := season.schedule.next_after(cursor)) is not None:  # type: ignore[assignment]
        fires.append(cursor)
    assert fires == [_utc(f"2026-12-0{day}T00:00:00") for day in (1, 2, 3)]


def _utc(naive_iso: str) -> float:
    return datetime.fromisoformat(naive_iso + "+00:00").timestamp()


def test_daemon_wide_limit() -> None:
    config = parse_config(b"daemon: {max_running: 4, overlap: queue, queue_limit: 50}\n"
                          b"tasks: []\n", "t.yaml", identity=None)
    assert (config.daemon.max_running, config.daemon.overlap) == (4, "queue")
    assert config.daemon.queue_limit == 50
    assert problems("daemon: {max_running: 4, overlap: replace}\ntasks: []\n") == [
        "t.yaml:1: daemon.overlap: use skip or queue (replace is a per-task policy: which "
        "task's run would it stop?)"]


def test_accounts_and_process_attributes() -> None:
    config = parse_config(textwrap.dedent("""\
        tasks:
          - name: as-nobody
            schedule: "@hourly"
            command: "id"
            user: nobody
            group: nogroup
            umask: "0027"
            nice: 5
            limits: {nofile: 256, cpu: 60, memory: unlimited}
          - name: octal
            schedule: "@hourly"
            command: "id"
            umask: 0077
        """).encode(), "t.yaml", identity=None, as_root=True)
    nobody, octal = config.tasks
    assert (nobody.user, nobody.group, nobody.umask, nobody.nice) == ("nobody", "nogroup",
                                                                      0o027, 5)
    assert nobody.limits == (("cpu", 60), ("memory", None), ("nofile", 256))
    assert octal.umask == 0o077


@pytest.mark.parametrize(("body", "as_root", "expected"), [
    ("user: nobody\n", False, "t.yaml:5: task 'job': user: running tasks as another user "
     f"needs torchd to run as root (it runs as uid {os.geteuid()})"),
    ("user: no-such-account\n", True,
     "t.yaml:5: task 'job': user: no such user 'no-such-account' on this host"),
    ("group: no-such-group\n", True,
     "t.yaml:5: task 'job': group: no such group 'no-such-group' on this host"),
    ("nice: -5\n", False, "t.yaml:5: task 'job': nice: a negative nice level needs torchd "
     "to run as root"),
    ("nice: 40\n", True, "t.yaml:5: task 'job': nice: expected a nice level from -20 to 19, "
     "got a number (40)"),
    ("umask: 27\n", True, "t.yaml:5: task 'job': umask: expected an octal mask with a "
     "leading 0 such as '0027', got a number (27)"),
    ("limits: {files: 10}\n", True, "t.yaml:5: task 'job': limits: unknown limit 'files'; "
     "known: nofile, cpu, memory, nproc, core, fsize, stack"),
    ("limits: {nofile: lots}\n", True, "t.yaml:5: task 'job': limits: nofile: expected a "
     "whole number or 'unlimited', got text"),
])
def test_account_problems(body: str, as_root: bool, expected: str) -> None:
    text = task_file('schedule: "@hourly"\ncommand: "true"\n' + body)
    with pytest.raises(ConfigError) as caught:
        parse_config(text.encode(), "t.yaml", identity=None, as_root=as_root)
    assert [str(p) for p in caught.value.problems] == [expected]


def test_logs_hooks_and_history() -> None:
    """The task's log keys lay over the daemon's; hooks keep their order; history shapes."""
    config = parse_config(textwrap.dedent("""
        daemon:
          log: {max_bytes: 1MB, keep: 3}
          history: {keep_days: 7, keep_runs_per_task: 50}
          hooks:
            on_failure: {webhook: {url: "http://127.0.0.1:9/x", headers: {X-A: b}}}
        tasks:
          - name: job
            schedule: "@hourly"
            command: "true"
            log: {split: true, max_run_bytes: 64KB}
            hooks:
              on_start: "echo hi"
              on_success: {command: [notify, ok], timeout: 5s}
          - {name: plain, schedule: "@hourly", command: "true"}
    """).encode(), "t.yaml", identity=None)
    job, plain = config.tasks
    assert (job.log.max_bytes, job.log.keep, job.log.split, job.log.max_run_bytes) == (
        1 << 20, 3, True, 64 << 10)
    assert plain.log == config.daemon.log
    assert plain.log.run_cap(TaskKind.CRON) == 1 << 20
    assert plain.log.run_cap(TaskKind.DAEMON) is None
    assert [(str(event), action.command, action.timeout) for event, action in job.hooks] == [
        ("on_start", ("/bin/sh", "-c", "echo hi"), 60.0),
        ("on_success", ("notify", "ok"), 5.0)]
    (event, action), = config.daemon.hooks
    assert action.webhook is not None
    assert (str(event), action.webhook.url, action.webhook.headers) == (
        "on_failure", "http://127.0.0.1:9/x", (("X-A", "b"),))
    assert (config.daemon.history.keep_days, config.daemon.history.keep_runs_per_task) == (7, 50)
    off = parse_config(b"daemon: {history: false}\ntasks: []\n", "t.yaml", identity=None)
    assert off.daemon.history.enabled is False


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("daemon: {log: {max_bytes: 10 apples}}\ntasks: []\n",
                 "t.yaml:1: daemon.log: max_bytes: expected a size above 0 such as 10MB, 512KB "
                 "or 1048576, got text", id="size"),
    pytest.param("daemon: {log: {rotate: daily}}\ntasks: []\n",
                 "t.yaml:1: daemon.log: unknown key 'rotate'; known: max_bytes, keep, split, "
                 "max_run_bytes, stdout, stdout_rate, timestamps", id="log-key"),
    pytest.param("daemon: {history: {keep_days: 0}}\ntasks: []\n",
                 "t.yaml:1: daemon.history: keep_days: expected a number of days above 0, got "
                 "a number (0)", id="keep-days"),
    pytest.param("daemon: {hooks: {on_crash: x}}\ntasks: []\n",
                 "t.yaml:1: daemon.hooks: unknown hook 'on_crash'; known: on_start, on_success, "
                 "on_failure, on_missed", id="hook-name"),
    pytest.param("daemon: {hooks: {on_start: {webhook: {url: ftp://x}}}}\ntasks: []\n",
                 "t.yaml:1: daemon.hooks: on_start: webhook: url: 'ftp://x' is not an http:// "
                 "or https:// URL", id="hook-url"),
    pytest.param("daemon: {hooks: {on_start: {timeout: 5s}}}\ntasks: []\n",
                 "t.yaml:1: daemon.hooks: on_start: give a command, a webhook, or both",
                 id="hook-empty"),
    pytest.param("daemon: {socket_group: no-such-group-here}\ntasks: []\n",
                 "t.yaml:1: daemon.socket_group: no such group 'no-such-group-here' on this "
                 "host", id="socket-group"),
])
def test_operations_settings_problems(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_cluster_settings() -> None:
    config = parse_config(textwrap.dedent("""
        daemon:
          cluster: {redis: "redis://10.0.0.5:6379/0", name: prod, max_load: 0.75, lease_ttl: 30s}
        tasks:
          - {name: once, schedule: "@hourly", command: "true", run_on: one}
          - {name: everywhere, schedule: "@hourly", command: "true"}
    """).encode(), "t.yaml", identity=None)
    cluster = config.daemon.cluster
    assert cluster is not None
    assert (cluster.redis, cluster.name, cluster.host_id, cluster.max_load, cluster.lease_ttl) \
        == ("redis://10.0.0.5:6379/0", "prod", None, 0.75, 30.0)
    assert [str(t.run_on) for t in config.tasks] == ["one", "all"]
    plain = parse_config(b"tasks: []\n", "t.yaml", identity=None)
    assert plain.daemon.cluster is None


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("daemon: {cluster: {name: prod}}\ntasks: []\n",
                 "t.yaml:1: daemon.cluster: 'redis' (the Redis URL) is required", id="no-url"),
    pytest.param("daemon: {cluster: {redis: 'http://x'}}\ntasks: []\n",
                 "t.yaml:1: daemon.cluster: redis: 'http://x' is not a Redis URL such as "
                 "redis://10.0.0.5:6379/0", id="url"),
    pytest.param("daemon: {cluster: {redis: 'redis://x', lease_ttl: 1s}}\ntasks: []\n",
                 "t.yaml:1: daemon.cluster: lease_ttl: must be at least 3s (the lease is "
                 "renewed every third of it, and a renewal may take 1 s)", id="ttl"),
    pytest.param("daemon: {cluster: {redis: 'redis://x', name: 'a b'}}\ntasks: []\n",
                 "t.yaml:1: daemon.cluster: name: 'a b' may only use letters, digits, '_', "
                 "'.' and '-'", id="name"),
    pytest.param('tasks:\n  - {name: j, schedule: "@hourly", command: "true", run_on: two}\n',
                 "t.yaml:2: task 'j': run_on: 'two' is not one of: all, one", id="run-on"),
])
def test_cluster_problems(text: str, expected: str) -> None:
    assert problems(text) == [expected]
