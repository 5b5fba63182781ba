"""What the commands share: exit codes, the state dir, loading the task file, asking the
daemon, printing problems and tables."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

from torchd.config.loader import ParseCache
from torchd.config.relpaths import against, file_dir
from torchd.config.source import daemon_file, load_config
from torchd.control import client
from torchd.core.errors import ConfigError, UsageError
from torchd.core.model import Config
from torchd.core.schedule.zones import ZoneError, load_zone
from torchd.core.timefmt import from_iso, local_iso
from torchd.store.pidfile import running_pid
from torchd.store.statedir import StatePaths
from torchd.system.hostinfo import local_identity

EXIT_OK, EXIT_FAIL, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 1, 2, 3


def default_state_dir() -> Path:
    env = os.environ.get("TORCHD_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/torchd")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "torchd"


def resolve_state_dir(args: argparse.Namespace, config: Config | None = None) -> Path:
    """--state-dir, else daemon.state_dir from the file, else $TORCHD_STATE_DIR or a default.
    UsageError if something other than a directory is at that path."""
    state_dir = _state_dir(args, config)
    if state_dir.exists() and not state_dir.is_dir():
        raise UsageError(f"the state dir {state_dir} is not a directory")
    return state_dir


def _state_dir(args: argparse.Namespace, config: Config | None) -> Path:
    if args.state_dir:
        return Path(args.state_dir).absolute()
    if config is None and getattr(args, "config", None):
        try:
            config = load_config(args.config, identity=None)
        except ConfigError:
            return _state_dir_of_a_broken_file(args.config)
    if config is not None and config.daemon.state_dir:
        return Path(config.daemon.state_dir).absolute()
    return default_state_dir().absolute()


def _state_dir_of_a_broken_file(path: str) -> Path:
    """daemon.state_dir read from a task file that does not load (a broken edit while the
    daemon runs on the last good one), where the YAML still gives it; else the default,
    saying so."""
    import yaml  # noqa: PLC0415 - only for this rare case

    state_dir = None
    if (settings_file := daemon_file(Path(path))) is not None:
        try:
            with open(settings_file, encoding="utf-8") as handle:
                document = yaml.safe_load(handle)
            state_dir = document["daemon"]["state_dir"]
        except (OSError, UnicodeError, yaml.YAMLError, TypeError, KeyError):
            pass
    if isinstance(state_dir, str) and state_dir:
        return Path(against(file_dir(settings_file or path), state_dir))
    fallback = default_state_dir().absolute()
    print(f"torchd: {path} does not load and names no daemon.state_dir that can be read; "
          f"using {fallback}", file=sys.stderr)
    return fallback


def socket_path(state_dir: Path) -> Path:
    return StatePaths(state_dir).socket


def print_errors(exc: ConfigError) -> None:
    print_problems([problem.shown() for problem in exc.problems])


def print_problems(problems: list[str], outcome: str = "nothing was changed") -> None:
    for problem in problems:
        print(problem, file=sys.stderr)
    count = len(problems)
    print(f"{count} problem{'s' if count != 1 else ''} found; {outcome}", file=sys.stderr)


def load(path: str, cache: ParseCache | None = None) -> Config:
    return load_config(path, identity=local_identity(), cache=cache)


def load_or_report(path: str, cache: ParseCache | None = None) -> Config | None:
    """The parsed file, or None after printing every problem to stderr. `cache`, when
    given, keeps what the parse built for the daemon's reloads."""
    try:
        return load(path, cache)
    except ConfigError as exc:
        print_errors(exc)
        return None


def call(state_dir: Path, cmd: str, *, timeout: float | None = 30.0,
          **request: Any) -> dict[str, Any] | None:
    """The daemon's answer to `cmd`, or None when no daemon runs in state_dir ("ping" is
    small and cheap whatever the number of tasks; "status" is not)."""
    if running_pid(StatePaths(state_dir).pidfile) is None:
        return None
    result: dict[str, Any] = client.call(socket_path(state_dir), cmd, timeout=timeout, **request)
    return result


def not_running(state_dir: Path) -> int:
    print(f"torchd is not running (state dir {state_dir})", file=sys.stderr)
    return EXIT_FAIL


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ("  ".join([*map(str.ljust, row, widths), row[-1]]).rstrip() for row in rows)
    sys.stdout.write("\n".join(lines) + "\n")


def outcome_text(run: dict[str, Any]) -> str:
    """A run's outcome with its exit code or signal: `ok(0)`, `failed(3)`, `killed(sig15)`;
    an HTTP run's with its status: `failed(HTTP 500)`, `timeout(HTTP -)`."""
    if "http_status" in run:
        status = run["http_status"]
        return f"{run['outcome']}(HTTP {'-' if status is None else status})"
    code = run["exit_code"] if run["signal"] is None else f"sig{run['signal']}"
    return f"{run['outcome']}({code})"


@functools.lru_cache(maxsize=256)
def text_zone(name: str | None, utc: bool = False) -> tzinfo | None:
    """The zone a time of a task or daemon zoned `name` is shown in as text: UTC with
    --utc; None (this host's zone) when the zone is not known or this host cannot load it
    (a rule or file only the daemon's host has)."""
    if utc:
        return UTC
    if name is None:
        return None
    try:
        return load_zone(name)
    except ZoneError:
        return None


def text_time(iso: str, zone: str | None, utc: bool) -> str:
    """A reply's time (the JSON form) as text: see core.timefmt."""
    return local_iso(from_iso(iso), text_zone(zone, utc))


def print_changes(changes: dict[str, Any], next_fires: dict[str, list[str]] | None,
                  zones: dict[str, str] | None = None, utc: bool = False) -> None:
    """The names of what changed, or only how many where the daemon sent counts."""
    def listed(key: str) -> Any:
        return changes[key] if not isinstance(changes[key], int) else {}

    def count(key: str) -> int:
        return changes[key] if isinstance(changes[key], int) else len(changes[key])

    added, changed, removed = listed("added"), listed("changed"), listed("removed")
    print(f"{count('added')} added, {count('changed')} changed, {count('removed')} removed, "
          f"{changes['unchanged']} unchanged")
    for name in added:
        print(f"  + {name}")
    for name, keys in changed.items():
        print(f"  ~ {name} ({', '.join(keys)})")
    for name in removed:
        print(f"  - {name}")
    for name, times in (next_fires or {}).items():
        shown = [text_time(t, (zones or {}).get(name), utc) for t in times]
        print(f"  next fires of {name}: {', '.join(shown) or 'none'}")
