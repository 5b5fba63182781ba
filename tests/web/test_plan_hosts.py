"""Screens 6 and 7 over HTTP against real daemons: the daily plan (`/plan`, its SVG read as
XML) and the hosts of a cluster on a real redis-server (`/hosts`, a host's runs and a
run's log read from another host)."""

from __future__ import annotations

import json
import math
import re
import secrets
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, RedisServer, wait_for
from tests.webhelpers import WebDaemon

pytestmark = pytest.mark.e2e
SVG = "{http://www.w3.org/2000/svg}"
Start = Callable[[str], WebDaemon]
Factory = Callable[..., Daemon]


def plan_svg(web: WebDaemon, query: str = "") -> ET.Element:
    status, _, body = web.request("/plan" + query)
    assert status == 200, body
    found = re.search(rb"<svg .*?</svg>", body, re.DOTALL)
    assert found, body
    return ET.fromstring(found.group(0))  # noqa: S314 - the page of our own daemon


def rects(svg: ET.Element, kind: str, task: str | None = None) -> list[ET.Element]:
    return [r for r in svg.iter(f"{SVG}rect") if kind in r.get("class", "").split()
            and (task is None or r.get("data-task") == task)]


def covered(found: list[ET.Element]) -> set[int]:
    """The slots the rectangles cover (neighbouring slots alike are one rectangle)."""
    return {slot for r in found for slot in range(int(r.get("data-slot", "")),
                                                  int(r.get("data-slot", ""))
                                                  + int(r.get("data-slots", "")))}


def frame(svg: ET.Element) -> dict[str, float]:
    return {key: float(svg.get(f"data-{key}", "")) for key in
            ("origin", "now", "slot", "first", "last", "px", "label")}


def test_plan_draws_a_schedules_fires_in_their_slots(web_daemon: Start) -> None:
    """Every-10-minutes fires fall in the 5-minute slot of each 10-minute mark of the next
    24 h, placed at x = label + (slot - first) * px."""
    web = web_daemon('daemon:\n  http: {listen: LISTEN}\ntasks:\n'
                     '  - {name: ten, schedule: "0 */10 * * * *", command: "true"}\n')
    svg = plan_svg(web)
    f = frame(svg)
    first_mark = math.ceil(f["now"] / 600) * 600
    expected = {math.floor((t - f["origin"]) / f["slot"])
                for t in range(first_mark, int(f["now"]) + 86400, 600)}
    fires = rects(svg, "fire", "ten")
    assert covered(fires) == expected
    assert len(expected) in (143, 144, 145)
    for rect in fires:
        slot = int(rect.get("data-slot", ""))
        assert float(rect.get("x", "")) == f["label"] + (slot - f["first"]) * f["px"]
        assert rect.get("data-count") == "1"


def test_plan_marks_the_busy_slot(web_daemon: Start) -> None:
    """Twelve tasks due at 03:00 make that slot busy; the slots of a lone task are not."""
    daily = "".join(f'  - {{name: d{i}, schedule: "0 0 3 * * *", command: "true"}}\n'
                    for i in range(12))
    web = web_daemon('daemon:\n  http: {listen: LISTEN}\n  timezone: UTC\ntasks:\n'
                     '  - {name: ten, schedule: "0 */10 * * * *", command: "true"}\n' + daily)
    svg = plan_svg(web)
    f = frame(svg)
    three = math.ceil((f["now"] - 3 * 3600) / 86400) * 86400 + 3 * 3600
    assert covered(rects(svg, "busy")) == {math.floor((three - f["origin"]) / f["slot"])}


def test_plan_colours_past_runs_by_outcome(web_daemon: Start) -> None:
    """A task that succeeds draws green runs, one that fails red ones, left of now."""
    web = web_daemon('daemon:\n  http: {listen: LISTEN}\ntasks:\n'
                     '  - {name: good, schedule: "* * * * * *", command: "true"}\n'
                     '  - {name: bad, schedule: "* * * * * *", command: "exit 3"}\n')

    def both_ran() -> bool:
        runs = web.api("history", limit=50)["result"]["runs"]
        return {"ok", "failed"} <= {r["outcome"] for r in runs}

    wait_for(both_ran, timeout=20, message="runs of both tasks")
    svg = plan_svg(web)
    good, bad = rects(svg, "run", "good"), rects(svg, "run", "bad")
    assert good
    assert bad
    assert {(r.get("data-outcome"), r.get("fill")) for r in good} == {("ok", "#2e7d32")}
    assert {(r.get("data-outcome"), r.get("fill")) for r in bad} == {("failed", "#c62828")}
    assert all(int(r.get("data-slot", "")) <= 0 for r in good + bad)


