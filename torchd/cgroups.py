"""A cgroup (v2) for each run, so that ending a run ends everything it started, whatever
process group or session a descendant moved to (`setsid cmd &`, a double fork), and so
that the run's CPU time and peak memory can be read.

The daemon makes `torchd-KEY` in its own cgroup (KEY names the state dir, so daemons of
different state dirs stay apart, and a successor finds what a crashed daemon left), and
in it `run-RUN_ID` for each run, moving the run's process there as soon as it has
started. That needs a cgroup the daemon can write: root's, or one systemd delegated to
it (`Delegate=yes`). Elsewhere the daemon goes without (see reaper.py for what is left).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("torchd.cgroups")
OFF = "no cgroups (daemon.cgroups: false); child subreaper"


@dataclass(frozen=True, slots=True)
class CgroupMode:
    """Whether runs get cgroups here, and why (for `check` and `status`)."""

    parent: Path | None  # where run cgroups are made; None: no cgroups
    description: str


def _cgroup2_mount(mountinfo: str) -> str | None:
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split()[4]
    return None


def _own_cgroup(proc_cgroup: str) -> str | None:
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def parent_name(state_dir: Path) -> str:
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return f"torchd-{digest}"


def _home() -> Path | str:
    """The daemon's own cgroup directory in the cgroup v2 hierarchy, or why there is
    none."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
            mount = _cgroup2_mount(mounts.read())
        with open("/proc/self/cgroup", encoding="utf-8") as groups:
            own = _own_cgroup(groups.read())
    except OSError as exc:
        return f"cannot read /proc: {exc.strerror}"
    if mount is None or own is None:
        return "no cgroup v2 hierarchy is mounted"
    return Path(mount) / own.lstrip("/")


def cgroup_mode(state_dir: Path, *, enabled: bool = True) -> CgroupMode:
    """Find the cgroup v2 hierarchy and make this daemon's cgroup for runs in its own;
    a CgroupMode without a parent says why that cannot be done."""
    if not enabled:
        return CgroupMode(None, OFF)
    home = _home()
    if isinstance(home, str):
        return _without(home)
    parent = home / parent_name(state_dir)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o755)
    except OSError as exc:
        return _without(_not_writable(home, exc.strerror or str(exc)))
    if not (parent / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            os.rmdir(parent)
        return _without("cgroup.kill needs Linux 5.14 or later")
    return CgroupMode(parent, f"cgroup v2, a cgroup per run under {parent}")


def describe_cgroup_mode(*, enabled: bool = True) -> str:
    """What cgroup_mode() would find, without making anything (for `torchd check`)."""
    if not enabled:
        return OFF
    home = _home()
    if isinstance(home, str):
        return _without(home).description
    if not os.access(home, os.W_OK):
        return _without(_not_writable(home, "permission denied")).description
    return f"cgroup v2, a cgroup per run under {home}"


def _without(why: str) -> CgroupMode:
    return CgroupMode(None, f"no cgroups ({why}); child subreaper")


def _not_writable(home: Path, why: str) -> str:
    return (f"{home} is not writable by uid {os.geteuid()}: {why}; as a systemd service, "
            "Delegate=yes gives torchd its cgroup")


def release_run_cgroups(parent: Path) -> None:
    """Remove the daemon's cgroup for runs at its stop, once its runs' are gone."""
    for cgroup in leftovers(parent):
        cgroup.remove()
    with contextlib.suppress(OSError):
        os.rmdir(parent)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode("ascii", errors="replace")
    finally:
        os.close(fd)


class RunCgroup:
    """One run's cgroup. Paths are plain text: this is on every run's way."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def make(cls, parent: str, name: str) -> RunCgroup | None:
        """Make the cgroup `name`; None if that cannot be done (the run then goes without:
        logged)."""
        path = f"{parent}/{name}"
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError as exc:
            log.warning("cannot make cgroup %s: %s; the run goes without", path, exc.strerror)
            return None
        return cls(path)

    def joined(self, command: tuple[str, ...]) -> tuple[str, ...]:
        """The command, made to join the cgroup itself first where it is a shell command:
        a shell can fork before the daemon has moved it (dash starts in 0.1 ms)."""
        if len(command) == 3 and command[:2] == ("/bin/sh", "-c"):
            return (*command[:2], f"echo $$ >{self.path}/cgroup.procs 2>/dev/null; "
                                  f"{command[2]}")
        return command

    def add(self, pid: int) -> bool:
        """Move the process into the cgroup (where it has not moved itself); False if that
        cannot be done (logged; the cgroup is then removed)."""
        try:
            _write(f"{self.path}/cgroup.procs", str(pid))
        except ProcessLookupError:
            pass  # it has ended already
        except OSError as exc:
            log.warning("cannot move pid %d into cgroup %s: %s; the run goes without", pid,
                        self.path, exc.strerror)
            self.remove()
            return False
        return True

    def usage(self) -> tuple[float | None, int | None]:
        """CPU seconds used by the run's processes, and their peak memory in bytes where
        the memory controller is on (else None)."""
        cpu: float | None = None
        peak: int | None = None
        with contextlib.suppress(OSError, ValueError):
            for line in _read(f"{self.path}/cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    cpu = int(line.split()[1]) / 1e6
                    break
        if os.path.exists(f"{self.path}/memory.peak"):
            with contextlib.suppress(OSError, ValueError):
                peak = int(_read(f"{self.path}/memory.peak"))
        return cpu, peak

    def populated(self) -> bool:
        try:
            return "populated 1" in _read(f"{self.path}/cgroup.events")
        except OSError:
            return False

    def signal(self, signum: int) -> bool:
        """Send `signum` to every process in the cgroup (SIGKILL through cgroup.kill);
        False if it was empty. The cgroup is frozen while its pids are read and signalled,
        so that none can exit and have its pid reused meanwhile."""
        if signum == signal.SIGKILL:
            if not self.populated():
                return False
            with contextlib.suppress(OSError):
                _write(f"{self.path}/cgroup.kill", "1")
            return True
        try:
            _write(f"{self.path}/cgroup.freeze", "1")
        except OSError:
            return False
        try:
            pids = [int(pid) for pid in _read(f"{self.path}/cgroup.procs").split()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        except OSError:
            pids = []
        finally:
            with contextlib.suppress(OSError):
                _write(f"{self.path}/cgroup.freeze", "0")
        return bool(pids)

    def remove(self) -> bool:
        """Remove the cgroup; False while processes are left in it."""
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cannot remove cgroup %s: %s", self.path, exc.strerror)
            return False
        return True


def leftovers(parent: Path) -> list[RunCgroup]:
    """The run cgroups a previous daemon of this state dir left (after a crash)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return [RunCgroup(f"{parent}/{name}") for name in sorted(names) if name.startswith("run-")]


def end_leftover_cgroups(parent: Path, grace: float) -> list[str]:
    """End what runs of a crashed daemon left in their cgroups (TERM, `grace`, KILL), and
    remove those cgroups. Returns the cgroups that held processes."""
    found = [cgroup for cgroup in leftovers(parent) if cgroup.populated()]
    for cgroup in found:
        log.warning("ending the processes left in cgroup %s by a previous torchd", cgroup.path)
        cgroup.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while found and time.monotonic() < deadline and any(c.populated() for c in found):
        time.sleep(0.05)
    for cgroup in found:
        cgroup.signal(signal.SIGKILL)
    give_up = time.monotonic() + 5.0
    for cgroup in leftovers(parent):
        while not cgroup.remove() and time.monotonic() < give_up:
            time.sleep(0.05)
    return [cgroup.path for cgroup in found]
