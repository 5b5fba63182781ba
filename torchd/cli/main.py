"""Command line: arguments, output and exit codes. The only place that exits the process.

Exit codes: 0 success; 1 failure (not running, already running, timed out, daemon error);
2 invalid task file or bad usage; 3 `status` when no daemon is running.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from torchd import __version__
from torchd.config.loader import ParseCache, load_config
from torchd.control import client
from torchd.core.durations import parse_duration
from torchd.core.errors import (
    AlreadyRunningError,
    ConfigError,
    ControlError,
    DurationError,
    TorchdError,
)
from torchd.core.model import Config, TaskKind
from torchd.core.schedule.cronexpr import RebootSchedule, upcoming
from torchd.core.schedule.zones import load_zone, parse_instant
from torchd.store.pidfile import running_pid
from torchd.store.statedir import StatePaths
from torchd.system.hostinfo import local_identity
from torchd.system.procstat import launch_instant

EXIT_OK, EXIT_FAIL, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 1, 2, 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_state_dir() -> Path:
    env = os.environ.get("TORCHD_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/torchd")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "torchd"


def resolve_state_dir(args: argparse.Namespace, config: Config | None = None) -> Path:
    """--state-dir, else daemon.state_dir from the file, else $TORCHD_STATE_DIR or a default."""
    if args.state_dir:
        return Path(args.state_dir).absolute()
    if config is None and getattr(args, "config", None):
        try:
            config = load_config(args.config, identity=None)
        except ConfigError:
            config = None
    if config is not None and config.daemon.state_dir:
        return Path(config.daemon.state_dir).absolute()
    return default_state_dir().absolute()


def _socket(state_dir: Path) -> Path:
    return StatePaths(state_dir).socket


def _print_errors(exc: ConfigError) -> None:
    _print_problems([str(problem) for problem in exc.problems])


def _print_problems(problems: list[str], outcome: str = "nothing was changed") -> None:
    for problem in problems:
        print(problem, file=sys.stderr)
    count = len(problems)
    print(f"{count} problem{'s' if count != 1 else ''} found; {outcome}", file=sys.stderr)


def _load(path: str, cache: ParseCache | None = None) -> Config:
    return load_config(path, identity=local_identity(), cache=cache)


def _load_or_report(path: str, cache: ParseCache | None = None) -> Config | None:
    """The parsed file, or None after printing every problem to stderr. `cache`, when
    given, keeps what the parse built for the daemon's reloads."""
    try:
        return _load(path, cache)
    except ConfigError as exc:
        _print_errors(exc)
        return None


# ----- commands ----------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from torchd.process.cgroups import describe_cgroup_mode  # noqa: PLC0415

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    here = sum(1 for t in config.tasks if t.active)
    print(f"{args.config}: OK, {len(config.tasks)} task(s), {here} active on this host, "
          f"hash {config.digest}")
    print("process containment for a daemon started from this shell: "
          f"{describe_cgroup_mode(enabled=config.daemon.cgroups)}; child subreaper (as a "
          "systemd service its cgroup is the unit's: `torchd status` tells)")
    return EXIT_OK


def _local_iso(ts: float, zone: str) -> str:
    return datetime.fromtimestamp(ts, load_zone(zone)).isoformat()


def _instant(text: str, zone: str) -> float | None:
    try:
        return parse_instant(text, zone)
    except ValueError:
        return None


