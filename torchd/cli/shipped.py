"""The files shipped with the package: `example` and `unit` print them.

torchd/data holds symlinks to their one home (etc/tasks.example.yaml, systemd/*.service);
a wheel gets their contents."""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files

from torchd.cli.common import EXIT_OK


def shipped(name: str) -> str:
    return files("torchd").joinpath("data", name).read_text(encoding="utf-8")


def cmd_example(args: argparse.Namespace) -> int:
    sys.stdout.write(shipped("tasks.example.yaml"))
    return EXIT_OK


def cmd_unit(args: argparse.Namespace) -> int:
    sys.stdout.write(shipped("torchd-hardened.service" if args.hardened else "torchd.service"))
    return EXIT_OK
