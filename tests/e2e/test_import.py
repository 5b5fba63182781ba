"""`torchd import` through the real CLI: a crontab from a file, from stdin and as a system
crontab, gotorch task lists, each output accepted by `torchd check`; and a `%` line's
stdin really reaching the command when the real daemon runs the imported task."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Daemon, torchd_cmd

pytestmark = pytest.mark.e2e
DATA = Path(__file__).resolve().parents[1] / "data" / "import"


def torchd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd(*args), input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def imported(tmp_path: Path, *args: str, stdin: str | None = None) -> tuple[Path, str]:
    """Import, write the output, and have `torchd check` accept it: (file, stderr)."""
    result = torchd("import", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "imported.yaml"
    out.write_text(result.stdout)
    check = torchd("check", "-c", str(out))
    assert check.returncode == 0, check.stderr + result.stdout
    return out, result.stderr


def test_crontab_file_imports_and_passes_check(tmp_path: Path) -> None:
    """The corpus: 24 tasks, the 3 lines torchd cannot take named on stderr."""
    path = str(DATA / "user.crontab")
    out, stderr = imported(tmp_path, "crontab", path)
    assert f"{path}:41: skipped: schedule '61 * * * *': minute field '61' is out of range" \
        in stderr
    assert "24 task(s) imported, 3 skipped" in stderr
    text = out.read_text()
    assert f"  # {path}:18\n" in text
    assert '    schedule: "0 12 * * *"\n' in text


def test_crontab_from_stdin(tmp_path: Path) -> None:
    """`-` reads stdin; the comments say stdin:LINE."""
    out, _ = imported(tmp_path, "crontab", "-", stdin="# c\n*/5 * * * * /bin/true\n")
    text = out.read_text()
    assert "  # stdin:2\n  - name: \"true\"\n" in text


def test_system_crontab_has_the_user_column(tmp_path: Path) -> None:
    """--system reads the sixth word as the user; `torchd check` knows root and nobody."""
    out, stderr = imported(tmp_path, "crontab", str(DATA / "etc_crontab"), "--system")
    text = out.read_text()
    assert text.count('    user: "root"\n') == 5
    assert text.count('    user: "nobody"\n') == 1
    assert "6 task(s) imported, 0 skipped" in stderr


@pytest.mark.parametrize("name", ["gotorch_task_tpl.json", "gotorch_tasks.json"])
def test_gotorch_imports_and_passes_check(name: str, tmp_path: Path) -> None:
    """gotorch's own example (one daemon task, one with an empty Command) and our list."""
    out, stderr = imported(tmp_path, "gotorch", str(DATA / name))
    assert "skipped" in stderr
    assert "type: \"daemon\"" in out.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (("crontab", "/nonexistent/crontab"), "torchd: cannot read /nonexistent/crontab: "
                                           "No such file or directory"),
    (("gotorch", "BAD"), "BAD:2:1: not JSON: Expecting value"),
], ids=["missing", "bad-json"])
def test_unreadable_input_is_named(args: tuple[str, ...], message: str,
                                   tmp_path: Path) -> None:
    """Exit 2 and the file (and line) in the message."""
    (tmp_path / "BAD").write_text("[\n")
    result = subprocess.run(torchd_cmd("import", *args), capture_output=True, text=True,
                            timeout=60, check=False, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == message


def test_percent_text_reaches_the_command_as_stdin(
        tmp_path: Path, daemon_factory: Callable[..., Daemon]) -> None:
    """The imported task, run by the real daemon, reads cron's stdin: `%` a newline, `\\%` a
    percent sign, under /bin/sh and under SHELL=/bin/bash."""
    sh_out, bash_out = tmp_path / "sh.txt", tmp_path / "bash.txt"
    crontab = (f"0 0 1 1 * cat > {sh_out}%line one%50\\% off\n"
               "SHELL=/bin/bash\n"
               f"0 0 1 1 * cat > {bash_out}; echo \"$BASH_VERSION\" >> {bash_out}%x%y\n")
    out, _ = imported(tmp_path, "crontab", "-", stdin=crontab)
    daemon = daemon_factory(out).start()
    for task in ("cat", "cat-2"):
        result = daemon.cli("trigger", task, "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
    assert sh_out.read_text() == "line one\n50% off"
    text = bash_out.read_text()  # cron adds no newline after the last line of stdin
    assert text.startswith("x\ny")
    assert text[3:].strip()  # $BASH_VERSION: bash ran it
