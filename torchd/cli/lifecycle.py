"""The daemon's life: `run`, `start`, `stop`, `reload`, `status`."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from torchd.cli.common import (
    EXIT_CONFIG,
    EXIT_FAIL,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    call,
    load_or_report,
    not_running,
    outcome_text,
    print_changes,
    print_problems,
    print_table,
    resolve_state_dir,
    socket_path,
    text_zone,
)
from torchd.config.loader import ParseCache
from torchd.control import client
from torchd.core.errors import (
    AlreadyRunningError,
    ControlError,
    TorchdError,
)
from torchd.core.model import Config, LogFormat
from torchd.core.timefmt import from_iso, local_iso, relative, span
from torchd.store.pidfile import running_pid
from torchd.store.statedir import StatePaths
from torchd.system.logformat import formatter_for
from torchd.system.procstat import launch_instant

STOP_MARGIN = 5.0  # seconds `stop` waits past the grace: the daemon's own last steps


def _configure_stderr_logging(verbose: bool, log_format: LogFormat) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(sys.stderr.fileno(), log_format))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def _load_for_daemon(path: str) -> tuple[Config, ParseCache] | None:
    """The file as the daemon will start on it, with what the parse leaves for its reloads;
    None after printing every problem. The cycle collector goes off here and back on once
    the daemon's task table is built (App.run)."""
    gc.disable()
    parse_cache = ParseCache()
    config = load_or_report(path, parse_cache)
    return None if config is None else (config, parse_cache)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - only the foreground daemon needs the engine

    from torchd.daemon.app import App  # noqa: PLC0415

    launched = launch_instant()
    loaded = _load_for_daemon(args.config)
    if loaded is None:
        return EXIT_CONFIG
    config, parse_cache = loaded
    _configure_stderr_logging(args.verbose, args.log_format or config.daemon.log_format)
    state_dir = resolve_state_dir(args, config)
    failure: list[str] = []

    def ready(error: str | None) -> None:
        if error is not None:
            failure.append(error)

    app = App(Path(args.config).absolute(), StatePaths(state_dir), config=config,
              parse_cache=parse_cache, launched=launched, echo_to_stdout=True)
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
                             timeout=args.timeout, launched=launched,
                             log_format=args.log_format)
    except TorchdError as exc:
        print(f"torchd: could not start: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"torchd started (pid {pid}), {len(config.tasks)} task(s), state dir {state_dir}")
    return EXIT_OK


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
        reply = client.call(socket_path(state_dir), "stop", grace=args.timeout,
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


def _not_the_daemons_file(state_dir: Path, config: str) -> str | None:
    """Why `reload -c FILE` cannot be done, if FILE is not the file the daemon runs (its
    file is fixed at start), or None."""
    ping = call(state_dir, "ping", timeout=10)
    if ping is None or Path(config).resolve() == Path(ping["config_file"]).resolve():
        return None
    return (f"the daemon (pid {ping['pid']}) runs {ping['config_file']} and reloads only "
            f"that file; to run {config}, stop it and start it with -c {config}")


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the daemon to reload its task file (or, with --dry-run, what it would change)
    and print its reply: what it applied, or every problem with file and line."""
    state_dir = resolve_state_dir(args)
    verb = "plan" if args.dry_run else "reload"
    try:
        if args.config and (refusal := _not_the_daemons_file(state_dir, args.config)):
            print(f"torchd: {refusal}", file=sys.stderr)
            return EXIT_CONFIG
        reply = call(state_dir, verb, timeout=args.timeout)
    except ControlError as exc:
        if exc.code != "config":
            print(f"torchd: {exc}", file=sys.stderr)
            return EXIT_FAIL
        problems = str(exc).splitlines()[1:]  # under the count the daemon put first
        print_problems(problems)
        return EXIT_CONFIG
    if reply is None:
        print(f"torchd is not running (state dir {state_dir})", file=sys.stderr)
        return EXIT_FAIL
    if args.dry_run:
        if args.json:
            print(json.dumps(reply, indent=2))
        else:
            _print_plan(reply, args.utc)
        return EXIT_OK
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply["ok"]:
        print(f"reloaded: config {reply['config_hash']}")
        print_changes(reply["changes"], None)
    else:
        print_problems(reply["errors"], "the daemon keeps its previous config")
    return EXIT_OK if reply["ok"] else EXIT_CONFIG


def _print_plan(reply: dict[str, Any], utc: bool) -> None:
    """What a reload would change; when the daemon runs the file as it is, say so, and
    what the reload that applied it changed (with `watch: true` the daemon applied an edit
    before any dry run could see it)."""
    last = reply["last_reload"]
    if reply["config_hash"] != reply["running_hash"] or last is None:
        print(f"dry run: {reply['config_file']} (hash {reply['config_hash']}) would give:")
        print_changes(reply["changes"], reply["next_fires"], reply["timezones"], utc)
        return
    at = from_iso(last["time"])
    when = f"{local_iso(at, text_zone(reply['timezone'], utc))} ({relative(at, time.time())})"
    how = ("the daemon watches it and has already applied it" if reply["watching"]
           else "the daemon already runs it")
    print(f"dry run: nothing to reload: {reply['config_file']} (hash {reply['config_hash']}) "
          f"is unchanged; {how} (generation {reply['generation']}, {last['source']} at "
          f"{when}), which gave:")
    if last["changes"] is not None:
        print_changes(last["changes"], None)


def cmd_status(args: argparse.Namespace) -> int:
    if args.cluster:
        return _cluster_status(args)
    state_dir = resolve_state_dir(args)
    try:
        status = call(state_dir, "status", timeout=10)
    except ControlError as exc:
        print(f"torchd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if status is None:
        return _not_running_status(state_dir, as_json=args.json)
    if args.json:
        print(json.dumps({"running": True, **status}, indent=2))
        return EXIT_OK
    now = time.time()

    def when(iso: str, zone: str | None = status["timezone"]) -> str:
        at = from_iso(iso)
        return f"{local_iso(at, text_zone(zone, args.utc))} ({relative(at, now)})"

    last = status["last_reload"]
    print(f"torchd {status['version']} running, pid {status['pid']}, "
          f"up {span(status['uptime'])}")
    print(f"config {status['config_file']} (hash {status['config_hash']}, "
          f"generation {status['generation']})")
    print(f"last reload: {'ok' if last['ok'] else 'REJECTED'} ({last['source']}) at "
          f"{when(last['time'])}")
    for error in last["errors"]:
        print(f"  {error}")
    if "containment" in status:
        containment = status["containment"]
        subreaper = "child subreaper" if containment["subreaper"] else "no child subreaper"
        print(f"process containment: {containment['cgroups']}; {subreaper}")
    for problem in status.get("problems", ()):
        print(f"PROBLEM ({problem['key']}, since {when(problem['since'])}): "
              f"{problem['message']}")
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
            ended = last_run["ended"]
            last_text = (f"{outcome_text(last_run)} "
                         f"{when(ended, task['timezone']) if ended else ''}").strip()
        if task["last_start_error"]:
            last_text = f"start-error: {task['last_start_error']}"
        next_fire = task["next_fire"]
        rows.append((task["name"], task["type"], task["schedule"] or "-", here,
                     when(next_fire, task["timezone"]) if next_fire else "-",
                     _running_text(task), last_text))
    print_table(rows)
    return EXIT_OK


def _running_text(task: dict[str, Any]) -> str:
    """The pids of a task's runs going on, and `http` for each that has none."""
    shown = [str(pid) for pid in task["running"]]
    shown += ["http"] * (task.get("runs", len(shown)) - len(shown))
    return ",".join(shown) or "-"


def _not_running_status(state_dir: Path, *, as_json: bool) -> int:
    """No daemon: say so, and what a daemon killed with SIGKILL left running, which the
    next start ends."""
    from torchd.process.journal import leftover_groups  # noqa: PLC0415

    groups = sorted(leftover_groups(StatePaths(state_dir).children))
    if as_json:
        print(json.dumps({"running": False, "state_dir": str(state_dir),
                          "leftover_groups": groups}))
        return EXIT_NOT_RUNNING
    print(f"torchd is not running (state dir {state_dir})")
    if len(groups) == 1:
        print(f"1 process group left by a daemon that died is still running (pid "
              f"{groups[0]}); the next start ends it")
    elif groups:
        print(f"{len(groups)} process groups left by a daemon that died are still running "
              f"(pids {', '.join(map(str, groups))}); the next start ends them")
    return EXIT_NOT_RUNNING


def _cluster_status(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    try:
        view = call(state_dir, "cluster")
    except ControlError as exc:
        print(f"torchd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if view is None:
        return not_running(state_dir)
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
    print_table(rows)
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
