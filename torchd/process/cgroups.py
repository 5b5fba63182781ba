"""A cgroup (v2) for each run, so that ending a run ends everything it started, whatever
process group or session a descendant moved to (`setsid cmd &`, a double fork), and so
that the CPU time of all of them can be read.

The daemon makes `torchd-KEY` in its own cgroup (KEY names the state dir, so daemons of
different state dirs stay apart, and a successor finds what a crashed daemon left), and
in it `run-RUN_ID` for each run, moving the run's process there as soon as it has
started. That needs a cgroup the daemon can write: root's, or one systemd delegated to
it (`Delegate=yes`). Elsewhere the daemon goes without (see reaper.py for what is left).

Moving a process waits in the kernel for an RCU grace period (6 ms median here, unless
cgroup2 is mounted with `favordynmods`), which the event loop must not: a thread of its
own moves each run. A shell forks within that time, so the thread then moves the run's
tree too (what its processes forked before they were moved, walked through /proc), again
until nothing of it is left outside. What left the tree meanwhile (an orphan) comes to
the reaper (reaper.py), which ends it with the run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from torchd.system.procstat import proc_stat

log = logging.getLogger("torchd.cgroups")
OFF = "no cgroups (daemon.cgroups: false)"
TREE_PASSES = 5  # walks of a run's tree for what it forked before its move
FREEZE_WAIT = 0.01  # seconds a signal waits for the run's cgroup to be frozen


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


def set_up_run_cgroups(state_dir: Path, *, enabled: bool = True) -> CgroupMode:
    """Find the cgroup v2 hierarchy and make this daemon's cgroup for runs in its own;
    a CgroupMode without a parent says why that cannot be done."""
    home = _usable_home(enabled)
    if isinstance(home, CgroupMode):
        return home
    parent = home / parent_name(state_dir)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o755)
        owners = {os.stat(home).st_uid, os.lstat(parent).st_uid}
    except OSError as exc:
        return _without(_not_writable(home, exc.strerror or str(exc)))
    if not owners <= {0, os.geteuid()}:  # another user could move or freeze the runs
        return _without(f"{parent} or the cgroup above it belongs to another user")
    return _with(parent)


def describe_cgroup_mode(*, enabled: bool = True) -> str:
    """What set_up_run_cgroups() would find for a daemon started here, without making
    anything (for `torchd check`; as a systemd service the daemon's cgroup is the
    service's, and `torchd status` tells what the running daemon does)."""
    home = _usable_home(enabled)
    if isinstance(home, CgroupMode):
        return home.description
    if not os.access(home, os.W_OK):
        return _without(_not_writable(home, "permission denied")).description
    return _with(home).description


def _usable_home(enabled: bool) -> Path | CgroupMode:
    """The daemon's own cgroup, or the mode without cgroups and why."""
    if not enabled:
        return CgroupMode(None, OFF)
    release = tuple(int(part) for part in re.findall(r"\d+", os.uname().release)[:2])
    if release < (5, 14):
        return _without("cgroup.kill needs Linux 5.14 or later")
    home = _home()
    return _without(home) if isinstance(home, str) else home


def _with(parent: Path) -> CgroupMode:
    return CgroupMode(parent, f"cgroup v2, a cgroup per run under {parent}")


def _without(why: str) -> CgroupMode:
    return CgroupMode(None, f"no cgroups ({why})")


def _not_writable(home: Path, why: str) -> str:
    return (f"{home} is not writable by uid {os.geteuid()}: {why}; as a systemd service, "
            "Delegate=yes gives torchd its cgroup")


def _write(fd: int, path: str, text: str) -> None:
    """Write to a cgroup file, its path relative to the directory open as `fd`."""
    out = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd)
    try:
        os.write(out, text.encode())
    finally:
        os.close(out)


def _read(fd: int, path: str) -> str:
    source = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=fd)
    try:
        return os.read(source, 65536).decode("ascii", errors="replace")
    finally:
        os.close(source)


