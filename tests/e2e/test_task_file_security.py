"""The task file as a way in: as root, torchd runs only what root alone can have written,
reads it once from a checked descriptor, and never blocks on it (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon, require_root, torchd_cmd, user_owned_dir, wait_for
from torchd.config.source import load_config
from torchd.core.errors import ConfigError

Factory = Callable[..., Daemon]
NOBODY = 65534
GOOD = 'tasks:\n  - {name: good, schedule: "@hourly", command: "true"}\n'
BAD = 'tasks:\n  - {name: planted, schedule: "@hourly", command: "true"}\n'


def check(path: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd("check", "-c", str(path)), capture_output=True,
                          text=True, timeout=timeout, check=False)


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, identity=None)
    (problem,) = caught.value.problems
    return str(problem)


@pytest.fixture
def root_dir() -> Iterator[Path]:
    """A root-owned 0755 directory in /tmp, under no directory others can write (the
    test's tmp_path would do too, but this one is also reachable by other users)."""
    with user_owned_dir("root") as path:
        path.chmod(0o755)
        yield path


@pytest.mark.parametrize(("layout", "unsafe"), [
    ("file in a 0777 directory", "{d}/open"),
    ("file under a 0777 directory", "{d}/open"),
    ("file in a directory of nobody's", "{d}/theirs"),
    ("symlink to a file in a 0777 directory", "{d}/open"),
], ids=["own-dir", "ancestor", "owner", "symlink-target"])
def test_a_directory_others_could_swap_the_file_in_is_refused(
        root_dir: Path, layout: str, unsafe: str) -> None:
    """As root, every directory on the way to the file (and to a symlink's target) must be
    root's and not writable by others."""
    require_root()
    open_dir = root_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    theirs = root_dir / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, -1)
    if layout == "file in a 0777 directory":
        path = open_dir / "tasks.yaml"
    elif layout == "file under a 0777 directory":
        (open_dir / "sub").mkdir()
        path = open_dir / "sub" / "tasks.yaml"
    elif layout == "file in a directory of nobody's":
        path = theirs / "tasks.yaml"
    else:
        (open_dir / "real.yaml").write_text(GOOD)
        path = root_dir / "tasks.yaml"
        path.symlink_to(open_dir / "real.yaml")
    if not path.exists():
        path.write_text(GOOD)
    directory = unsafe.format(d=root_dir)
    message = refusal(path)
    assert message.startswith(f"{path}: directory {directory} (owner uid ")
    assert ("is writable by group or others, who can replace what is in it: chmod go-w "
            f"{directory}" in message) or (f"does not belong to uid 0; whoever owns it can "
                                           f"replace what is in it: chown 0 {directory}"
                                           in message)
    result = check(path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}: directory {directory}")


def test_a_sticky_directory_and_a_read_only_mount_are_safe(root_dir: Path) -> None:
    """/tmp-like 1777 directories, and a 0777 directory on a read-only mount (Kubernetes
    mounts ConfigMaps so), cannot have their files swapped: accepted."""
    require_root()
    sticky = root_dir / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "tasks.yaml").write_text(GOOD)
    assert [t.name for t in load_config(sticky / "tasks.yaml", identity=None).tasks] == ["good"]
    source = root_dir / "source"
    source.mkdir()
    source.chmod(0o777)
    (source / "tasks.yaml").write_text(GOOD)
    mounted = root_dir / "mounted"
    mounted.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mounted)], check=True)
    try:
        assert "writable by group or others" in refusal(mounted / "tasks.yaml")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mounted)], check=True)
        names = [t.name for t in load_config(mounted / "tasks.yaml", identity=None).tasks]
        assert names == ["good"]
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


def test_a_file_swapped_while_it_is_checked_is_never_run(root_dir: Path) -> None:
    """The reproduction: a root-owned file and one of nobody's swapped in a loop at the
    path. Each load either gets root's file or refuses; the other's tasks never load."""
    require_root()
    path = root_dir / "tasks.yaml"
    good, bad = root_dir / "good", root_dir / "bad"
    good.write_text(GOOD)
    bad.write_text(BAD)
    os.chown(bad, NOBODY, -1)
    os.link(good, root_dir / "good.keep")
    os.link(bad, root_dir / "bad.keep")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.link(root_dir / "good.keep", root_dir / "g")
            os.replace(root_dir / "g", path)
            os.link(root_dir / "bad.keep", root_dir / "b")
            os.replace(root_dir / "b", path)

    swapper = threading.Thread(target=swap)
    swapper.start()
    loaded: list[str] = []
    refused: list[str] = []
    try:
        for _ in range(2000):
            try:
                config = load_config(path, identity=None)
            except ConfigError as exc:
                refused.append(str(exc.problems[0]))
            else:
                loaded.extend(task.name for task in config.tasks)
    finally:
        stop.set()
        swapper.join()
    assert set(loaded) == {"good"}
    assert refused  # the swap did race the loads
    assert {message.split(": ", 1)[1] for message in refused} == {
        "torchd runs as root and the file is owned by uid 65534, not root; refusing it: "
        f"chown root {path}"}


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """`check` does not block on a FIFO nor read a device: exit 2, saying what it is. (A
    directory is a drop-in directory: test_dropin.)"""
    path = tmp_path / "tasks.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    result = check(path, timeout=20)
    what = {"fifo": "a FIFO", "device": "a device"}[kind]
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{path}: is {what}, not a regular file; refusing to read it")


