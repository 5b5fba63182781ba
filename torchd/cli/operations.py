"""Operators' requests: `trigger`, `kill`, `pause`, `resume`, `history`, `logs`, `submit`,
`audit`, `web`; `history` and `logs` read the state dir themselves when no daemon answers."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from torchd.cli.common import (
    EXIT_CONFIG,
    EXIT_FAIL,
    EXIT_OK,
    call,
    load_or_report,
    not_running,
    print_table,
    resolve_state_dir,
    socket_path,
    text_time,
)
from torchd.control import client
from torchd.control.verbs import at_problem, run_row
from torchd.core.durations import parse_duration
from torchd.core.errors import DurationError, UsageError
from torchd.core.model import name_problem
from torchd.store.statedir import StatePaths
from torchd.store.tokens import TokenError, read_state_token, read_token_file


def _exit_code_of(outcome: dict[str, Any]) -> int:
    """`trigger --wait` exits like the run did: its code, 128+signal; else 0 if it ended
    ok (an HTTP run), 1 if not."""
    if outcome.get("outcome") == "ok":
        return EXIT_OK
    if outcome.get("exit_code") is not None:
        return int(outcome["exit_code"])
    if outcome.get("signal") is not None:
        return 128 + int(outcome["signal"])
    return EXIT_FAIL


def cmd_trigger(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    result = call(state_dir, "trigger", timeout=None if args.wait else 30.0, task=args.task,
                   force=args.force, wait=args.wait, cascade=not args.no_cascade)
    if result is None:
        return not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"task {result['task']}: run {result['run_id']} {result['status']}")
        if "outcome" in result:
            detail = result.get("error") or (
                f"signal={result['signal']}" if result["signal"] is not None
                else f"exit={result['exit_code']}" if result["exit_code"] is not None
                else None)  # an HTTP run that ended ok
            print(f"run {result['run_id']} ended: {result['outcome']}"
                  + (f" ({detail})" if detail else ""))
    if args.wait and "outcome" in result:
        return _exit_code_of(result)
    return EXIT_OK if result["status"] in ("started", "queued") else EXIT_FAIL


def cmd_kill(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    result = call(state_dir, "kill", timeout=None, task=args.task, run=args.run)
    if result is None:
        return not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    for run in result["runs"]:
        state = f"{run['outcome']} ({run['result']})" if run["ended"] else "still stopping"
        what = "http" if run["pid"] is None else f"pid {run['pid']}"
        print(f"task {result['task']}: run {run['run_id']} {what}: {state}")
    return EXIT_OK


def _pause_or_resume(args: argparse.Namespace, cmd: str) -> int:
    if (args.task is None) == (not args.all):
        print(f"torchd {cmd}: give a task name or --all (not both)", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = resolve_state_dir(args)
    request = {"all": True} if args.all else {"task": args.task}
    result = call(state_dir, cmd, **request)
    if result is None:
        return not_running(state_dir)
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
    request = {"task": args.task, "limit": args.count, "failed": args.failed, "since": since,
               "outcome": args.outcome, "trigger": args.trigger, "host": args.host}
    result = call(state_dir, "history", **request)
    if result is None:  # no daemon: read the database directly
        from torchd.store.history import query_runs  # noqa: PLC0415

        database = StatePaths(state_dir).history
        if not database.exists():
            print(f"torchd: no run history in {state_dir} (no {database.name}: no daemon has "
                  "run with this state dir, or daemon.history is off)", file=sys.stderr)
            return EXIT_FAIL
        found = query_runs(database, task=args.task, limit=args.count, failed=args.failed,
                           since=since, outcome=args.outcome, trigger=args.trigger,
                           host=args.host)
        result = {"runs": [run_row(row, None) for row in found]}
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
        at = text_time(run["at"], run["timezone"], args.utc)
        rows.append((run["run_id"], run["task"], at, duration, run["outcome"] or "running",
                     code, run["trigger"] or "-", run["reason"] or ""))
    print_table(rows)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    if problem := name_problem(args.task.removeprefix("submit:")):
        raise UsageError(f"logs: {problem}")
    state_dir = resolve_state_dir(args)
    request = {"task": args.task, "run": args.run, "lines": args.lines, "stderr": args.stderr}
    result = call(state_dir, "logs", **request)
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
            chunk = client.call(socket_path(state_dir), "logs", task=args.task,
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
    if args.at is not None and (problem := at_problem(args.at)):
        print(f"torchd submit: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = resolve_state_dir(args)
    result = call(state_dir, "submit", command=command, at=args.at, name=args.name,
                   hosts=args.hosts or [])
    if result is None:
        return not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        at = text_time(result["at"], result["timezone"], args.utc)
        print(f"submitted {result['task']}: runs at {at}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    result = call(state_dir, "audit", limit=args.count)
    if result is None:
        return not_running(state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    if not result["enabled"]:
        print("the history is off (daemon.history.enabled: false): actions are only in the "
              "daemon's log", file=sys.stderr)
    rows = [("WHEN", "VIA", "WHO", "ACTION", "TARGET", "RESULT")]
    rows += [(text_time(a["at"], None, args.utc), a["transport"], a["peer"], a["action"],
              a["target"] or "-", a["result"]) for a in result["actions"]]
    print_table(rows)
    return EXIT_OK


_LISTEN_ADDRESS = re.compile(r"http://(?:\[[0-9A-Fa-f:.]+\]|[0-9.]+|localhost):[0-9]{1,5}/")


def _configured_token_file(args: argparse.Namespace) -> str | None:
    """daemon.http.token_file of the task file given with -c (None without one)."""
    if not getattr(args, "config", None):
        return None
    config = load_or_report(args.config)
    http = config.daemon.http if config is not None else None
    return http.token_file if http is not None else None


def cmd_web(args: argparse.Namespace) -> int:
    """The dashboard's address with the admin token, as Jupyter prints it: opening it
    once sets a session cookie and leaves the token out of the address bar."""
    state_dir = resolve_state_dir(args)
    ping = call(state_dir, "ping")
    if ping is None:
        return not_running(state_dir)
    address, token_file = ping.get("http"), ping.get("http_token_file")
    if not address or not token_file:
        print("torchd: the daemon has no HTTP listener; add to the task file:\n"
              "  daemon:\n    http: {listen: \"127.0.0.1:8427\"}", file=sys.stderr)
        return EXIT_FAIL
    if not isinstance(address, str) or not _LISTEN_ADDRESS.fullmatch(address):
        print(f"torchd: the daemon gave an address that is no listener's: {address!r:.100}",
              file=sys.stderr)
        return EXIT_FAIL
    # What answers the socket may be a daemon of a user of its own: never read a path it
    # names. Its own token is STATE_DIR/http.token; a token_file only the task file says.
    default = StatePaths(state_dir).http_token
    try:
        if Path(token_file) == default:
            owners = frozenset({0, os.geteuid(), state_dir.stat().st_uid})
            token = read_state_token(default, owners)
        elif (configured := _configured_token_file(args)) is not None and \
                configured == token_file:
            token = read_token_file(Path(configured), "daemon.http.token_file")
        else:
            print("torchd: the daemon reads its token from daemon.http.token_file; give its "
                  "task file: torchd web -c TASKFILE", file=sys.stderr)
            return EXIT_FAIL
    except TokenError as exc:
        print(f"torchd: {exc} (a token file is readable by root and the daemon's user "
              "alone)", file=sys.stderr)
        return EXIT_FAIL
    address = address.replace("//0.0.0.0:", "//localhost:").replace("//[::]:", "//localhost:")
    print(f"{address}login?{urlencode({'token': token})}")
    return EXIT_OK