def test_plan_marks_overlaps_from_run_durations(web_daemon: Start) -> None:
    """A 3-second run every 2 seconds overlaps its next fire; a quick one does not."""
    web = web_daemon('daemon:\n  http: {listen: LISTEN}\ntasks:\n'
                     '  - {name: slow, schedule: "*/2 * * * * *", command: "sleep 3"}\n'
                     '  - {name: quick, schedule: "*/2 * * * * *", command: "true"}\n')

    def slow_ended() -> bool:
        runs = web.api("history", task="slow", limit=5)["result"]["runs"]
        return any(r["duration"] is not None for r in runs)

    wait_for(slow_ended, timeout=20, message="a run of slow to end")
    svg = plan_svg(web)
    assert rects(svg, "overlap", "slow")
    assert rects(svg, "fire", "quick")
    assert not rects(svg, "overlap", "quick")
    timeline = web.api("timeline", match="slow")["result"]["tasks"][0]
    # The run's start is stamped just after the spawn, so `sleep 3` can measure a hair
    # under 3 s; what makes the overlap is a run longer than the 2-second period.
    assert 2 < timeline["longest"] < 10
    assert timeline["overlaps"]


def names(svg: ET.Element) -> list[str]:
    return [t.get("data-task", "") for t in svg.iter(f"{SVG}text") if t.get("data-task")]


def test_plan_pages_and_filters_thousands_of_tasks(web_daemon: Start) -> None:
    """3,000 tasks: 50 a page in file order, the last page without a next link, a page
    past the end sent to the last, and a filter by name that ignores case."""
    tasks = "".join(f'  - {{name: t{i:04d}, schedule: "0 {i % 60} * * * *", command: "true"}}\n'
                    for i in range(3000))
    web = web_daemon("daemon:\n  http: {listen: LISTEN}\ntasks:\n" + tasks)
    status, _, body = web.request("/plan")
    assert "Tasks 1 to 50 of 3000" in body.decode()
    assert names(plan_svg(web)) == [f"t{i:04d}" for i in range(50)]
    status, _, body = web.request("/plan?page=60")
    assert status == 200
    assert 'rel="next"' not in body.decode()
    assert names(plan_svg(web, "?page=60")) == [f"t{i:04d}" for i in range(2950, 3000)]
    status, headers, _ = web.request("/plan?page=99")  # past the end: to the last page
    assert status == 303
    assert names(plan_svg(web, headers["Location"].removeprefix("/plan"))) == [
        f"t{i:04d}" for i in range(2950, 3000)]
    status, _, body = web.request("/plan?match=T29")
    assert "Tasks 1 to 50 of 100" in body.decode()
    assert names(plan_svg(web, "?match=T29&page=2")) == [f"t{i}" for i in range(2950, 3000)]


# ----- Hosts (cluster mode) ------------------------------------------------------------
def cluster_text(redis: RedisServer, *, token_file: Path | None = None, extra: str = "") -> str:
    """A task file every host can share: the listener takes any free port (`:0`)."""
    token = f", token_file: {token_file}" if token_file else ""
    return textwrap.dedent(f"""\
        daemon:
          cluster: {{redis: "{redis.url}", name: web, lease_ttl: 3s}}
          http: {{listen: "127.0.0.1:0"{token}}}
        tasks:
          - {{name: hello, schedule: "0 0 0 1 1 *", command: "echo hello from $TORCHD_HOST_ID"}}
        """) + extra


def start_cluster(tmp_path: Path, factory: Factory, texts: list[str],
                  ) -> tuple[list[Daemon], list[WebDaemon], list[Path]]:
    """A daemon per text (hosts h0, h1...), each with a task file of its own; returns
    them with their web clients, once every host's heartbeat tells its HTTP address."""
    files = []
    for index, text in enumerate(texts):
        files.append(tmp_path / f"tasks{index}.yaml")
        files[-1].write_text(text)
    daemons = [factory(path, state=f"host{i}", env={"TORCHD_HOST_ID": f"h{i}"}).start()
               for i, path in enumerate(files)]

    def addresses() -> dict[str, str] | None:
        result = daemons[0].cli("status", "--cluster", "--json")
        hosts = json.loads(result.stdout).get("hosts", []) if result.returncode == 0 else []
        found = {h["host_id"]: h.get("http") for h in hosts}
        return found if len(found) == len(texts) and all(found.values()) else None

    found = wait_for(addresses, timeout=20, interval=0.3, message="every host's address")
    webs = [WebDaemon(d, found[f"h{i}"].rstrip("/")) for i, d in enumerate(daemons)]
    return daemons, webs, files


def host_rows(web: WebDaemon) -> dict[str, str]:
    status, _, body = web.request("/hosts")
    assert status == 200, body
    return {m.group(1): m.group(2) for m in re.finditer(
        r'<tr class="[^"]*" data-host="([^"]+)">(.*?)</tr>', body.decode(), re.DOTALL)}