def test_a_fifo_swapped_in_is_a_rejected_reload_and_stop_still_works(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """A FIFO put in the file's place: the reload is rejected, the daemon goes on and
    stops at once when asked."""
    config = write_tasks(GOOD)
    daemon = daemon_factory(config).start()
    staged = config.with_name("staged")
    os.mkfifo(staged)
    os.replace(staged, config)
    wait_for(lambda: "is a FIFO, not a regular file" in daemon.stderr(), timeout=15,
             message="the rejected reload")
    status = daemon.cli("status", "--json")
    assert '"ok": false' in status.stdout
    started = time.monotonic()
    assert daemon.cli("stop", "--timeout", "5").returncode == 0
    assert time.monotonic() - started < 15


def test_a_file_above_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """A 40 MB file: refused by its size, with the limit named."""
    path = tmp_path / "tasks.yaml"
    with path.open("w") as out:
        out.write("tasks:\n")
        line = '  - {name: t%07d, schedule: "@yearly", command: "true"}\n'
        for index in range(40 * 1024 * 1024 // len(line % 0) + 1):
            out.write(line % index)
    size = path.stat().st_size
    result = check(path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{path}: is {size:,} bytes; a task file may hold at most 33,554,432 bytes (32 MiB)")


def configmap(directory: Path, stamp: str, text: str) -> None:
    """What the kubelet does to update a ConfigMap volume: a new timestamped directory,
    then the `..data` symlink replaced in one rename, then the old directory removed."""
    data = directory / f"..{stamp}"
    data.mkdir()
    (data / "tasks.yaml").write_text(text)
    old = (directory / "..data").resolve() if (directory / "..data").exists() else None
    (directory / "..data_tmp").symlink_to(data.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    if not (directory / "tasks.yaml").is_symlink():
        (directory / "tasks.yaml").symlink_to("..data/tasks.yaml")
    if old is not None:
        for entry in old.iterdir():
            entry.unlink()
        old.rmdir()


def test_a_configmap_update_is_seen_and_applied(tmp_path: Path,
                                                daemon_factory: Factory) -> None:
    """The `..data` symlink swap of a Kubernetes ConfigMap mount reloads the file."""
    mount = tmp_path / "config"
    mount.mkdir()
    configmap(mount, "2026_12_06_01", GOOD)
    daemon = daemon_factory(mount / "tasks.yaml").start()
    configmap(mount, "2026_12_06_02", GOOD + '  - {name: added, schedule: "@hourly", '
                                             'command: "true"}\n')

    def names() -> set[str]:
        return {task["name"] for task in json.loads(daemon.cli("status", "--json").stdout)[
            "tasks"]}

    wait_for(lambda: "added" in names(), timeout=15, message="the swap reloaded")
    configmap(mount, "2026_12_06_03", GOOD)  # and again, from the new directory
    wait_for(lambda: "added" not in names(), timeout=15, message="the second swap")


def test_the_watcher_does_not_subscribe_to_reads(write_tasks: Callable[..., Path],
                                                 daemon_factory: Factory) -> None:
    """The inotify watches ask for no open, access or close-without-write events, so
    reading a neighbouring file costs the daemon nothing."""
    config = write_tasks(GOOD)
    daemon = daemon_factory(config).start()
    masks = []
    for fd in os.listdir(f"/proc/{daemon.pid}/fdinfo"):
        try:
            with open(f"/proc/{daemon.pid}/fdinfo/{fd}", encoding="ascii") as info:
                masks += [int(field.split(":")[1], 16) for line in info
                          if line.startswith("inotify ") for field in line.split()
                          if field.startswith("mask:")]
        except FileNotFoundError:
            continue  # a short-lived descriptor (a journal being renamed over) closed
    assert masks  # the task file's directory is watched
    in_access, in_close_nowrite, in_open = 0x1, 0x10, 0x20
    assert [mask & (in_access | in_close_nowrite | in_open) for mask in masks] == [0] * len(
        masks)
