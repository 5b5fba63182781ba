"""`torchd start`: validate, detach with python-daemon, and wait until the daemon is serving.

The CLI process forks once; the child enters DaemonContext (which forks twice more and
detaches) and reports back through a pipe: "ok PID" once the file is loaded and the socket
is up, or the reason it could not start. The event loop is created only after detaching.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import logging.handlers
import os
import select
import time
from pathlib import Path

from torchd.config.loader import ParseCache
from torchd.core.errors import TorchdError
from torchd.core.model import Config, LogFormat, LogPolicy
from torchd.store.statedir import FileModes, StatePaths, open_file, prepare
from torchd.system.logformat import formatter_for

READY_TIMEOUT = 30.0


def _report(error: str | None) -> bytes:
    """One JSON line: the parent reads until the newline, so errors may span lines."""
    return (json.dumps({"pid": os.getpid(), "error": error}) + "\n").encode()


class StateDirLogHandler(logging.handlers.RotatingFileHandler):
    """torchd.log: opened as every file in the state dir is (see statedir.open_file)."""

    def __init__(self, path: Path, policy: LogPolicy, modes: FileModes) -> None:
        self._modes = modes  # before the base class opens the file
        super().__init__(path, maxBytes=policy.max_bytes, backupCount=policy.keep,
                         encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        fd = open_file(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                       self._modes)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def _configure_file_logging(path: Path, level: int, policy: LogPolicy, modes: FileModes,
                            log_format: LogFormat) -> None:
    """torchd.log rotates like the task logs, by daemon.log's max_bytes and keep."""
    handler = StateDirLogHandler(path, policy, modes)
    handler.setFormatter(formatter_for(None, log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _daemon_main(config_path: Path, state_dir: Path, config: Config, ready_fd: int,
                 level: int, *, parse_cache: ParseCache | None, launched: float | None,
                 log_format: LogFormat) -> int:
    import daemon  # noqa: PLC0415 - only the detaching path needs python-daemon

    from torchd.daemon.app import App, file_modes  # noqa: PLC0415

    paths = StatePaths(state_dir)
    modes = file_modes(config)
    context = daemon.DaemonContext(
        working_directory="/",
        umask=0o022,
        files_preserve=[ready_fd],
        signal_map={},  # our loop installs its own handlers; none may raise inside our code
        detach_process=True,
    )
    with context:
        def ready(error: str | None) -> None:
            # The descriptor stays open (children never inherit it): closing it here would
            # let a later error report write into whatever reuses the number.
            os.write(ready_fd, _report(error))

        try:  # the log goes into the state dir: it must be checked (or made) first
            prepare(paths, modes)
            _configure_file_logging(paths.daemon_log, level, config.daemon.log, modes,
                                    log_format)
        except (TorchdError, OSError) as exc:
            ready(str(exc))
            return 1

        return asyncio.run(App(config_path, paths, config=config, parse_cache=parse_cache,
                               launched=launched).run(ready))


def start_detached(config_path: Path, state_dir: Path, config: Config,
                   parse_cache: ParseCache | None = None, *, level: int = logging.INFO,
                   timeout: float = READY_TIMEOUT, launched: float | None = None,
                   log_format: LogFormat | None = None) -> int:
    """Start a detached daemon on the already validated `config` (inherited through fork,
    not parsed again, with what its parse left in `parse_cache`); return its pid once it
    serves, or raise TorchdError. `launched`: see App. `log_format`: --log-format, which
    wins over daemon.log_format."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        os.close(read_fd)
        code = 1
        try:
            code = _daemon_main(config_path.absolute(), state_dir.absolute(), config, write_fd,
                                level, parse_cache=parse_cache, launched=launched,
                                log_format=log_format or config.daemon.log_format)
        except BaseException as exc:  # noqa: BLE001 - the child must never return into the CLI
            with contextlib.suppress(OSError):
                os.write(write_fd, _report(str(exc) or type(exc).__name__))
        os._exit(code)
    os.close(write_fd)
    try:
        return _await_ready(read_fd, timeout)
    finally:
        os.close(read_fd)
        os.waitpid(child, 0)


def _await_ready(read_fd: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TorchdError(f"the daemon did not report ready within {timeout:.0f}s")
        readable, _, _ = select.select([read_fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        data += chunk
    if not data:
        raise TorchdError("the daemon exited before it was ready (see its log)")
    report = json.loads(data)
    if report["error"] is not None:
        raise TorchdError(str(report["error"]))
    return int(report["pid"])
