"""`torchd import`: each crontab(5) rule and each gotorch rule as the importer reads it,
and the file it writes loaded by the real loader (the fire-by-fire comparisons are in
tests/integration/test_import_fires.py, the CLI in tests/e2e/test_import.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchd.config.importcron import import_crontab, is_system_path, split_percent
from torchd.config.importgotorch import gotorch_values, import_gotorch
from torchd.config.importout import Imported, name_from_command, render
from torchd.config.source import load_config
from torchd.core.model import TaskSpec

JAN_1_2026 = 1767225600.0


def only(entries: list[Imported]) -> dict[str, object]:
    (entry,) = [e for e in entries if e.skipped is None]
    return dict(entry.keys)


def loaded(entries: list[Imported], tmp_path: Path) -> tuple[TaskSpec, ...]:
    path = tmp_path / "imported.yaml"
    path.write_text(render(entries, "test", "crontab"))
    return load_config(path, identity=None).tasks


@pytest.mark.parametrize(("text", "command", "stdin"), [
    ("echo a", "echo a", None),
    ("echo 5\\% off", "echo 5% off", None),
    ("mail root%line 1%line 2", "mail root", "line 1\nline 2"),
    ("cat%a\\%b%", "cat", "a%b\n"),
    ("cat%", "cat", ""),
    ("echo \\n%x\\y", "echo \\n", "x\\y"),
], ids=["plain", "escaped", "stdin", "escaped-in-stdin", "empty-stdin", "other-backslash"])
def test_percent_ends_the_command_and_the_rest_is_stdin(text: str, command: str,
                                                        stdin: str | None) -> None:
    """The first unescaped % ends the command; later ones are newlines; \\% is a %."""
    assert split_percent(text) == (command, stdin)


def test_environment_lines_apply_below_with_quotes_and_no_expansion() -> None:
    """NAME = value, quotes removed, $ kept, only for the lines below."""
    text = "* * * * * /bin/a\nA = \"x  y\"\nB='$HOME'\n  C=$A\n* * * * * /bin/b\n"
    entries = import_crontab(text, "t", system=False)
    assert "env" not in dict(entries[0].keys)
    assert dict(entries[1].keys)["env"] == {"A": "x  y", "B": "$HOME", "C": "$A"}


def test_path_defaults_and_is_written_only_where_a_name_is_looked_up() -> None:
    """PATH=/usr/bin:/bin for a command found by name; none for an absolute path."""
    entries = import_crontab("* * * * * /bin/true\n* * * * * true\n"
                             "* * * * * /bin/true | true\n", "t", system=False)
    envs = [dict(e.keys).get("env", {}) for e in entries]
    assert envs == [{}, {"PATH": "/usr/bin:/bin"}, {"PATH": "/usr/bin:/bin"}]


def test_shell_mail_tz_and_random_delay() -> None:
    """SHELL -> [SHELL, -c, cmd]; MAILTO dropped with a warning; CRON_TZ -> timezone;
    RANDOM_DELAY (minutes) -> jitter."""
    text = ("SHELL=/bin/bash\nMAILTO=me\nCRON_TZ=Europe/Paris\nRANDOM_DELAY=7\n"
            "0 8 * * * /bin/x\n")
    (entry,) = import_crontab(text, "t", system=False)
    keys = dict(entry.keys)
    assert keys["command"] == ["/bin/bash", "-c", "/bin/x"]
    assert keys["timezone"] == "Europe/Paris"
    assert keys["jitter"] == "7m"
    assert "env" not in keys
    assert any("MAILTO (t:2) is dropped" in w and "hook" in w for w in entry.warnings)


def test_a_bad_cron_tz_is_left_out_with_a_warning() -> None:
    """An unknown CRON_TZ is not written (the file must pass check), and is said."""
    (entry,) = import_crontab("CRON_TZ=Mars/Olympus\n0 8 * * * /bin/x\n", "t", system=False)
    assert "timezone" not in dict(entry.keys)
    assert "CRON_TZ 'Mars/Olympus' (t:1)" in entry.warnings[0]


def test_hash_is_a_comment_only_at_the_start_of_a_line() -> None:
    """`#` after the schedule is part of the command, as in cron."""
    entries = import_crontab("# c\n  # c\n* * * * * echo a # b\n", "t", system=False)
    assert only(entries)["command"] == "echo a # b"


def test_the_user_column_of_a_system_crontab_becomes_user() -> None:
    """--system, or /etc/crontab and /etc/cron.d/*: the sixth word is the user."""
    entries = import_crontab("17 * * * * root /bin/x arg\n@reboot nobody /bin/y\n", "t",
                             system=True)
    assert [dict(e.keys)["user"] for e in entries] == ["root", "nobody"]
    assert dict(entries[0].keys)["command"] == "/bin/x arg"
    assert is_system_path("/etc/crontab")
    assert is_system_path("/etc/cron.d/php")
    assert not is_system_path("/var/spool/cron/crontabs/root")


@pytest.mark.parametrize(("line", "reason"), [
    ("61 * * * * /bin/x", "schedule '61 * * * *': minute field '61' is out of range 0-59"),
    ("@fortnightly /bin/x", "unknown nickname '@fortnightly'"),
    ("* * * /bin/x", "expected five time fields and a command"),
    ("BAD-NAME=x", "environment line: 'BAD-NAME' is not a variable name torchd can set"),
    ("* * * * * /bin/a\0b", "the line holds a NUL character"),
], ids=["range", "nickname", "short", "bad-name", "nul"])
def test_a_line_torchd_cannot_take_is_skipped_with_its_reason(line: str, reason: str) -> None:
    """Skipped, not guessed at: the reason names the field."""
    (entry,) = import_crontab(line + "\n", "t", system=False)
    assert entry.skipped is not None
    assert entry.skipped.startswith(reason)


def test_names_come_from_the_command_and_are_unique(tmp_path: Path) -> None:
    """The program's base name past assignments and wrappers; -2, -3 for repeats."""
    assert name_from_command("X=1 nice -n 5 /usr/local/bin/backup.sh --full") == "backup.sh"
    assert name_from_command("timeout 60 'my tool'") == "my-tool"
    entries = import_crontab("* * * * * /bin/x\n* * * * * /bin/x\n@daily /bin/x\n", "t",
                             system=False)
    assert [t.name for t in loaded(entries, tmp_path)] == ["x", "x-2", "x-3"]


def test_five_fields_stay_five_and_names_sundays_and_steps_load(tmp_path: Path) -> None:
    """The schedule is written as cron had it, and the loader takes every form."""
    lines = ["0 9-17/2 * * mon-fri", "15 4 * jan,jul *", "0 0 * * 7", "*/5 * 1-10 * *",
             "@weekly", "@reboot"]
    entries = import_crontab("".join(f"{s} /bin/x\n" for s in lines), "t", system=False)
    specs = loaded(entries, tmp_path)
    assert [dict(e.keys)["schedule"] for e in entries] == lines
    assert len(specs) == len(lines)


