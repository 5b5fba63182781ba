"""HTTP tasks with the real daemon against a local aiohttp server: outcomes, kill,
retries, overlap, secrets kept out of what torchd keeps, and command fires beside many
requests."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.e2e.test_operations import as_json, ended_runs, history, ok
from tests.helpers import Daemon, fire_ids, free_port, record_cmd, wait_for
from tests.httpserver import LocalServer, local_server

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]
SECRET = "s3cret-Token-4242"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as running:
        yield running


@pytest.fixture
def start(write_tasks: Callable[..., Path], daemon_factory: Factory,
          server: LocalServer) -> Callable[..., Daemon]:
    """A daemon running `tasks` (YAML list items; SERVER stands for the server's address)."""

    def make(tasks: str, env: dict[str, str] | None = None) -> Daemon:
        text = "tasks:\n" + tasks.replace("SERVER", f"http://127.0.0.1:{server.port}")
        return daemon_factory(write_tasks(text), env=env).start()

    return make


def trigger(daemon: Daemon, task: str) -> dict[str, Any]:
    result = daemon.cli("trigger", task, "--wait", "--json")
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def last_run(daemon: Daemon, task: str) -> dict[str, Any]:
    return history(daemon, task, "-n", "1")[0]


def test_an_answer_in_range_is_ok_and_logs_shows_the_exchange(
        start: Callable[..., Daemon], server: LocalServer) -> None:
    daemon = start("  - {name: ping, schedule: '@yearly', http: SERVER/ok}\n")
    result = trigger(daemon, "ping")
    assert (result["outcome"], result["exit_code"]) == ("ok", None)
    assert daemon.cli("trigger", "ping", "--wait").returncode == 0
    run = last_run(daemon, "ping")
    assert (run["outcome"], run["pid"], run["reason"]) == ("ok", None, None)
    shown = ok(daemon.cli("logs", "ping", "--run", run["run_id"])).splitlines()
    assert f"start run={run['run_id']} " in shown[0]
    assert " http config=" in shown[0]
    assert shown[1] == f"> GET {server.url('/ok')}"
    assert shown[2] == "< HTTP/1.1 200 OK"
    assert "< X-Test: yes" in shown
    assert shown[-2] == "all good"
    assert f"end run={run['run_id']} status=200 " in shown[-1]
    assert shown[-1].endswith("outcome=ok")
    assert server.count("/ok") == 2


@pytest.mark.parametrize(("http", "reason"), [
    pytest.param("SERVER/status/500", "status 500 is not in expect_status (200-299)",
                 id="status"),
    pytest.param("{url: SERVER/status/404, expect_status: [200, 404-404]}", None,
                 id="status-expected"),
    pytest.param("{url: SERVER/ok, expect_body: 'all (bad|wrong)'}",
                 "the body does not match expect_body", id="body-mismatch"),
    pytest.param("{url: SERVER/ok, expect_body: '^all go+d$'}", None, id="body-match"),
])
def test_status_and_body_decide_the_outcome(start: Callable[..., Daemon], http: str,
                                            reason: str | None) -> None:
    daemon = start(f"  - {{name: check, schedule: '@yearly', http: {http}}}\n")
    result = trigger(daemon, "check")
    assert result["outcome"] == ("ok" if reason is None else "failed")
    assert result.get("error") == reason
    assert last_run(daemon, "check")["reason"] == reason


def test_a_refused_connection_fails_with_its_reason(start: Callable[..., Daemon]) -> None:
    daemon = start(f"  - {{name: nobody, schedule: '@yearly', "
                   f"http: 'http://127.0.0.1:{free_port()}/'}}\n")
    result = trigger(daemon, "nobody")
    assert result["outcome"] == "failed"
    assert result["error"].startswith("connection error: Cannot connect to host 127.0.0.1:")
    assert daemon.cli("trigger", "nobody", "--wait").returncode == 1


def test_no_answer_within_the_timeout_is_a_timeout(start: Callable[..., Daemon],
                                                   server: LocalServer) -> None:
    daemon = start("  - {name: stuck, schedule: '@yearly', "
                   "http: {url: SERVER/hang, timeout: 1s}}\n")
    result = trigger(daemon, "stuck")
    assert (result["outcome"], result["error"]) == ("timeout", "no response within 1s")
    wait_for(lambda: server.hanging == 0, message="the server to see the request dropped")
    log = (daemon.log_dir / "stuck.log").read_text()
    assert "! no response within 1s\n" in log
    assert "no-response" in log.splitlines()[-1]


def test_kill_cancels_a_hanging_request(start: Callable[..., Daemon],
                                        server: LocalServer) -> None:
    daemon = start("  - {name: stuck, schedule: '@yearly', "
                   "http: {url: SERVER/hang, timeout: 1h}}\n")
    ok(daemon.cli("trigger", "stuck"))
    wait_for(lambda: server.hanging == 1, message="the request at the server")
    killed = as_json(daemon, "kill", "stuck")["runs"]
    assert [(r["pid"], r["ended"], r["outcome"]) for r in killed] == [(None, True, "killed")]
    wait_for(lambda: server.hanging == 0, message="the server to see the request dropped")
    assert ended_runs(daemon, "stuck", 1)[0]["outcome"] == "killed"


def test_a_stop_ends_a_request_in_flight(start: Callable[..., Daemon],
                                        server: LocalServer) -> None:
    """The daemon's stop cancels a hanging request at once (no grace to wait out) and
    records it killed."""
    daemon = start("  - {name: stuck, schedule: '@yearly', "
                   "http: {url: SERVER/hang, timeout: 1h}}\n")
    ok(daemon.cli("trigger", "stuck"))
    wait_for(lambda: server.hanging == 1, message="the request at the server")
    ok(daemon.cli("stop"))
    assert daemon.wait_exit(timeout=15) == 0
    assert [r["outcome"] for r in history(daemon, "stuck")] == ["killed"]
    assert "stopped (1 run(s) were ended)" in daemon.stderr()


def test_failed_attempts_are_retried_until_one_succeeds(start: Callable[..., Daemon],
                                                        server: LocalServer) -> None:
    daemon = start("  - {name: flaky, schedule: '@yearly', http: SERVER/flaky/2, "
                   "retries: {max: 3, delay: 0.2, backoff: 1}}\n")
    ok(daemon.cli("trigger", "flaky"))
    runs = ended_runs(daemon, "flaky", 3)
    assert [(r["attempt"], r["outcome"]) for r in reversed(runs)] == [
        (1, "failed"), (2, "failed"), (3, "ok")]
    assert runs[-1]["reason"] == "status 503 is not in expect_status (200-299)"
    assert server.count("/flaky/2") == 3


def test_a_request_still_going_makes_the_next_fire_skip(start: Callable[..., Daemon],
                                                        server: LocalServer) -> None:
    daemon = start("  - {name: slow, schedule: '* * * * * *', "
                   "http: {url: SERVER/hang, timeout: 1h}}\n")
    skipped = wait_for(lambda: [r for r in history(daemon, "slow", "-n", "50")
                                if r["outcome"] == "skipped"], timeout=15,
                       message="a skipped fire")
    assert skipped[0]["reason"] == "1 run(s) still running (max_running=1)"
    assert server.count("/hang") == 1


def test_a_secret_from_the_environment_is_sent_but_never_kept(
        start: Callable[..., Daemon], server: LocalServer) -> None:
    """The server gets the value; the task log, the history and the daemon's log show the
    template, and what the server sends back of it is masked."""
    daemon = start("  - name: secret\n"
                   "    schedule: '@yearly'\n"
                   "    env: {WHERE: echo}\n"
                   "    http:\n"
                   "      url: SERVER/${WHERE}?key=${API_TOKEN}\n"
                   "      headers: {Authorization: 'Bearer ${API_TOKEN}'}\n"
                   "      expect_status: [201]\n",
                   env={"API_TOKEN": SECRET})
    result = trigger(daemon, "secret")
    assert (result["outcome"], result["error"]) == (
        "failed", "status 200 is not in expect_status (201)")
    assert server.seen[-1]["Authorization"] == f"Bearer {SECRET}"
    log = ok(daemon.cli("logs", "secret"))
    assert f"> GET {server.url('/${WHERE}?key=${API_TOKEN}')}" in log
    assert "< X-Echo: Bearer ***" in log
    assert "you sent Bearer *** for key=***" in log
    everything = [log, (daemon.log_dir / "secret.log").read_text(), daemon.stderr(),
                  ok(daemon.cli("history", "secret", "--json"))]
    assert [SECRET in text for text in everything] == [False] * len(everything)


def test_an_unset_name_sends_nothing(start: Callable[..., Daemon],
                                     server: LocalServer) -> None:
    daemon = start("  - {name: unset, schedule: '@yearly', http: 'SERVER/ok?t=${NOT_SET}'}\n")
    answer = daemon.cli("trigger", "unset", "--json")
    assert answer.returncode == 1
    assert json.loads(answer.stdout)["status"] == (
        "start-error: url: ${NOT_SET} not set (neither in the task's env nor in the daemon's "
        "environment)")
    assert last_run(daemon, "unset")["outcome"] == "start-error"
    assert server.count("/ok") == 0


def test_a_long_body_is_cut_at_max_log_bytes(start: Callable[..., Daemon]) -> None:
    daemon = start("  - {name: big, schedule: '@yearly', "
                   "http: {url: SERVER/big/5000, max_log_bytes: 1000}}\n")
    assert trigger(daemon, "big")["outcome"] == "ok"
    shown = ok(daemon.cli("logs", "big")).splitlines()
    assert shown[-3:-1] == ["x" * 1000, "[... 4000 more bytes not kept]"]


def test_command_fires_go_on_beside_many_requests(start: Callable[..., Daemon],
                                                  server: LocalServer,
                                                  tmp_path: Path) -> None:
    """300 HTTP tasks every second beside a command every second: the command misses no
    fire and the requests are all answered. (`max_running: 0`: a request or command that
    a loaded machine makes last over a second must not turn the next fire into a skip.)"""
    out = tmp_path / "ticks"
    tasks = "".join(f"  - {{name: h{i}, schedule: '* * * * * *', max_running: 0, "
                    "http: SERVER/ok}\n" for i in range(300))
    daemon = start(tasks + f"  - {{name: tick, schedule: '* * * * * *', max_running: 0, "
                           f"command: '{record_cmd(out)}'}}\n")
    wait_for(lambda: len(fire_ids(out)) >= 6, timeout=30, message="six ticks")
    ticks = history(daemon, "tick", "-n", "100")
    assert [r for r in ticks if r["outcome"] not in ("ok", None)] == []
    seconds = sorted(int(line.split("@")[1][17:19]) for line in fire_ids(out))
    assert len(seconds) == len(set(seconds))
    assert "missed" not in daemon.stderr()
    wait_for(lambda: server.count("/ok") >= 300 * 5, timeout=30, message="5 s of requests")
    failed = [r for r in history(daemon, "-n", "2000") if r["outcome"] not in ("ok", None)]
    assert failed == []


def test_tls_is_verified_against_the_hosts_trust_store(
        write_tasks: Callable[..., Path], daemon_factory: Factory, tmp_path: Path) -> None:
    """A certificate from a CA the host does not trust: the run fails with a `TLS:` reason
    and no request reaches the server; `tls_verify: false` goes through; with the CA added
    to the daemon's trust store (SSL_CERT_FILE, as an operator would) the same task is ok."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with local_server(context) as server:
        tasks = write_tasks(
            "tasks:\n"
            f"  - {{name: strict, schedule: '@yearly', http: {server.url('/ok')}}}\n"
            f"  - {{name: lax, schedule: '@yearly', http: {{url: {server.url('/status/200')},"
            " tls_verify: false}}\n")
        daemon = daemon_factory(tasks).start()
        assert trigger(daemon, "strict")["outcome"] == "failed"
        reason = last_run(daemon, "strict")["reason"]
        assert reason.startswith("TLS: ")
        assert "CERTIFICATE_VERIFY_FAILED" in reason
        assert server.count("/ok") == 0
        assert trigger(daemon, "lax")["outcome"] == "ok"
        assert server.count("/status/200") == 1
        trusting = daemon_factory(tasks, state="trusting",
                                  env={"SSL_CERT_FILE": str(ca_file)}).start()
        assert trigger(trusting, "strict")["outcome"] == "ok"
        assert server.count("/ok") == 1
