"""The dashboard shows a daemon task's keep-alive window: its state and next opening."""

from __future__ import annotations

from collections.abc import Callable

from tests.webhelpers import WebDaemon

WebStarter = Callable[[str], WebDaemon]
TASKS = """\
daemon:
  http: {listen: LISTEN}
tasks:
  - name: night
    type: daemon
    command: ['sleep', '60']
    window: {schedule: '0 0 3 * * *', for: 1s}
  - name: always
    type: daemon
    command: ['sleep', '60']
    window: {schedule: '0 0 * * * *', for: 2h}
"""


def test_task_pages_show_the_window(web_daemon: WebStarter) -> None:
    web = web_daemon(TASKS)
    status, _, body = web.request("/tasks", token=web.token)
    text = body.decode()
    assert status == 200
    assert 'data-window="closed">window <code>0 0 3 * * *</code>' in text
    assert 'data-window="open">window <code>0 0 * * * *</code>' in text
    assert "next opening <time" in text
    status, _, body = web.request("/tasks/always", token=web.token)
    assert status == 200
    assert 'data-window="open"' in body.decode()
    assert "open, closes <time" in body.decode()