@pytest.mark.parametrize(("field", "index", "values"), [
    ("*", 0, set(range(59))),  # never second 59
    ("*", 2, set(range(23))),  # never hour 23
    ("*", 3, set(range(1, 31))),  # never day 31
    ("*", 4, set(range(1, 7))),  # weekday: Go's Sunday is 0: never
    ("*", 5, set(range(1, 12))),  # never December
    ("*/15", 1, {0, 15, 30, 45}),
    ("5", 1, set()),  # a plain number: start = end, nothing set
    ("2-4", 2, set()),  # a range: start = end = 2, nothing set
    ("1,2", 0, set()),  # a list of numbers: nothing
    ("*/20,7", 0, {0, 20, 40}),
    ("1/2/3", 0, None),  # gotorch refused it
], ids=["sec", "hour", "day", "weekday", "month", "step", "number", "range", "list",
        "step-and-number", "refused"])
def test_gotorch_values_are_what_its_parser_set(field: str, index: int,
                                                values: set[int] | None) -> None:
    """gotorch's parseTimeRange (src/task/attr.go): `for start < end`, ranges split wrong."""
    assert gotorch_values(field, index) == values


def test_gotorch_fields_are_reordered_and_keys_mapped() -> None:
    """second minute hour day WEEKDAY month -> torchd's order; Max, Ips, daemon, argv."""
    text = ('[{"Command": "/bin/x a  b", "TaskType": "common", "Times": "0 30 6 * 1-5 */3",'
            ' "Max": 2, "Ips": ["10.0.0.1"]},\n {"Command": "/bin/d", "TaskType": "daemon",'
            ' "Times": "* * * * * *", "Max": 3, "Ips": []}]')
    common, daemon = import_gotorch(text, "g.json", JAN_1_2026)
    assert dict(common.keys) == {"schedule": "0 30 6 * */3 1-5", "command": ["/bin/x", "a", "b"],
                                 "max_running": 2, "hosts": ["10.0.0.1"]}
    assert dict(daemon.keys) == {"command": ["/bin/d"], "type": "daemon", "max_running": 3}
    assert (common.origin, daemon.origin) == ("g.json:1", "g.json:2")


