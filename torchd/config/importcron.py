"""A crontab (crontab(5), Vixie cron and cronie) into torchd tasks: `torchd import crontab`.

Pure: text in, `importout.Imported` entries out. Each rule and how it is read is in the
README's "Coming from cron and gotorch"; the tests compare every imported schedule's next
1,000 fires with croniter reading the crontab line."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from torchd.config.importout import Imported, Value, name_from_command
from torchd.core.errors import ScheduleError
from torchd.core.schedule.cronexpr import parse_schedule
from torchd.core.schedule.zones import ZoneError, load_zone

DEFAULT_PATH = "/usr/bin:/bin"
DEFAULT_SHELL = "/bin/sh"
NICKNAMES = frozenset(("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily",
                       "@midnight", "@hourly"))
# blanks are spaces and tabs, as cron's (Python's \s would take \x85, \x1c, ... too)
_ENV = re.compile(r"""^[ \t]*(?P<name>'[^']*'|"[^"]*"|[^ \t='"]+)[ \t]*="""
                  r"""[ \t]*(?P<value>.*?)[ \t]*$""")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIVE = re.compile(r"^[ \t]*" + r"([^ \t]+)[ \t]+" * 5 + r"(.*)$")
_ONE = re.compile(r"^[ \t]*([^ \t]+)[ \t]+(.*)$")
# a command that needs PATH: its first word is not an absolute path, or it is more than
# one simple command (a pipe, a list, a substitution: the others may be looked up)
_SHELL_SYNTAX = re.compile(r"[|;&`\n]|\$\(")


def is_system_path(path: str) -> bool:
    """/etc/crontab and /etc/cron.d/* have the user column."""
    return path == "/etc/crontab" or path.startswith("/etc/cron.d/")


def split_percent(text: str) -> tuple[str, str | None]:
    """The command and its stdin, as cron reads them: the first unescaped `%` ends the
    command; in the rest each unescaped `%` is a newline; `\\%` is a literal `%` in both;
    any other backslash is kept."""
    command: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text[i + 1:i + 2] == "%":
            command.append("%")
            i += 2
            continue
        if ch == "%":
            return "".join(command), _stdin(text[i + 1:])
        command.append(ch)
        i += 1
    return "".join(command), None


