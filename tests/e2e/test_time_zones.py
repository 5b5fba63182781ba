"""The host's zone in every form TZ takes, and never a silent UTC (issue 21)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import require_root, require_tool, torchd_cmd

NOON = 'tasks:\n  - {name: noon, schedule: "0 0 12 * * *", command: "true"}\n'


def torchd(*args: str, env: dict[str, str] | None = None,
           prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if key != "TZ"}
    return subprocess.run([*prefix, *torchd_cmd(*args)], capture_output=True, text=True,
                          timeout=60, env={**environ, **(env or {})}, check=False)


@pytest.mark.parametrize(("tz", "offset"), [
    ("Asia/Tokyo", "+09:00"),
    (":Asia/Tokyo", "+09:00"),
    ("/usr/share/zoneinfo/Asia/Tokyo", "+09:00"),
    ("JST-9", "+09:00"),
    ("<+0530>-5:30", "+05:30"),
    ("EST5EDT,M3.2.0,M11.1.0", "-04:00"),  # daylight saving time in July
], ids=["name", "colon", "path", "posix-fixed", "posix-quoted", "posix-dst"])
def test_every_form_of_tz_is_honoured(write_tasks: Callable[..., Path], tz: str,
                                      offset: str) -> None:
    """A file without daemon.timezone runs in the host's zone, in any form TZ gives it."""
    config = write_tasks(NOON)
    result = torchd("next", "-c", str(config), "noon", "-n", "1", "--after",
                    "2026-07-01T00:00:00Z", env={"TZ": tz})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].strip().endswith(f"T12:00:00{offset}")


@pytest.mark.parametrize(("tz", "why"), [
    ("Foo/Bar", "no zone of that name, and not a POSIX TZ rule (like "
                "'CET-1CEST,M3.5.0,M10.5.0/3')"),
    ("JST-9JDT", "a POSIX TZ rule with daylight saving time must say when it starts and ends "
                 "(like 'CET-1CEST,M3.5.0,M10.5.0/3')"),
    ("/nonexistent/zone", "no such file"),
], ids=["unknown-name", "rule-without-dates", "missing-file"])
def test_an_unusable_tz_is_a_config_error(write_tasks: Callable[..., Path], tz: str,
                                          why: str) -> None:
    """Never a silent UTC: `check` exits 2, naming TZ's value and what to do."""
    config = write_tasks(NOON)
    result = torchd("check", "-c", str(config), env={"TZ": tz})
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{config}:1: daemon.timezone: not set, and this host's time zone (from TZ) cannot "
        f"be used (time zone '{tz}': {why}); set daemon.timezone, or fix TZ")


def test_a_broken_etc_localtime_is_a_config_error(tmp_path: Path,
                                                  write_tasks: Callable[..., Path]) -> None:
    """/etc/localtime that is not a zone file (here: in a private mount namespace, its
    target replaced by garbage): refused, not read as UTC."""
    require_root()
    unshare = require_tool("unshare")
    config = write_tasks(NOON)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a zone file\n")
    target = os.path.realpath("/etc/localtime")
    script = f'mount --bind {garbage} {target} && exec "$@"'
    result = torchd("check", "-c", str(config),
                    prefix=(unshare, "--mount", "--propagation", "private", "sh", "-c", script,
                            "sh"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("not set, and this host's time zone (from /etc/localtime) cannot be used"
            in result.stderr)
    assert "not a TZif file" in result.stderr


def test_zones_come_from_tzdata_without_system_zone_data(
        tmp_path: Path, write_tasks: Callable[..., Path]) -> None:
    """A slim container with no /usr/share/zoneinfo (here: PYTHONTZPATH at an empty
    directory): named zones come from the tzdata package; an unknown one is an error with
    its line, not a traceback."""
    empty = tmp_path / "no-zones"
    empty.mkdir()
    config = write_tasks("daemon: {timezone: Europe/Berlin}\n" + NOON)
    result = torchd("next", "-c", str(config), "noon", "-n", "1", "--after",
                    "2026-07-01T00:00:00Z", env={"PYTHONTZPATH": str(empty)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].strip() == "2026-07-01T12:00:00+02:00"
    bad = write_tasks("daemon: {timezone: Nowhere/Zone}\n" + NOON, "bad.yaml")
    result = torchd("check", "-c", str(bad), env={"PYTHONTZPATH": str(empty)})
    assert result.returncode == 2
    assert result.stderr.startswith(f"{bad}:1: daemon.timezone: unknown time zone "
                                    "'Nowhere/Zone'")
    assert "Traceback" not in result.stderr
