from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon, RedisServer, free_port, require_tool
from tests.webhelpers import WebDaemon, start_web_daemon


@pytest.fixture
def write_tasks(tmp_path: Path) -> Callable[[str], Path]:
    """Write a task file (dedented YAML text) and return its path."""
    import textwrap

    def write(text: str, name: str = "tasks.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(config: Path, state: str = "state", env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(config=config, state_dir=tmp_path / state, env=env or {})
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.kill_everything()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port (fails, not skips, under CI)."""
    server = RedisServer(require_tool("redis-server"), free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def web_daemon(write_tasks: Callable[..., Path],
               daemon_factory: Callable[..., Daemon]) -> Callable[..., WebDaemon]:
    """Start a real daemon whose task file is `text` with LISTEN replaced by a free
    loopback address: `web_daemon("daemon: {http: {listen: LISTEN}}\ntasks: [...]")`."""

    def start(text: str) -> WebDaemon:
        port = free_port()
        config = write_tasks(text.replace("LISTEN", f"127.0.0.1:{port}"))
        return start_web_daemon(daemon_factory(config), port)

    return start