def _stdin(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text[i + 1:i + 2] == "%":
            out.append("%")
            i += 2
            continue
        out.append("\n" if ch == "%" else ch)
        i += 1
    return "".join(out)


def needs_path(command: str) -> bool:
    first = command.split(maxsplit=1)[0] if command.strip() else ""
    return not first.startswith("/") or bool(_SHELL_SYNTAX.search(command))


@dataclass(slots=True)
class _Environment:
    """The environment lines read so far (each applies to the lines below it)."""

    variables: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # name -> file:line


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def import_crontab(text: str, source: str, *, system: bool) -> list[Imported]:
    """Every line of a crontab: a task per schedule line, in order; environment lines
    apply to the schedule lines below them."""
    env = _Environment()
    entries: list[Imported] = []
    # lines end at \n only, as cron reads them (str.splitlines would also split at \x85,
    # \f, ...); a \r before it (a file saved on Windows) is dropped
    for number, raw in enumerate(text.removesuffix("\n").split("\n"), start=1):
        raw = raw.removesuffix("\r")  # noqa: PLW2901 - the line as cron would see it
        origin = f"{source}:{number}"
        stripped = raw.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        if "\0" in raw:  # cron's C strings end there; no command or value can hold it
            entries.append(Imported(origin=origin, skipped="the line holds a NUL character"))
            continue
        if (match := _ENV.match(raw)) and not stripped[0].isdigit() and stripped[0] not in "*@-":
            name, value = _unquote(match["name"]), _unquote(match["value"])
            if not _VARIABLE.fullmatch(name):
                entries.append(Imported(origin=origin, skipped=f"environment line: '{name}' "
                                        "is not a variable name torchd can set"))
                continue
            env.variables[name] = value
            env.origins[name] = origin
            continue
        entries.append(_task_line(raw, origin, env, system=system))
    return entries


def _task_line(raw: str, origin: str, env: _Environment, *, system: bool) -> Imported:
    entry = Imported(origin=origin)
    line = raw.lstrip(" \t")
    if line.startswith("-"):  # cronie: do not log this job to syslog
        line = line[1:]
        entry.warnings.append("the leading '-' (no syslog line per run) is dropped: torchd "
                              "logs every run")
    if line.startswith("@"):
        match = _ONE.match(line)
        schedule = match[1] if match else line.strip()
        rest = match[2] if match else ""
        if schedule.lower() not in NICKNAMES:
            entry.skipped = (f"unknown nickname '{schedule}'; cron knows "
                             f"{', '.join(sorted(NICKNAMES))}")
            return entry
        schedule = schedule.lower()
    else:
        match = _FIVE.match(line)
        if match is None:
            entry.skipped = "expected five time fields and a command"
            return entry
        schedule = " ".join(match.groups()[:5])
        rest = match[6]
    if system:
        user_match = _ONE.match(rest)
        if user_match is None:
            entry.skipped = "expected a user name and a command after the schedule " \
                            "(a system crontab has the user column)"
            return entry
        user, rest = user_match[1], user_match[2]
    else:
        user = None
    command, stdin = split_percent(rest)
    if not command.strip():  # blanks only (as Python reads them, as torchd checks)
        entry.skipped = "no command"
        return entry
    zone_name = env.variables.get("CRON_TZ")
    zone = None
    if zone_name is not None:
        try:
            zone = load_zone(zone_name)
        except ZoneError as exc:
            entry.warnings.append(f"CRON_TZ '{zone_name}' ({env.origins['CRON_TZ']}) is "
                                  f"not a time zone here ({exc.why}): left out, so the "
                                  "daemon's zone applies")
            zone_name = None
    try:
        parse_schedule(schedule, zone or load_zone("UTC"))
    except ScheduleError as exc:
        entry.skipped = f"schedule '{schedule}': {exc}"
        return entry
    entry.name_hint = name_from_command(command)
    entry.keys.append(("schedule", schedule))
    entry.keys.append(("command", _command(command, stdin, env, entry)))
    if user is not None:
        entry.keys.append(("user", user))
    if zone_name is not None:
        entry.keys.append(("timezone", zone_name))
    if (jitter := _jitter(env, entry)) is not None:
        entry.keys.append(("jitter", jitter))
    variables = _task_env(command, stdin, env, entry)
    if variables:
        entry.keys.append(("env", variables))
    return entry


def _command(command: str, stdin: str | None, env: _Environment, entry: Imported) -> Value:
    """A string (torchd runs it with /bin/sh -c) or, under another SHELL, [SHELL, -c, it].
    Text after `%` becomes the command's stdin through printf and a pipe."""
    shell = env.variables.get("SHELL", DEFAULT_SHELL)
    if stdin:
        command = (f"printf '%s' {shlex.quote(stdin)} | {shlex.quote(shell)} -c "
                   f"{shlex.quote(command)}")
    if shell != DEFAULT_SHELL:
        entry.warnings.append(f"SHELL={shell} ({env.origins['SHELL']}): the command runs "
                              f"as [{shell}, -c, COMMAND]")
        return [shell, "-c", command]
    return command


def _jitter(env: _Environment, entry: Imported) -> str | None:
    text = env.variables.get("RANDOM_DELAY")
    if text is None:
        return None
    origin = env.origins["RANDOM_DELAY"]
    if not text.isdigit():
        entry.warnings.append(f"RANDOM_DELAY '{text}' ({origin}) is not a whole number of "
                              "minutes: left out")
        return None
    if int(text) == 0:
        return None
    entry.warnings.append(f"RANDOM_DELAY={text} ({origin}) is jitter: {text}m; cronie drew "
                          "one delay at its start, torchd draws one per fire")
    return f"{int(text)}m"


_NOT_ENV = frozenset(("SHELL", "CRON_TZ", "RANDOM_DELAY", "MAILTO", "MAILFROM", "PATH"))


def _task_env(command: str, stdin: str | None, env: _Environment,
              entry: Imported) -> dict[str, str]:
    variables = {k: v for k, v in env.variables.items() if k not in _NOT_ENV}
    for name in ("MAILTO", "MAILFROM"):
        if name in env.variables:
            entry.warnings.append(f"{name} ({env.origins[name]}) is dropped: torchd sends "
                                  "no mail; a hook (README: hooks) can, on failure")
    if needs_path(command) or (stdin and "PATH" in env.variables):
        variables["PATH"] = env.variables.get("PATH", DEFAULT_PATH)
    return dict(sorted(variables.items()))