def cmd_next(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    tasks = config.tasks
    if args.task:
        tasks = tuple(t for t in tasks if t.name == args.task)
        if not tasks:
            print(f"no task named '{args.task}' in {args.config}", file=sys.stderr)
            return EXIT_FAIL
    now = time.time()
    if args.after is not None:
        after = _instant(args.after, config.daemon.timezone)
        if after is None:
            print(f"--after: '{args.after}' is not an ISO 8601 time such as "
                  "2026-11-01T00:00:00-04:00 or 2026-11-01T04:00:00Z", file=sys.stderr)
            return EXIT_FAIL
        now = after
    result: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    for spec in tasks:
        if spec.kind is TaskKind.DAEMON:
            notes[spec.name] = "daemon task: kept running, no schedule"
            result[spec.name] = []
        elif isinstance(spec.schedule, RebootSchedule):
            notes[spec.name] = "runs once when the daemon starts"
            result[spec.name] = []
        else:
            assert spec.schedule is not None  # noqa: S101 - cron tasks have one
            result[spec.name] = [_local_iso(t, spec.timezone)
                                 for t in upcoming(spec.schedule, now, args.count)]
        if not spec.active:
            notes[spec.name] = "disabled" if not spec.enabled else "not for this host"
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    for name, times in result.items():
        note = f"  ({notes[name]})" if name in notes else ""
        print(f"{name}{note}")
        for stamp in times:
            print(f"  {stamp}")
    return EXIT_OK


def _configure_stderr_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT,
                        stream=sys.stderr)


def _load_for_daemon(path: str) -> tuple[Config, ParseCache] | None:
    """The file as the daemon will start on it, with what the parse leaves for its reloads;
    None after printing every problem. The cycle collector goes off here and back on once
    the daemon's task table is built (App.run)."""
    gc.disable()
    parse_cache = ParseCache()
    config = _load_or_report(path, parse_cache)
    return None if config is None else (config, parse_cache)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - only the foreground daemon needs the engine

    from torchd.daemon.app import App  # noqa: PLC0415

    launched = launch_instant()
    loaded = _load_for_daemon(args.config)
    if loaded is None:
        return EXIT_CONFIG
    config, parse_cache = loaded
    _configure_stderr_logging(args.verbose)
    state_dir = resolve_state_dir(args, config)
    failure: list[str] = []

    def ready(error: str | None) -> None:
        if error is not None:
            failure.append(error)

    app = App(Path(args.config).absolute(), StatePaths(state_dir), config=config,
              parse_cache=parse_cache, launched=launched)
    code = asyncio.run(app.run(ready))
    if failure:
        print(f"torchd: {failure[0]}", file=sys.stderr)
    return code


