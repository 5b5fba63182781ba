"""Command line: the parser and `main`, the only place that turns errors into exit codes.
The commands are in taskfile (check, next), lifecycle (run, start, stop, reload,
status), tasklist (list), operations (trigger, kill, pause, resume, history, logs,
submit), why (why), shipped (example, unit) and importing (import crontab, import gotorch).

Exit codes: 0 success; 1 failure (not running, already running, timed out, daemon error);
2 invalid task file or bad usage (and `check --strict` with a warning); 3 `status` when
no daemon is running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from torchd import __version__
from torchd.cli.common import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from torchd.cli.importing import add_import
from torchd.cli.lifecycle import cmd_reload, cmd_run, cmd_start, cmd_status, cmd_stop
from torchd.cli.operations import (
    cmd_audit,
    cmd_history,
    cmd_kill,
    cmd_logs,
    cmd_pause,
    cmd_resume,
    cmd_submit,
    cmd_trigger,
    cmd_web,
)
from torchd.cli.shipped import cmd_example, cmd_unit
from torchd.cli.taskfile import cmd_check, cmd_graph, cmd_next
from torchd.cli.tasklist import cmd_list
from torchd.cli.why import cmd_why
from torchd.core.errors import TorchdError, UsageError
from torchd.core.model import LogFormat


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchd", description="second-level cron daemon")
    parser.add_argument("--version", action="version", version=f"torchd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, *, config: str = "none", state: bool = True,
            json_flag: bool = False, times: bool = False,
            examples: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        epilog = "examples:\n" + "".join(f"  {line}\n" for line in examples)
        command = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        if config == "required":
            command.add_argument("-c", "--config", required=True,
                                 help="task file (YAML), or a drop-in directory of them")
        elif config == "optional":
            command.add_argument("-c", "--config",
                                 help="task file, to find daemon.state_dir in it")
        if state:
            command.add_argument("--state-dir", help="pidfile, socket and logs (overrides "
                                 "daemon.state_dir and $TORCHD_STATE_DIR)")
        if json_flag:
            command.add_argument("--json", action="store_true", help="machine-readable output "
                                 "(times in UTC to the millisecond)")
        if times:
            command.add_argument("--utc", action="store_true",
                                 help="times in UTC (default: each task's zone)")
        return command

    run = add("run", "run in the foreground, logging to stderr", config="required",
              examples=("torchd run -c /etc/torchd/tasks.yaml",
                        "torchd run -c /etc/torchd/tasks.d/ -v"))
    run.add_argument("-v", "--verbose", action="store_true",
                     help="log debug lines too (each fire's decisions, control requests)")
    _log_format_flag(run)
    run.set_defaults(func=cmd_run)
    start = add("start", "start a detached daemon", config="required",
                examples=("torchd start -c /etc/torchd/tasks.yaml",
                          "torchd start -c tasks.yaml --state-dir /tmp/torchd-test"))
    start.add_argument("-v", "--verbose", action="store_true",
                       help="log debug lines too, to STATE_DIR/torchd.log")
    _log_format_flag(start)
    start.add_argument("--timeout", type=float, default=30.0,
                       help="seconds to wait for the daemon to be ready (default 30)")
    start.set_defaults(func=cmd_start)
    stop = add("stop", "stop the daemon and everything it runs", config="optional",
               examples=("torchd stop", "torchd stop -c tasks.yaml --timeout 60"))
    stop.add_argument("--timeout", type=float, default=10.0,
                      help="grace period before survivors are killed (default 10)")
    stop.set_defaults(func=cmd_stop)
    reload = add("reload", "validate the task file, then apply it", config="optional",
                 json_flag=True, times=True,
                 examples=("torchd reload --dry-run", "torchd reload -c /etc/torchd/tasks.yaml"))
    reload.add_argument("--dry-run", action="store_true",
                        help="print what would change and the next fires; send nothing")
    reload.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the daemon's answer (default 60)")
    reload.set_defaults(func=cmd_reload)
    status = add("status", "show the daemon and its tasks", config="optional", json_flag=True,
                 times=True, examples=("torchd status", "torchd status --json | jq .tasks"))
    status.add_argument("--cluster", action="store_true",
                        help="the cluster's live hosts, lease holders and config drift")
    status.set_defaults(func=cmd_status)
    listing = add("list", "the tasks by next fire, with their last run", config="optional",
                  json_flag=True, times=True, examples=("torchd list", "torchd list --utc"))
    listing.set_defaults(func=cmd_list)
    check = add("check", "validate a task file, and warn of what it likely does not mean "
                "(README: lint warnings)", config="required", state=False,
                examples=("torchd check -c tasks.yaml", "torchd check -c /etc/torchd/tasks.d/",
                          "torchd check -c tasks.yaml --strict --state-dir /var/lib/torchd"))
    check.add_argument("--strict", action="store_true", help="exit 2 if there is any warning")
    check.add_argument("--state-dir", help="read the tasks' usual run times from this "
                       "state dir's history (the @every overrun warning), and ask its daemon "
                       "for the cluster's hosts")
    check.set_defaults(func=cmd_check)
    nxt = add("next", "print the next fire times", config="required", state=False,
              json_flag=True, times=True,
              examples=("torchd next -c tasks.yaml backup -n 3",
                        "torchd next -c tasks.yaml --after 2026-03-29T00:00:00+01:00"))
    nxt.add_argument("task", nargs="?", help="only this task")
    nxt.add_argument("-n", "--count", type=int, default=5, help="fires per task (default 5)")
    nxt.add_argument("--after", metavar="TIME",
                     help="preview from this ISO 8601 time instead of now (without an offset "
                          "it is read in daemon.timezone), e.g. 2026-11-01T00:00:00-04:00")
    nxt.set_defaults(func=cmd_next)
    graph = add("graph", "print the workflow graph (after:): each task, what starts it, "
                "its downstreams", config="required", state=False,
                examples=("torchd graph -c tasks.yaml",
                          "torchd graph -c tasks.yaml --dot | dot -Tsvg > graph.svg"))
    graph.add_argument("--dot", action="store_true", help="in Graphviz's language")
    graph.set_defaults(func=cmd_graph)
    _add_operations(add)
    _add_why(add)
    _add_shipped(add)
    add_import(add)  # import crontab, import gotorch
    return parser


def _add_why(add: Callable[..., argparse.ArgumentParser]) -> None:
    why = add("why", "why a task's fires ran or did not (read from the state dir; no daemon "
              "needed)", config="optional", json_flag=True, times=True,
              examples=("torchd why backup", "torchd why backup --at 2026-03-29T02:30:00",
                        "torchd why backup --last 20 --json"))
    why.add_argument("task")
    why.add_argument("--at", metavar="TIME", help="the scheduled instant at or before this "
                     "ISO 8601 time (without an offset: daemon.timezone); a future time: "
                     "the next fire")
    why.add_argument("--last", type=int, default=5, metavar="N",
                     help="the last N scheduled instants (default 5), then the next fire")
    why.set_defaults(func=cmd_why)


def _log_format_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument("--log-format", type=LogFormat, choices=list(LogFormat),
                         help="text, or json: one JSON object per line with ts, level, msg, "
                              "logger and, where they apply, task, run_id, fire_id, outcome, "
                              "duration_s, host (overrides daemon.log_format; default text)")


def _add_shipped(add: Callable[..., argparse.ArgumentParser]) -> None:
    example = add("example", "print the example task file, every kind of task with "
                  "comments", state=False,
                  examples=("torchd example > /etc/torchd/tasks.yaml",))
    example.set_defaults(func=cmd_example)
    unit = add("unit", "print the systemd unit (README: systemd)", state=False,
               examples=("torchd unit > /etc/systemd/system/torchd.service",
                         "torchd unit --hardened > /etc/systemd/system/torchd.service"))
    unit.add_argument("--hardened", action="store_true",
                      help="the unit whose tasks all run as the torchd user, sandboxed")
    unit.set_defaults(func=cmd_unit)


def _add_operations(add: Callable[..., argparse.ArgumentParser]) -> None:
    history = add("history", "list recorded runs, newest first", config="optional",
                  json_flag=True, times=True,
                  examples=("torchd history backup -n 50", "torchd history --failed --since 1d"))
    history.add_argument("task", nargs="?", help="only this task")
    history.add_argument("-n", "--count", type=int, default=20, help="how many (default 20)")
    history.add_argument("--failed", action="store_true",
                         help="only failed, timed out, start-error and lost runs")
    history.add_argument("--since", metavar="DURATION", help="only the last 1h, 30m, 2d ...")
    history.add_argument("--outcome", help="only this outcome (ok, failed, ...; running: "
                         "the runs going on)")
    history.add_argument("--trigger", help="only runs started so (schedule, manual, ...)")
    history.add_argument("--host", help="only runs on this host (cluster mode)")
    history.set_defaults(func=cmd_history)
    trigger = add("trigger", "run a task now", config="optional", json_flag=True,
                  examples=("torchd trigger backup", "torchd trigger backup --wait --force"))
    trigger.add_argument("task")
    trigger.add_argument("--force", action="store_true",
                         help="ignore max_running, the overlap policy and a pause")
    trigger.add_argument("--wait", action="store_true",
                         help="wait for the run to end and exit with its exit code")
    trigger.add_argument("--no-cascade", action="store_true",
                         help="do not fire the task's downstream tasks (after:) when it ends")
    trigger.set_defaults(func=cmd_trigger)
    kill = add("kill", "stop a task's runs: TERM, kill_grace, KILL", config="optional",
               json_flag=True,
               examples=("torchd kill backup", "torchd kill backup --run 7f3a9c2e41d0"))
    kill.add_argument("task")
    kill.add_argument("--run", metavar="ID", help="only this run")
    kill.set_defaults(func=cmd_kill)
    for name, func, text in (("pause", cmd_pause, "stop firing a task (kept across restarts)"),
                             ("resume", cmd_resume, "fire a paused task again")):
        command = add(name, text, config="optional", json_flag=True,
                      examples=(f"torchd {name} backup", f"torchd {name} --all"))
        command.add_argument("task", nargs="?")
        command.add_argument("--all", action="store_true", help="every task")
        command.set_defaults(func=func)
    logs = add("logs", "print a run's output (default: the task's last run)",
               config="optional", json_flag=True,
               examples=("torchd logs backup -n 50", "torchd logs backup --follow"))
    logs.add_argument("task")
    logs.add_argument("--run", metavar="ID", help="this run instead of the last")
    logs.add_argument("-n", "--lines", type=int, help="only the last LINES lines")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="then follow the task's log as it grows (Ctrl-C ends)")
    logs.add_argument("--stderr", action="store_true", help="the stderr log (log.split)")
    logs.set_defaults(func=cmd_logs)
    submit = add("submit", "run a one-off command through the daemon, now or at a time",
                 config="optional", json_flag=True, times=True,
                 examples=("torchd submit -- /usr/local/bin/reindex --full",
                           "torchd submit --at 10m --name reindex -- /usr/local/bin/reindex"))
    submit.add_argument("--at", metavar="TIME",
                        help="ISO 8601 time (without offset: daemon.timezone) or a delay "
                             "such as 10m; default now")
    submit.add_argument("--name", help="shown as submit:NAME (default: a random id)")
    submit.add_argument("--hosts", nargs="+", metavar="PATTERN",
                        help="run only if this host matches (as a task's hosts)")
    submit.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    submit.set_defaults(func=cmd_submit)
    audit = add("audit", "list the actions operators took (trigger, kill, pause, ...), newest "
                "first, through the socket or HTTP", config="optional", json_flag=True,
                times=True, examples=("torchd audit", "torchd audit -n 100 --json"))
    audit.add_argument("-n", "--count", type=int, default=20, help="how many (default 20)")
    audit.set_defaults(func=cmd_audit)
    web = add("web", "print the dashboard's address with its token (open it once in a "
              "browser; daemon.http must be set)", config="optional",
              examples=("torchd web", "torchd web -c /etc/torchd/tasks.yaml"))
    web.set_defaults(func=cmd_web)


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
    except UsageError as exc:
        print(f"torchd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except TorchdError as exc:
        print(f"torchd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return code


if __name__ == "__main__":
    sys.exit(main())