class RunCgroupParent:
    """The daemon's cgroup for runs (`torchd-KEY`), held open: each run's cgroup is made
    and used relative to it, which spares every run's operations the walk from /."""

    __slots__ = ("_mover", "_moves", "fd", "lock", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._moves: queue.SimpleQueue[tuple[RunCgroup, int] | None] = queue.SimpleQueue()
        self._mover: threading.Thread | None = None
        self.lock = threading.Lock()  # a move, against the reaping of the process

    def close(self) -> None:
        if self._mover is not None:
            self._moves.put(None)
            self._mover.join(timeout=10)
            self._mover = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def move(self, cgroup: RunCgroup, pid: int) -> None:
        """Have the mover thread move the process into the cgroup (see the module doc)."""
        if self._mover is None:
            self._mover = threading.Thread(target=self._move_each, name="cgroup mover",
                                           daemon=True)
            self._mover.start()
        self._moves.put((cgroup, pid))

    def _move_each(self) -> None:
        while (job := self._moves.get()) is not None:
            cgroup, pid = job
            cgroup.add(pid)

    def make(self, name: str) -> RunCgroup | None:
        """Make the cgroup `name`; None if that cannot be done (the run then goes without:
        logged)."""
        try:
            os.mkdir(name, dir_fd=self.fd)
        except FileExistsError:
            pass
        except OSError as exc:
            log.warning("cannot make cgroup %s/%s: %s; the run goes without", self.path, name,
                        exc.strerror)
            return None
        return RunCgroup(self, name)

    def leftovers(self) -> list[RunCgroup]:
        """The run cgroups in it: after a crash, what a previous daemon left."""
        try:
            names = os.listdir(self.fd)
        except OSError:
            return []
        return [RunCgroup(self, name) for name in sorted(names) if name.startswith("run-")]

    def release(self) -> None:
        """Remove the run cgroups left empty and this one, at the daemon's stop."""
        for cgroup in self.leftovers():
            cgroup.remove()
        self.close()
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


class RunCgroup:
    """One run's cgroup. The mover thread moves the run's process in (`moved`) unless the
    loop has closed it first (`closed`: the process is about to be reaped, after which its
    pid may belong to another process); the two never overlap (`home.lock`)."""

    __slots__ = ("closed", "home", "moved", "name")

    def __init__(self, home: RunCgroupParent, name: str) -> None:
        self.home = home
        self.name = name
        self.moved = False
        self.closed = False

    @property
    def path(self) -> str:
        return f"{self.home.path}/{self.name}"

    def add(self, pid: int) -> None:
        """Move the process into the cgroup (in the mover thread), then what it forked
        before, unless the cgroup was closed meanwhile; a failure is logged, and the run
        goes without."""
        if not self._move(pid):
            return
        self.moved = True
        for _ in range(TREE_PASSES):
            try:
                inside = {int(p) for p in _read(self.home.fd, f"{self.name}/cgroup.procs")
                          .split()}
            except OSError:
                return
            outside = {child: parent for child, parent in _tree(pid).items()
                       if child not in inside}
            for child, parent in sorted(outside.items()):
                stat = proc_stat(child)  # still the process found under its parent?
                if stat is not None and stat.ppid == parent and not self._move(child):
                    return
            if not outside:
                return

    def _move(self, pid: int) -> bool:
        """One process into the cgroup; False when the cgroup is closed or unusable. The
        run's own process keeps its pid until the loop reaps it, which closes the cgroup
        first. A descendant found by the walk is reaped by its own parent, so add() checks
        that its pid is still a child of that parent just before; the moment between the
        check and the move remains."""
        with self.home.lock:
            if self.closed:
                return False
            try:
                _write(self.home.fd, f"{self.name}/cgroup.procs", str(pid))
            except ProcessLookupError:
                pass  # it has ended already
            except OSError as exc:
                log.warning("cannot move pid %d into cgroup %s: %s; the run goes without",
                            pid, self.path, exc.strerror)
                return False
            return True

    def close(self) -> None:
        """The process is about to be reaped, after which its pid may be another's: no
        move of it, nor of what a walk of its tree found, from now on."""
        with self.home.lock:
            self.closed = True

    def cpu_seconds(self) -> float | None:
        """CPU seconds used by every process the cgroup held."""
        with contextlib.suppress(OSError, ValueError):
            for line in _read(self.home.fd, f"{self.name}/cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        return None

    def populated(self) -> bool:
        try:
            return "populated 1" in _read(self.home.fd, f"{self.name}/cgroup.events")
        except OSError:
            return False

    def signal(self, signum: int) -> bool:
        """Send `signum` to every process in the cgroup (SIGKILL through cgroup.kill);
        False if it was empty. The cgroup is frozen while its pids are read and signalled,
        so that none can exit and have its pid reused meanwhile."""
        fd, name = self.home.fd, self.name
        if signum == signal.SIGKILL:
            if not self.populated():
                return False
            with contextlib.suppress(OSError):
                _write(fd, f"{name}/cgroup.kill", "1")
            return True
        try:
            _write(fd, f"{name}/cgroup.freeze", "1")
        except OSError:
            return False
        self._wait_frozen()
        try:
            pids = [int(pid) for pid in _read(fd, f"{name}/cgroup.procs").split()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        except OSError:
            pids = []
        finally:
            with contextlib.suppress(OSError):
                _write(fd, f"{name}/cgroup.freeze", "0")
        return bool(pids)

    def _wait_frozen(self) -> None:
        """A freeze is asked for, and done once cgroup.events says so: wait for that a
        little (a process in an uninterruptible sleep freezes only when it wakes)."""
        deadline = time.monotonic() + FREEZE_WAIT
        while time.monotonic() < deadline:
            try:
                events = _read(self.home.fd, f"{self.name}/cgroup.events")
            except OSError:
                return
            if "frozen 1" in events.splitlines():
                return
            time.sleep(0.0005)

    def remove(self) -> bool:
        """Remove the cgroup; False while processes are left in it."""
        try:
            os.rmdir(self.name, dir_fd=self.home.fd)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cannot remove cgroup %s: %s", self.path, exc.strerror)
            return False
        return True


def _tree(pid: int) -> dict[int, int]:
    """The process's descendants, as the children files of /proc list them: pid -> the
    parent it was listed under."""
    found: dict[int, int] = {}
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children", "rb") as listing:
                    children = {int(child) for child in listing.read().split()}
            except OSError:
                continue
            for child in children - found.keys():
                found[child] = parent
                pending.append(child)
    return found


def end_leftover_cgroups(runs: RunCgroupParent, grace: float) -> list[str]:
    """End what runs of a crashed daemon left in their cgroups (TERM, `grace`, KILL), and
    remove those cgroups. Returns the cgroups that held processes."""
    found = [cgroup for cgroup in runs.leftovers() if cgroup.populated()]
    for cgroup in found:
        log.warning("ending the processes left in cgroup %s by a previous torchd", cgroup.path)
        cgroup.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while found and time.monotonic() < deadline and any(c.populated() for c in found):
        time.sleep(0.05)
    for cgroup in found:
        cgroup.signal(signal.SIGKILL)
    give_up = time.monotonic() + 5.0
    for cgroup in runs.leftovers():
        while not cgroup.remove() and time.monotonic() < give_up:
            time.sleep(0.05)
    return [cgroup.path for cgroup in found]