def cmd_start(args: argparse.Namespace) -> int:
    from torchd.daemon.daemonize import start_detached  # noqa: PLC0415

    launched = launch_instant()
    loaded = _load_for_daemon(args.config)
    if loaded is None:
        return EXIT_CONFIG
    config, parse_cache = loaded
    state_dir = resolve_state_dir(args, config)
    pid = running_pid(StatePaths(state_dir).pidfile)
    if pid is not None:
        print(f"torchd: {AlreadyRunningError(pid)}", file=sys.stderr)
        return EXIT_FAIL
    try:
        pid = start_detached(Path(args.config), state_dir, config, parse_cache,
                             level=logging.DEBUG if args.verbose else logging.INFO,
                             timeout=args.timeout, launched=launched)
    except TorchdError as exc:
        print(f"torchd: could not start: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"torchd started (pid {pid}), {len(config.tasks)} task(s), state dir {state_dir}")
    return EXIT_OK


STOP_MARGIN = 5.0  # seconds `stop` waits past the grace: the daemon's own last steps


def _stopped(pid: int) -> bool:
    """Stopped by SIGSTOP or a debugger: it acts on nothing until continued."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED,
                                                psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def _wait_unlocked(pidfile: Path, deadline: float) -> bool:
    """Wait until no daemon holds the pidfile (it releases it as its last act)."""
    while time.monotonic() < deadline:
        if running_pid(pidfile) is None:
            return True
        time.sleep(0.05)
    return running_pid(pidfile) is None


def cmd_stop(args: argparse.Namespace) -> int:
    """Ask the daemon to stop (runs get --timeout to end, then KILL), by its socket or,
    where that does not answer, SIGTERM; wait at most --timeout plus STOP_MARGIN."""
    state_dir = resolve_state_dir(args)
    pidfile = StatePaths(state_dir).pidfile
    pid = running_pid(pidfile)
    if pid is None:
        print(f"torchd is not running (state dir {state_dir})", file=sys.stderr)
        return EXIT_FAIL
    deadline = time.monotonic() + args.timeout + STOP_MARGIN
    if pid > 0 and _stopped(pid):
        os.kill(pid, signal.SIGTERM)
        print(f"torchd (pid {pid}) is stopped (SIGSTOP or a debugger) and cannot act until "
              f"it is continued: sent SIGTERM, which it acts on then (kill -CONT {pid})",
              file=sys.stderr)
        return EXIT_FAIL
    try:
        reply = client.call(_socket(state_dir), "stop", grace=args.timeout,
                            timeout=STOP_MARGIN)
        if reply.get("already"):
            print("torchd: a stop is under way already; this one changes nothing (a "
                  "SIGTERM to the daemon would kill every run now)", file=sys.stderr)
    except ControlError as exc:
        if pid <= 0:  # its pid is unknown: signalling -1 would hit every process we own
            print(f"torchd: {exc}", file=sys.stderr)
            return EXIT_FAIL
        os.kill(pid, signal.SIGTERM)  # the signal path has the default grace
        print(f"torchd: the control socket did not answer ({exc}); sent SIGTERM to pid "
              f"{pid}", file=sys.stderr)
    if _wait_unlocked(pidfile, deadline):
        print(f"torchd stopped (pid {pid})" if pid > 0 else "torchd stopped")
        return EXIT_OK
    waited = args.timeout + STOP_MARGIN
    state = " (it is stopped: SIGSTOP or a debugger)" if pid > 0 and _stopped(pid) else ""
    print(f"torchd (pid {pid}) is still running after {waited:.0f}s{state}; its runs were "
          f"given {args.timeout:g}s to end", file=sys.stderr)
    return EXIT_FAIL


def _print_changes(changes: dict[str, Any], next_fires: dict[str, list[str]] | None) -> None:
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
        print(f"  next fires of {name}: {', '.join(times) or 'none'}")


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the daemon to reload its task file (or, with --dry-run, what it would change)
    and print its reply: what it applied, or every problem with file and line."""
    state_dir = resolve_state_dir(args)
    verb = "plan" if args.dry_run else "reload"
    try:
        reply = _call(state_dir, verb, timeout=args.timeout)
    except ControlError as exc:
        if exc.code != "config":
            print(f"torchd: {exc}", file=sys.stderr)
            return EXIT_FAIL
        problems = str(exc).splitlines()[1:]  # under the count the daemon put first
        _print_problems(problems)
        return EXIT_CONFIG
    if reply is None:
        print(f"torchd is not running (state dir {state_dir})", file=sys.stderr)
        return EXIT_FAIL
    if args.dry_run:
        if args.json:
            print(json.dumps(reply, indent=2))
        else:
            print(f"dry run: {reply['config_file']} (hash {reply['config_hash']}) would give:")
            _print_changes(reply["changes"], reply["next_fires"])
        return EXIT_OK
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply["ok"]:
        print(f"reloaded: config {reply['config_hash']}")
        _print_changes(reply["changes"], None)
    else:
        _print_problems(reply["errors"], "the daemon keeps its previous config")
    return EXIT_OK if reply["ok"] else EXIT_CONFIG


def _age(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{days}d{hours}h{minutes}m" if days else f"{hours}h{minutes}m{secs}s"
    return text if hours or days else f"{minutes}m{secs}s"


def cmd_status(args: argparse.Namespace) -> int:
    if args.cluster:
        return _cluster_status(args)
    state_dir = resolve_state_dir(args)
    try:
        status = _call(state_dir, "status", timeout=10)
    except ControlError as exc:
        print(f"torchd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if status is None:
        if args.json:
            print(json.dumps({"running": False, "state_dir": str(state_dir)}))
        else:
            print(f"torchd is not running (state dir {state_dir})")
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps({"running": True, **status}, indent=2))
        return EXIT_OK
    last = status["last_reload"]
    print(f"torchd {status['version']} running, pid {status['pid']}, "
          f"up {_age(status['uptime'])}")
    print(f"config {status['config_file']} (hash {status['config_hash']}, "
          f"generation {status['generation']})")
    print(f"last reload: {'ok' if last['ok'] else 'REJECTED'} ({last['source']}) at "
          f"{last['time']}")
    for error in last["errors"]:
        print(f"  {error}")
    if "containment" in status:
        containment = status["containment"]
        subreaper = "child subreaper" if containment["subreaper"] else "no child subreaper"
        print(f"process containment: {containment['cgroups']}; {subreaper}")
    for problem in status.get("problems", ()):
        print(f"PROBLEM ({problem['key']}, since {problem['since']}): {problem['message']}")
    rows = [("TASK", "TYPE", "SCHEDULE", "HERE", "NEXT FIRE", "RUNNING", "LAST")]
    for task in status["tasks"]:
        here = "yes" if task["for_this_host"] else "no"
        if not task["enabled"]:
            here = "off"
        if task.get("paused"):
            here = "paused"
        last_run = task["last_run"]
        last_text = "-"
        if last_run:
            code = last_run["exit_code"] if last_run["signal"] is None else \
                f"sig{last_run['signal']}"
            last_text = f"{last_run['outcome']}({code}) {last_run['ended'] or ''}".strip()
        if task["last_start_error"]:
            last_text = f"start-error: {task['last_start_error']}"
        rows.append((task["name"], task["type"], task["schedule"] or "-", here,
                     task["next_fire"] or "-",
                     ",".join(str(p) for p in task["running"]) or "-", last_text))
    _print_table(rows)
    return EXIT_OK


def _cluster_status(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    try:
        view = _call(state_dir, "cluster")
    except ControlError as exc:
        print(f"torchd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if view is None:
        return _not_running(state_dir)
    if args.json:
        print(json.dumps(view, indent=2))
        return EXIT_OK if "error" not in view else EXIT_FAIL
    if "error" in view:
        print(f"cluster {view['name']}: {view['error']}", file=sys.stderr)
        return EXIT_FAIL
    print(f"cluster {view['name']}, seen from host {view['host_id']}: "
          f"{len(view['hosts'])} live host(s)")
    rows = [("HOST", "VERSION", "LOAD", "RUNNING", "CONFIG", "LEASES", "ADDRESSES")]
    for host in view["hosts"]:
        rows.append((host["host_id"], host.get("version", "?"), f"{host['load']:.2f}",
                     str(host.get("running", "?")), str(host.get("config_hash")),
                     ",".join(host.get("leases") or []) or "-",
                     ",".join(host.get("addresses") or [])))
    _print_table(rows)
    for task, holder in sorted(view["leases"].items()):
        print(f"lease {task}: held by {holder}")
    if view["config_drift"]:
        print("WARNING: the hosts run different task files (config hashes differ)",
              file=sys.stderr)
    for host, skew in sorted(view.get("clock_skew", {}).items()):
        print(f"WARNING: host {host}'s clock is {skew:+.1f}s off Redis's (over 1 s): fires "
              "are claimed that far apart; keep the hosts' clocks in step (NTP)",
              file=sys.stderr)
    return EXIT_OK


# ----- operations ----------------------------------------------------------------------------
def _call(state_dir: Path, cmd: str, *, timeout: float | None = 30.0,
          **request: Any) -> dict[str, Any] | None:
    """The daemon's answer to `cmd`, or None when no daemon runs in state_dir ("ping" is
    small and cheap whatever the number of tasks; "status" is not)."""
    if running_pid(StatePaths(state_dir).pidfile) is None:
        return None
    result: dict[str, Any] = client.call(_socket(state_dir), cmd, timeout=timeout, **request)
    return result


def _not_running(state_dir: Path) -> int:
    print(f"torchd is not running (state dir {state_dir})", file=sys.stderr)
    return EXIT_FAIL


def _exit_code_of(outcome: dict[str, Any]) -> int:
    """`trigger --wait` exits like the run did: its code, 128+signal, else 1."""
    if outcome.get("exit_code") is not None:
        return int(outcome["exit_code"])
    if outcome.get("signal") is not None:
        return 128 + int(outcome["signal"])
    return EXIT_FAIL


def cmd_trigger(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    result = _call(state_dir, "trigger", timeout=None if args.wait else 30.0, task=args.task,
                   force=args.force, wait=args.wait)
    if result is None:
        return _not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"task {result['task']}: run {result['run_id']} {result['status']}")
        if "outcome" in result:
            detail = result.get("error") or (
                f"exit={result['exit_code']}" if result["signal"] is None
                else f"signal={result['signal']}")
            print(f"run {result['run_id']} ended: {result['outcome']} ({detail})")
    if args.wait and "outcome" in result:
        return _exit_code_of(result)
    return EXIT_OK if result["status"] in ("started", "queued") else EXIT_FAIL


def cmd_kill(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    result = _call(state_dir, "kill", timeout=None, task=args.task, run=args.run)
    if result is None:
        return _not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    for run in result["runs"]:
        state = f"{run['outcome']} ({run['result']})" if run["ended"] else "still stopping"
        print(f"task {result['task']}: run {run['run_id']} pid {run['pid']}: {state}")
    return EXIT_OK


def _pause_or_resume(args: argparse.Namespace, cmd: str) -> int:
    if (args.task is None) == (not args.all):
        print(f"torchd {cmd}: give a task name or --all (not both)", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = resolve_state_dir(args)
    request = {"all": True} if args.all else {"task": args.task}
    result = _call(state_dir, cmd, **request)
    if result is None:
        return _not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    done = "paused" if cmd == "pause" else "resumed"
    changed = result["changed"]
    print(f"{done}: {', '.join(changed) if changed else 'nothing changed'}")
    if result["paused_all"]:
        print("every task is paused (pause --all)")
    elif result["paused"]:
        print(f"paused tasks: {', '.join(result['paused'])}")
    return EXIT_OK


def cmd_pause(args: argparse.Namespace) -> int:
    return _pause_or_resume(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _pause_or_resume(args, "resume")


def cmd_history(args: argparse.Namespace) -> int:
    since = None
    if args.since is not None:
        try:
            since = time.time() - parse_duration(args.since)
        except DurationError as exc:
            print(f"--since: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    state_dir = resolve_state_dir(args)
    request = {"task": args.task, "limit": args.count, "failed": args.failed, "since": since}
    result = _call(state_dir, "history", **request)
    if result is None:  # no daemon: read the database directly
        from torchd.store.history import query_runs  # noqa: PLC0415

        result = {"runs": query_runs(StatePaths(state_dir).history, task=args.task,
                                     limit=args.count, failed=args.failed, since=since)}
    runs = result["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return EXIT_OK
    if not runs:
        print("no runs recorded" + (f" for task {args.task}" if args.task else ""))
        return EXIT_OK
    rows = [("RUN", "TASK", "TIME", "DURATION", "OUTCOME", "EXIT", "TRIGGER", "DETAIL")]
    for run in runs:
        code = "-" if run["exit_code"] is None else str(run["exit_code"])
        if run["signal"] is not None:
            code = f"sig{run['signal']}"
        duration = "-" if run["duration"] is None else f"{run['duration']:.3f}s"
        rows.append((run["run_id"], run["task"], _stamp(run["at"]), duration,
                     run["outcome"] or "running", code, run["trigger"] or "-",
                     run["reason"] or ""))
    _print_table(rows)
    return EXIT_OK


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths,
                                                                       strict=False))
               + "  " + str(row[-1])).rstrip())


def cmd_logs(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    request = {"task": args.task, "run": args.run, "lines": args.lines, "stderr": args.stderr}
    result = _call(state_dir, "logs", **request)
    daemon = result is not None
    if result is None:  # no daemon: read the state dir directly
        from torchd.store.logview import NoSuchRunError, read_logs  # noqa: PLC0415

        try:
            result = read_logs(StatePaths(state_dir), args.task, args.run, args.lines,
                               args.stderr)
        except NoSuchRunError as exc:
            print(f"torchd: {exc}", file=sys.stderr)
            return EXIT_FAIL
    if args.json and not args.follow:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    _emit_log(result, as_json=args.json)
    if args.follow:
        return _follow(state_dir, args, result["offset"], daemon)
    return EXIT_OK


def _emit_log(chunk: dict[str, Any], *, as_json: bool) -> None:
    """Output text as is, or (`-f --json`) one JSON object per line for each reply."""
    if as_json:
        print(json.dumps(chunk), flush=True)
    elif chunk["text"]:
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()


def _follow(state_dir: Path, args: argparse.Namespace, offset: int, daemon: bool) -> int:
    from torchd.store.logview import follow_chunk  # noqa: PLC0415

    while True:
        time.sleep(0.25)
        if daemon:
            chunk = client.call(_socket(state_dir), "logs", task=args.task,
                                stderr=args.stderr, follow_offset=offset)
        else:
            data, next_offset = follow_chunk(StatePaths(state_dir).logs, args.task, offset,
                                             err=args.stderr)
            chunk = {"text": data.decode(errors="replace"), "offset": next_offset}
        offset = chunk["offset"]
        if chunk["text"]:
            _emit_log(chunk, as_json=args.json)


def cmd_submit(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("torchd submit: give the command after --, e.g. torchd submit -- /bin/echo hi",
              file=sys.stderr)
        return EXIT_CONFIG
    state_dir = resolve_state_dir(args)
    result = _call(state_dir, "submit", command=command, at=args.at, name=args.name,
                   hosts=args.hosts or [])
    if result is None:
        return _not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"submitted {result['task']}: runs at {result['at']}")
    return EXIT_OK


# ----- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchd", description="second-level cron daemon")
    parser.add_argument("--version", action="version", version=f"torchd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, *, config: str = "none", state: bool = True,
            json_flag: bool = False) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        if config == "required":
            command.add_argument("-c", "--config", required=True, help="task file (YAML)")
        elif config == "optional":
            command.add_argument("-c", "--config",
                                 help="task file, to find daemon.state_dir in it")
        if state:
            command.add_argument("--state-dir", help="pidfile, socket and logs (overrides "
                                 "daemon.state_dir and $TORCHD_STATE_DIR)")
        if json_flag:
            command.add_argument("--json", action="store_true", help="machine-readable output")
        return command

    run = add("run", "run in the foreground, logging to stderr", config="required")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)
    start = add("start", "start a detached daemon", config="required")
    start.add_argument("-v", "--verbose", action="store_true")
    start.add_argument("--timeout", type=float, default=30.0,
                       help="seconds to wait for the daemon to be ready (default 30)")
    start.set_defaults(func=cmd_start)
    stop = add("stop", "stop the daemon and everything it runs", config="optional")
    stop.add_argument("--timeout", type=float, default=10.0,
                      help="grace period before survivors are killed (default 10)")
    stop.set_defaults(func=cmd_stop)
    reload = add("reload", "validate the task file, then apply it", config="optional",
                 json_flag=True)
    reload.add_argument("--dry-run", action="store_true",
                        help="print what would change and the next fires; send nothing")
    reload.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the daemon's answer (default 60)")
    reload.set_defaults(func=cmd_reload)
    status = add("status", "show the daemon and its tasks", config="optional", json_flag=True)
    status.add_argument("--cluster", action="store_true",
                        help="the cluster's live hosts, lease holders and config drift")
    status.set_defaults(func=cmd_status)
    check = add("check", "validate a task file", config="required", state=False)
    check.set_defaults(func=cmd_check)
    nxt = add("next", "print the next fire times", config="required", state=False,
              json_flag=True)
    nxt.add_argument("task", nargs="?", help="only this task")
    nxt.add_argument("-n", "--count", type=int, default=5, help="fires per task (default 5)")
    nxt.add_argument("--after", metavar="TIME",
                     help="preview from this ISO 8601 time instead of now (without an offset "
                          "it is read in daemon.timezone), e.g. 2026-11-01T00:00:00-04:00")
    nxt.set_defaults(func=cmd_next)
    _add_operations(add)
    return parser


def _add_operations(add: Callable[..., argparse.ArgumentParser]) -> None:
    history = add("history", "list recorded runs, newest first", config="optional",
                  json_flag=True)
    history.add_argument("task", nargs="?", help="only this task")
    history.add_argument("-n", "--count", type=int, default=20, help="how many (default 20)")
    history.add_argument("--failed", action="store_true",
                         help="only failed, timed out, start-error and lost runs")
    history.add_argument("--since", metavar="DURATION", help="only the last 1h, 30m, 2d ...")
    history.set_defaults(func=cmd_history)
    trigger = add("trigger", "run a task now", config="optional", json_flag=True)
    trigger.add_argument("task")
    trigger.add_argument("--force", action="store_true",
                         help="ignore max_running, the overlap policy and a pause")
    trigger.add_argument("--wait", action="store_true",
                         help="wait for the run to end and exit with its exit code")
    trigger.set_defaults(func=cmd_trigger)
    kill = add("kill", "stop a task's runs: TERM, kill_grace, KILL", config="optional",
               json_flag=True)
    kill.add_argument("task")
    kill.add_argument("--run", metavar="ID", help="only this run")
    kill.set_defaults(func=cmd_kill)
    for name, func, text in (("pause", cmd_pause, "stop firing a task (kept across restarts)"),
                             ("resume", cmd_resume, "fire a paused task again")):
        command = add(name, text, config="optional", json_flag=True)
        command.add_argument("task", nargs="?")
        command.add_argument("--all", action="store_true", help="every task")
        command.set_defaults(func=func)
    logs = add("logs", "print a run's output (default: the task's last run)",
               config="optional", json_flag=True)
    logs.add_argument("task")
    logs.add_argument("--run", metavar="ID", help="this run instead of the last")
    logs.add_argument("-n", "--lines", type=int, help="only the last LINES lines")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="then follow the task's log as it grows (Ctrl-C ends)")
    logs.add_argument("--stderr", action="store_true", help="the stderr log (log.split)")
    logs.set_defaults(func=cmd_logs)
    submit = add("submit", "run a one-off command through the daemon, now or at a time",
                 config="optional", json_flag=True)
    submit.add_argument("--at", metavar="TIME",
                        help="ISO 8601 time (without offset: daemon.timezone) or a delay "
                             "such as 10m; default now")
    submit.add_argument("--name", help="shown as submit:NAME (default: a random id)")
    submit.add_argument("--hosts", nargs="+", metavar="PATTERN",
                        help="run only if this host matches (as a task's hosts)")
    submit.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    submit.set_defaults(func=cmd_submit)


def _lean_log_records() -> None:
    """Log records skip what LOG_FORMAT never shows (the logging HOWTO's "Optimization"
    switches): the daemon logs every run, and each lookup costs on every line."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # caller's file and line, not in LOG_FORMAT


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _lean_log_records()
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `torchd status | head`: the reader left; that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except TorchdError as exc:
        print(f"torchd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return code


if __name__ == "__main__":
    sys.exit(main())
