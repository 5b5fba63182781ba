"""`torchd import crontab [FILE|-] [--system]` and `torchd import gotorch FILE`: a torchd
task file on stdout, what could not be imported on stderr (README: "Coming from cron and
gotorch"). The conversion is pure, in config.importcron and config.importgotorch."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from torchd.cli.common import EXIT_CONFIG, EXIT_OK

if TYPE_CHECKING:
    from torchd.config.importout import Imported


def add_import(add: Callable[..., argparse.ArgumentParser]) -> None:
    command = add("import", "print a torchd task file made from a crontab or a gotorch task "
                  "list", state=False,
                  examples=("torchd import crontab mycrontab > tasks.yaml",
                            "torchd import crontab - > tasks.yaml",
                            "torchd import crontab /etc/crontab > system.yaml",
                            "torchd import crontab /srv/cron/jobs --system",
                            "torchd import gotorch /etc/gotorch/task.json > tasks.yaml"))
    kinds = command.add_subparsers(dest="kind", required=True, metavar="KIND")
    crontab = kinds.add_parser("crontab", help="a crontab (crontab(5)): FILE, or - for stdin "
                               "(default: stdin)")
    crontab.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    crontab.add_argument("--system", action="store_true",
                         help="lines have the user column (as /etc/crontab and /etc/cron.d/*, "
                              "which are recognized by their path)")
    crontab.set_defaults(func=cmd_import_crontab)
    gotorch = kinds.add_parser("gotorch", help="gotorch's JSON task list")
    gotorch.add_argument("file", metavar="FILE")
    gotorch.set_defaults(func=cmd_import_gotorch)


def _read(path: str) -> str | None:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"torchd: cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)
        return None


def _report(entries: list[Imported], text: str) -> int:
    """The file on stdout; each skipped entry and a count on stderr."""
    sys.stdout.write(text)
    sys.stdout.flush()  # the file first, then what is said about it
    skipped = [e for e in entries if e.skipped is not None]
    for entry in skipped:
        print(f"{entry.origin}: skipped: {entry.skipped}", file=sys.stderr)
    warned = sum(1 for e in entries if e.skipped is None and e.warnings)
    print(f"{len(entries) - len(skipped)} task(s) imported, {len(skipped)} skipped, "
          f"{warned} with warnings (see the comments above them)", file=sys.stderr)
    return EXIT_OK


def cmd_import_crontab(args: argparse.Namespace) -> int:
    from torchd.config.importcron import import_crontab, is_system_path  # noqa: PLC0415
    from torchd.config.importout import render  # noqa: PLC0415

    text = _read(args.file)
    if text is None:
        return EXIT_CONFIG
    source = "stdin" if args.file == "-" else args.file
    system = args.system or (args.file != "-" and is_system_path(os.path.abspath(args.file)))
    entries = import_crontab(text, source, system=system)
    what = "crontab --system" if system else "crontab"
    return _report(entries, render(entries, source, what))


def cmd_import_gotorch(args: argparse.Namespace) -> int:
    from torchd.config.importgotorch import import_gotorch  # noqa: PLC0415
    from torchd.config.importout import render  # noqa: PLC0415
    from torchd.core.schedule.zones import host_zone_spec, load_zone  # noqa: PLC0415

    text = _read(args.file)
    if text is None:
        return EXIT_CONFIG
    try:  # gotorch ran in its host's zone, as the imported tasks will without `timezone`
        entries = import_gotorch(text, args.file, time.time(), load_zone(host_zone_spec()))
    except json.JSONDecodeError as exc:
        print(f"{args.file}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"{args.file}:1: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return _report(entries, render(entries, args.file, "gotorch"))