def test_gotorch_weekday_steps_count_from_monday() -> None:
    """gotorch's weekday range is 1-7: */2 is Monday, Wednesday, Friday, Sunday."""
    text = '[{"Command": "/bin/x", "Times": "0 0 8 * */2 *"}]'
    assert only(import_gotorch(text, "g", JAN_1_2026))["schedule"] == "0 0 8 * * 1-7/2"


@pytest.mark.parametrize(("times", "days", "warning"), [
    ("0 0 0 * * *", 0, "gotorch never fired it at all: its second, minute, hour field matched "
                    "nothing; the first such time is 2026-01-01T00:00:00+00:00"),
    ("*/30 * * * * *", 0, "gotorch never matched minute 59; the first such time is "
                       "2026-01-01T00:59:00+00:00"),
    ("* * * * * *", 0, "gotorch never matched second 59; the first such time is "
                    "2026-01-01T00:00:59+00:00"),
    ("*/30 */30 */2 * * *", 25, "gotorch never matched day-of-month 31; the first such "
                                "time is 2026-01-31T00:00:00+00:00"),  # from Monday 26th
    ("*/30 */30 */2 */2 * *", 0, "gotorch never matched weekday 0; the first such time is "
                              "2026-01-11T00:00:00+00:00"),
], ids=["numbers", "minute-59", "second-59", "day-31", "sunday"])
def test_gotorch_warns_with_the_first_time_it_never_fired(times: str, days: int,
                                                         warning: str) -> None:
    """The earliest fire of the imported schedule that gotorch's parser never matched."""
    (entry,) = import_gotorch(f'[{{"Command": "/bin/x", "Times": "{times}"}}]', "g",
                              JAN_1_2026 + days * 86400 - 1)
    assert entry.warnings == [f"fires at times gotorch's never did; {warning}"]


def test_gotorch_empty_command_and_bad_times_are_skipped() -> None:
    """gotorch could not run these either: skipped with the reason."""
    text = '[{"Command": "", "Times": "* * * * * *"}, {"Command": "/x", "Times": "* * * *"}]'
    empty, short = import_gotorch(text, "g", JAN_1_2026)
    assert empty.skipped == "Command is empty (gotorch could not start it either)"
    assert short.skipped is not None
    assert "time format error" in short.skipped


def test_text_yaml_cannot_hold_is_escaped(tmp_path: Path) -> None:
    """A control character in a command or a warning still gives a file that loads, and
    the command keeps it."""
    text = "CRON_TZ=Bad\x7fZone\n* * * * * /bin/echo a\x01b\x85c\u00e9\n"
    (spec,) = loaded(import_crontab(text, "t\x02", system=False), tmp_path)
    assert spec.command == ("/bin/sh", "-c", "/bin/echo a\x01b\x85c\u00e9")


def test_a_crontab_line_ends_only_at_newline() -> None:
    """A form feed or NEL inside a line does not split it (str.splitlines would); a
    Windows \\r\\n ending is read as \\n."""
    entries = import_crontab("* * * * * /bin/a\x0cb\x85c\r\n* * * * * /bin/d\r\n", "t",
                             system=False)
    assert [dict(e.keys)["command"] for e in entries] == ["/bin/a\x0cb\x85c", "/bin/d"]
    assert [e.origin for e in entries] == ["t:1", "t:2"]


@pytest.mark.parametrize(("command", "name"), [
    ("test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
     "cron.daily"),
    ("test -e /run/systemd/system || SERVICE_MODE=1 /usr/lib/e2fsprogs/e2scrub_all_cron",
     "e2scrub_all_cron"),
    ("cd /srv/app && ./manage.py clearsessions", "manage.py"),
    ("[ -f /x ] && /usr/bin/php /srv/job.php >/dev/null 2>&1", "php"),
    ("test -f /x", "x"),
], ids=["debian-daily", "e2scrub", "cd", "bracket", "only-a-test"])
def test_a_list_is_named_after_the_command_it_is_for(command: str, name: str) -> None:
    """Tests and cd's in a shell list do not name the task."""
    assert name_from_command(command) == name