def test_hosts_lists_every_host_with_its_address(tmp_path: Path, daemon_factory: Factory,
                                                 redis_server: RedisServer) -> None:
    """Three hosts on one file: each host's page lists all three with the address its
    heartbeat advertises (which answers), its version and figures; no drift."""
    text = cluster_text(redis_server)
    _, webs, _ = start_cluster(tmp_path, daemon_factory, [text] * 3)
    rows = host_rows(webs[1])
    assert set(rows) == {"h0", "h1", "h2"}
    for index, web in enumerate(webs):
        row = rows[f"h{index}"]
        assert f'href="{web.url}/" class="address"' in row
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", web.url)
        assert web.request("/healthz", token=None)[0] == 200
        assert "% of" in row
        assert "core" in row
        assert "drift" not in row
    assert 'class="this-host" data-host="h1"' in webs[1].request("/hosts")[2].decode()
    view = webs[0].api("cluster")["result"]
    assert {h["host_id"]: h["http"] for h in view["hosts"]} == {
        f"h{i}": web.url + "/" for i, web in enumerate(webs)}
    assert all(isinstance(h["claims_won"], int) and h["memory_total"] > 0
               for h in view["hosts"])


def test_hosts_flag_the_host_whose_file_changed(tmp_path: Path, daemon_factory: Factory,
                                                redis_server: RedisServer) -> None:
    """After one host's task file changes (and it reloads), the page of another host marks
    that host's config as drift, and only that one."""
    text = cluster_text(redis_server)
    daemons, webs, files = start_cluster(tmp_path, daemon_factory, [text] * 3)
    assert not any("drift" in row for row in host_rows(webs[0]).values())
    files[2].write_text(text + '  - {name: extra, schedule: "0 0 0 1 1 *", command: "true"}\n')
    assert daemons[2].cli("reload").returncode == 0

    def drifted() -> dict[str, str] | None:
        rows = host_rows(webs[0])
        return rows if 'class="config drift"' in rows.get("h2", "") else None

    rows = wait_for(drifted, timeout=15, interval=0.3, message="h2 flagged")
    assert 'class="config drift"' not in rows["h0"] + rows["h1"]
    assert webs[0].api("cluster")["result"]["config_drift"] is True


def shared_token(tmp_path: Path) -> tuple[Path, str]:
    token = secrets.token_hex(20)
    path = tmp_path / "http.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path, token


def trigger(web: WebDaemon, token: str | None = None) -> str:
    kwargs: dict[str, Any] = {} if token is None else {"token": token}
    status, _, body = web.request("/api/v1/trigger", method="POST",
                                  body={"task": "hello", "wait": True}, **kwargs)
    reply = json.loads(body)
    assert status == 200, reply
    assert reply["result"]["outcome"] == "ok", reply
    return str(reply["result"]["run_id"])


def test_another_hosts_run_log_is_fetched_with_a_shared_token(
        tmp_path: Path, daemon_factory: Factory, redis_server: RedisServer) -> None:
    """With daemon.http.token_file on both hosts, h0's dashboard shows h1's runs and the
    output of a run on h1, read from h1's API."""
    path, token = shared_token(tmp_path)
    text = cluster_text(redis_server, token_file=path)
    _, webs, _ = start_cluster(tmp_path, daemon_factory, [text] * 2)
    run_id = trigger(webs[1], token)
    status, _, body = webs[0].request("/hosts/h1/runs", token=token)
    assert status == 200
    assert f"/hosts/h1/runs/{run_id}/log" in body.decode()
    status, _, body = webs[0].request(f"/hosts/h1/runs/{run_id}/log", token=token)
    assert status == 200, body
    assert "hello from h1" in body.decode()
    assert 'class="remote"' not in body.decode()
    status, _, body = webs[0].request("/hosts/h1/runs/nosuchrun/log", token=token)
    assert status == 502
    assert "no run nosuchrun" in body.decode()


def test_another_hosts_run_log_is_linked_without_a_shared_token(
        tmp_path: Path, daemon_factory: Factory, redis_server: RedisServer) -> None:
    """Without a shared token file, h0 sends nothing to h1: the page links to the run's
    log on h1's own dashboard instead."""
    text = cluster_text(redis_server)
    _, webs, _ = start_cluster(tmp_path, daemon_factory, [text] * 2)
    run_id = trigger(webs[1])
    status, _, body = webs[0].request(f"/hosts/h1/runs/{run_id}/log")
    page = body.decode()
    assert status == 200, page
    assert f'href="{webs[1].url}/hosts/h1/runs/{run_id}/log" class="remote"' in page
    assert "hello from h1" not in page
    status, _, body = webs[1].request(f"/hosts/h1/runs/{run_id}/log")  # the link's target
    assert status == 200
    assert "hello from h1" in body.decode()


def test_hosts_page_outside_cluster_mode(web_daemon: Start) -> None:
    """A daemon without daemon.cluster says so on the page."""
    web = web_daemon("daemon:\n  http: {listen: LISTEN}\ntasks: []\n")
    status, _, body = web.request("/hosts")
    assert status == 200
    assert "not in cluster mode" in body.decode()
