"""A run's output over HTTP: the whole of it, and followed live as Server-Sent Events
(byte offsets as ids, an exact resume with Last-Event-ID, the last lines replayed, an
`end` event), from a real daemon, with aiohttp's client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import psutil
import pytest

from tests.helpers import wait_for
from tests.webhelpers import WebDaemon
from torchd.web.logstream import MAX_STREAMS

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

TASKS = """\
daemon:
  http: {listen: LISTEN}
tasks:
  - name: talker
    schedule: "0 0 1 1 *"
    command: ["sh", "-c", "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.4; done; exit 3"]
  - name: chatty
    schedule: "0 0 1 1 *"
    command: ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]
  - name: quick
    schedule: "0 0 1 1 *"
    command: ["sh", "-c", "seq 1 50"]
  - name: big
    schedule: "0 0 1 1 *"
    command: ["sh", "-c", "seq 1 500000; printf 'no newline at the end'"]
"""


@dataclass
class Event:
    name: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)


async def events(response: aiohttp.ClientResponse, until: Callable[[Event], bool],
                 deadline: float = 20.0) -> list[Event]:
    """The stream's events (comments skipped) up to the first for which `until` is true."""
    got: list[Event] = []
    current = Event()
    async with asyncio.timeout(deadline):
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if current.data or current.name != "message":
                    got.append(current)
                    if until(current):
                        return got
                current = Event()
            elif line.startswith(":"):
                continue
            else:
                key, _, value = line.partition(": ")
                if key == "data":
                    current.data.append(value)
                elif key == "id":
                    current.id = value
                elif key == "event":
                    current.name = value
    return got


def start(web: WebDaemon, task: str) -> str:
    reply = web.api("trigger", "POST", task=task)
    assert reply["ok"] is True, reply
    run_id: str = reply["result"]["run_id"]
    return run_id


def output_lines(evs: list[Event]) -> list[str]:
    return [line for e in evs if e.name == "message" for line in e.data]


async def test_a_runs_output_arrives_live_and_a_resume_is_exact(
        web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(TASKS)
    run_id = start(web, "talker")
    auth = {"Authorization": f"Bearer {web.token}"}
    url = f"{web.url}/api/v1/runs/{run_id}/log/stream"
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            first = await events(response, lambda e: "line 2" in e.data)
        resume_at = first[-1].id
        assert resume_at is not None
        assert resume_at.isdigit()
        async with session.get(url, headers={"Last-Event-ID": resume_at}) as response:
            rest = await events(response, lambda e: e.name == "end")
        whole = await (await session.get(f"{web.url}/api/v1/runs/{run_id}/log")).text()
    ending = json.loads(rest[-1].data[0])
    assert (ending["run_id"], ending["outcome"], ending["exit_code"]) == (run_id, "failed", 3)
    seen = output_lines(first) + output_lines(rest)
    assert seen == whole.rstrip("\n").split("\n")  # nothing twice, nothing missing
    assert [line for line in seen if line.startswith("line")] == [
        f"line {i}" for i in range(1, 7)]
    assert seen[0].startswith("--- torchd ")  # the run's own header first
    assert f"end run={run_id}" in seen[-1]
    offsets = [int(e.id) for e in first + rest if e.id is not None]
    assert offsets == sorted(offsets)


async def test_a_finished_run_replays_its_last_lines_then_ends(
        web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(TASKS)
    reply = web.api("trigger", "POST", task="quick", wait=True)
    run_id = reply["result"]["run_id"]
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {web.token}"}) as session:
        url = f"{web.url}/api/v1/runs/{run_id}/log/stream?lines=3"
        async with session.get(url) as response:
            got = await events(response, lambda e: e.name == "end", deadline=5)
        download = await session.get(f"{web.url}/api/v1/runs/{run_id}/log?download=true")
        assert download.headers["Content-Disposition"] == (
            f'attachment; filename="quick-{run_id}.log"')
        assert "\n50\n" in await download.text()
    lines = output_lines(got)
    assert lines[:2] == ["49", "50"]
    assert f"end run={run_id}" in lines[2]
    assert json.loads(got[-1].data[0])["outcome"] == "ok"


async def test_clients_that_go_away_leave_nothing_behind(
        web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(TASKS)
    run_id = start(web, "chatty")
    port = int(web.url.rsplit(":", 1)[1])
    daemon = psutil.Process(web.daemon.pid)

    def open_connections() -> int:
        return sum(1 for c in daemon.net_connections(kind="tcp")
                   if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)

    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {web.token}"}) as session:
        responses = [await session.get(f"{web.url}/api/v1/runs/{run_id}/log/stream")
                     for _ in range(20)]
        for response in responses:
            await events(response, lambda e: "tick" in e.data)
        assert open_connections() == 20
        for response in responses:
            response.close()
    wait_for(lambda: open_connections() == 0, timeout=10,
             message="the daemon to drop the streams of clients that left")
    assert web.api("kill", "POST", task="chatty")["ok"] is True


async def test_a_big_runs_replay_reads_only_its_end(web_daemon: Callable[..., WebDaemon]) -> None:
    """A run of 3.4 MB: the replay reads the end of it, not all of it, and a last line
    without a newline still arrives; odd counts and ids are refused or ignored safely."""
    web = web_daemon(TASKS)
    run_id = web.api("trigger", "POST", task="big", wait=True)["result"]["run_id"]
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {web.token}"}) as session:
        url = f"{web.url}/api/v1/runs/{run_id}/log/stream"
        async with session.get(url + "?lines=3") as response:
            got = await events(response, lambda e: e.name == "end", deadline=10)
        lines = output_lines(got)
        assert lines[0] == "499999"  # the last 3 lines of 500,002, read from the end
        assert lines[-1].startswith("no newline at the end--- torchd ")  # the frame follows
        assert f"end run={run_id}" in lines[-1]
        for odd in ("?lines=%C2%B2", "?lines=" + "9" * 40):
            async with session.get(url + odd) as response:
                got = await events(response, lambda e: e.name == "end", deadline=10)
            assert f"end run={run_id}" in output_lines(got)[-1]
        async with session.get(url, headers={"Last-Event-ID": "1" * 40}) as response:
            assert response.status == 200
            got = await events(response, lambda e: e.name == "end", deadline=20)
        assert got[-1].name == "end"


async def test_live_logs_past_the_cap_are_refused_until_one_closes(
        web_daemon: Callable[..., WebDaemon]) -> None:
    """MAX_STREAMS live logs on one listener; the next is a 503 with Retry-After, and once
    a client leaves, a new one is served again."""
    web = web_daemon(TASKS)
    run_id = start(web, "chatty")
    url = f"{web.url}/api/v1/runs/{run_id}/log/stream?lines=1"
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {web.token}"},
            connector=aiohttp.TCPConnector(limit=0)) as session:
        held = [await session.get(url) for _ in range(MAX_STREAMS)]
        assert {r.status for r in held} == {200}
        async with session.get(url) as refused:
            assert (refused.status, refused.headers["Retry-After"]) == (503, "10")
            assert f"{MAX_STREAMS} live logs are open already" in await refused.text()
        held.pop().close()

        async def served() -> bool:
            async with session.get(url) as response:
                if response.status == 503:
                    return False
                assert response.status == 200
                return bool(await events(response, lambda e: "tick" in e.data, deadline=5))

        async with asyncio.timeout(10):  # the daemon sees the client gone at its next write
            while not await served():
                await asyncio.sleep(0.2)
        for response in held:
            response.close()
    assert web.api("kill", "POST", task="chatty")["ok"] is True
