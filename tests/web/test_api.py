"""The HTTP API against a real daemon: tokens, the session cookie, Origin, read-only and
viewer refusals, every verb with the socket's shapes and codes, the audit of actions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from tests.helpers import Daemon, free_port, torchd_as, user_owned_dir, wait_for
from tests.webhelpers import WebDaemon, start_web_daemon

pytestmark = pytest.mark.e2e

SLOW = """\
daemon:
  http: {listen: LISTEN%s}
tasks:
  - {name: slow, schedule: "0 0 1 1 *", command: ["sleep", "30"]}
  - {name: echo, schedule: "0 0 1 1 *", command: ["echo", "hello"]}
"""


ACTIONS = (("trigger", {"task": "echo"}), ("pause", {"task": "echo"}),
           ("resume", {"all": True}), ("kill", {"task": "slow"}),
           ("submit", {"command": ["true"]}), ("reload", {}), ("stop", {}))


def socket_call(web: WebDaemon, cmd: str, **args: object) -> dict[str, object]:
    from torchd.control import client

    reply: dict[str, object] = client.call(web.daemon.state_dir / "torchd.sock", cmd, **args)
    return reply


def body(raw: bytes) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(raw)
    return parsed


def error_code(raw: bytes) -> str:
    error = body(raw)["error"]
    assert isinstance(error, dict)
    return str(error["code"])


def test_every_request_but_healthz_needs_a_token(web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    assert web.request("/healthz", token=None)[0] == 200
    for path in ("/api/v1/status", "/api/v1", "/", "/metrics", "/static/style.css",
                 "/api/v1/runs/x/log", "/api/v1/runs/x/log/stream", "/%68ealthz/x"):
        status, headers, raw = web.request(path, token=None)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        if path.startswith("/api/"):
            assert error_code(raw) == "forbidden"
    assert web.request("/api/v1/status", token="not-the-token-at-all")[0] == 401
    assert web.request("/api/v1/status")[0] == 200
    token = Path(web.daemon.state_dir / "http.token")
    assert token.stat().st_mode & 0o777 == 0o600


def test_login_sets_a_strict_session_cookie_and_sends_on_to_a_clean_address(
        web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    status, headers, _ = web.request(f"/login?token={web.token}&next=/api/v1/ping",
                                     token=None)
    assert status == 303
    assert headers["Location"] == "/api/v1/ping"
    cookie_header = headers["Set-Cookie"]
    assert "HttpOnly" in cookie_header
    assert "SameSite=Strict" in cookie_header
    assert web.token not in cookie_header  # an HMAC of it, not the token
    cookie = SimpleCookie(cookie_header)
    session = f"torchd_session={cookie['torchd_session'].value}"
    status, _, raw = web.request("/api/v1/ping", token=None, headers={"Cookie": session})
    assert status == 200
    assert body(raw)["ok"] is True
    # never a redirect to another site
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example",
                   "/%09/evil.example", "/%0a/evil.example", "/%2F/evil.example",
                   "%2F%2Fevil.example"):
        status, headers, _ = web.request(f"/login?token={web.token}&next={target}",
                                         token=None)
        assert (status, headers["Location"]) == (303, "/")
    assert web.request("/login?token=wrong-token-wrong-token", token=None)[0] == 401
    assert web.request("/api/v1/ping", token=None,
                       headers={"Cookie": "torchd_session=admin.00"})[0] == 401
    status, headers, _ = web.request("/logout", method="POST", token=None,
                                     headers={"Cookie": session, "Origin": web.url})
    assert status == 200
    assert 'torchd_session=""' in headers["Set-Cookie"]
    assert web.request("/api/v1/ping", token=None, headers={"Cookie": session})[0] == 401


def test_a_post_from_another_site_is_refused(web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    _, headers, _ = web.request(f"/login?token={web.token}", token=None)
    session = "torchd_session=" + SimpleCookie(headers["Set-Cookie"])["torchd_session"].value
    own = web.url
    cases = [
        ({"Cookie": session}, 403),  # a cookie without an Origin
        ({"Cookie": session, "Origin": "http://evil.example"}, 403),
        ({"Cookie": session, "Origin": "null"}, 403),
        ({"Cookie": session, "Origin": own}, 200),
    ]
    for headers_sent, expected in cases:
        status, _, raw = web.request("/api/v1/pause", method="POST", body={"task": "echo"},
                                     token=None, headers=headers_sent)
        assert status == expected, (headers_sent, raw)
        if expected == 403:
            assert error_code(raw) == "forbidden"
    # a Bearer client (curl, scripts) sends no Origin
    assert web.request("/api/v1/resume", method="POST", body={"task": "echo"})[0] == 200
    assert web.request("/api/v1/resume", method="POST", body={"task": "echo"},
                       headers={"Origin": "http://evil.example"})[0] == 403


def test_verbs_over_http_give_the_sockets_replies(web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    triggered = web.api("trigger", "POST", task="echo", wait=True)
    assert triggered["ok"] is True
    assert triggered["result"]["outcome"] == "ok"
    for verb, args in (("ping", {}), ("history", {"task": "echo"}),
                       ("run", {"run_id": triggered["result"]["run_id"]})):
        assert web.api(verb, **args)["result"] == socket_call(web, verb, **args), verb
    status = web.api("status")["result"]
    assert [t["name"] for t in status["tasks"]] == ["echo", "slow"]
    listed = web.api("list", "POST")["result"]  # a read verb may be a POST too
    assert {row["name"] for row in listed["tasks"]} == {"echo", "slow"}
    described = body(web.request("/api/v1")[2])  # the verbs, from their definitions
    assert described["ok"] is True
    result = described["result"]
    assert isinstance(result, dict)
    verbs = {v["verb"]: v for v in result["verbs"]}
    assert verbs["trigger"]["action"] is True
    assert verbs["history"]["action"] is False
    assert {a["name"] for a in verbs["logs"]["arguments"]} >= {"task", "run", "lines"}


def test_errors_have_the_sockets_codes(web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    cases = [
        ("GET", "/api/v1/nope", None, 404, "bad-request"),
        ("GET", "/api/v1/history?limit=many", None, 400, "bad-argument"),
        ("GET", "/api/v1/history?bogus=1", None, 400, "bad-argument"),
        ("GET", "/api/v1/history?limit=-1", None, 400, "bad-argument"),
        ("GET", "/api/v1/trigger?task=echo", None, 405, "bad-request"),
        ("POST", "/api/v1/trigger", {"task": "nope"}, 400, "bad-argument"),
        ("POST", "/api/v1/trigger", {}, 400, "bad-argument"),
        ("POST", "/api/v1/trigger", ["echo"], 400, "bad-request"),
        ("GET", "/api/v1/run?run_id=000000000000", None, 400, "bad-argument"),
    ]
    for method, path, sent, expected, code in cases:
        status, _, raw = web.request(path, method=method, body=sent)
        assert (status, error_code(raw)) == (expected, code), (method, path, raw)
    status, _, raw = web.request("/api/v1/trigger", method="POST", body=None,
                                 headers={"Content-Type": "application/json"})
    assert status == 400  # no body: task is required
    assert web.request("/api/v1/status", method="PUT")[0] == 405
    assert web.request("/api/v1/status", method="DELETE")[0] == 405
    socket_error = socket_call_error(web)
    _, _, raw = web.request("/api/v1/trigger", method="POST", body={"task": "nope"})
    assert body(raw)["error"] == socket_error


def socket_call_error(web: WebDaemon) -> object:
    from torchd.control import client

    try:
        client.call(web.daemon.state_dir / "torchd.sock", "trigger", task="nope")
    except client.ControlError as exc:
        return {"code": exc.code, "message": str(exc)}
    raise AssertionError("the socket accepted a trigger of an unknown task")


def test_every_action_is_audited_whatever_the_transport(
        web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    assert web.api("trigger", "POST", task="echo")["ok"] is True
    assert web.daemon.cli("pause", "slow").returncode == 0
    assert web.api("kill", "POST", task="nope")["ok"] is False
    actions = web.api("audit")["result"]["actions"]
    assert [(a["transport"], a["action"], a["target"]) for a in actions] == [
        ("http", "kill", "nope"), ("http", "kill", "nope"), ("socket", "pause", "slow"),
        ("http", "trigger", "echo")]
    kill, kill_accepted, pause, trigger = actions
    assert kill_accepted["result"] == "accepted"  # a kill waits: recorded before it does
    assert kill["result"].startswith("bad-argument: ")
    assert kill["peer"] == "admin@127.0.0.1"
    assert pause["peer"] == f"uid={os.geteuid()}"
    assert pause["result"] == "ok: changed slow"
    assert trigger["result"].startswith("ok: started (run ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", trigger["at"])
    printed = web.daemon.cli("audit")
    assert printed.returncode == 0
    assert "pause" in printed.stdout
    assert "uid=" in printed.stdout
    # reads are not actions
    web.api("status")
    assert len(web.api("audit")["result"]["actions"]) == 4
    # a submission is recorded with its command, whatever name it is given
    assert web.api("submit", "POST", name="harmless", command=["sh", "-c", "id"])["ok"]
    assert web.api("audit", limit=1)["result"]["actions"][0]["target"] == "harmless: sh -c id"


def test_a_read_only_listener_refuses_every_action(
        web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % ", read_only: true")
    for verb, args in ACTIONS:
        status, _, raw = web.request(f"/api/v1/{verb}", method="POST", body=args)
        assert (status, error_code(raw)) == (403, "forbidden"), verb
        assert "read-only" in str(body(raw)["error"])
    assert web.api("status")["ok"] is True
    assert web.daemon.proc is not None
    assert web.daemon.proc.poll() is None  # the stop was refused
    refused = web.api("audit", limit=10)["result"]["actions"]
    assert len(refused) == 7
    assert all(a["result"].startswith("forbidden: ") for a in refused)


def test_a_viewer_token_reads_and_cannot_act(tmp_path: Path,
                                             web_daemon: Callable[..., WebDaemon]) -> None:
    viewer = tmp_path / "viewer.token"
    viewer.write_text("viewer-token-0123456789abcdef\n")
    viewer.chmod(0o600)
    web = web_daemon(SLOW % f", viewer_token_file: {viewer}")
    token = "viewer-token-0123456789abcdef"
    status, _, raw = web.request("/api/v1/status", token=token)
    assert status == 200
    for verb, args in ACTIONS:
        status, _, raw = web.request(f"/api/v1/{verb}", method="POST", body=args,
                                     token=token)
        assert (status, error_code(raw)) == (403, "forbidden"), verb
        assert "viewer" in str(body(raw)["error"])
    assert web.daemon.proc is not None
    assert web.daemon.proc.poll() is None  # the stop was refused
    entries = web.api("audit")["result"]["actions"]
    assert [e["action"] for e in entries] == [verb for verb, _ in reversed(ACTIONS)]
    assert {e["peer"] for e in entries} == {"viewer@127.0.0.1"}
    assert all(e["result"].startswith("forbidden") for e in entries)


def with_token_file(tmp_path: Path, write_tasks: Callable[..., Path], *, mode: int,
                    relative: bool) -> tuple[Path, int, Path]:
    """A token file `shared.token` of `mode` and a task file on a free port that names it
    (relative: against the task file's directory)."""
    token = tmp_path / "shared.token"
    token.write_text("a-shared-token-0123456789\n")
    token.chmod(mode)
    port = free_port()
    named = token.name if relative else str(token)
    config = write_tasks(SLOW.replace("LISTEN", f"127.0.0.1:{port}") % (
        f", token_file: {named}"))
    return token, port, config


def test_an_unsafe_token_file_keeps_the_listener_off_and_the_daemon_running(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    token, port, config = with_token_file(tmp_path, write_tasks, mode=0o644,
                                          relative=True)
    daemon = daemon_factory(config).start()

    def problems() -> list[str]:
        status = json.loads(daemon.cli("status", "--json").stdout)
        return [p["message"] for p in status["problems"] if p["key"] == "http"]

    found = wait_for(problems, message="the http problem in status")
    assert "mode 0644" in found[0]
    assert str(token) in found[0]
    token.chmod(0o600)
    assert daemon.cli("reload").returncode == 0
    web = WebDaemon(daemon, f"http://127.0.0.1:{port}")
    wait_for(lambda: not problems(), message="the listener to start after the fix")
    assert web.request("/api/v1/ping", token="a-shared-token-0123456789")[0] == 200


def test_a_reload_moves_the_listener(tmp_path: Path, web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    new_port = free_port()
    old = web.daemon.config.read_text()
    new = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{new_port}", old)
    web.daemon.config.write_text(new)
    assert web.daemon.cli("reload").returncode == 0
    moved = WebDaemon(web.daemon, f"http://127.0.0.1:{new_port}")
    assert moved.request("/api/v1/ping")[0] == 200
    with pytest.raises(urllib.error.URLError, match="refused"):  # the old port is closed
        web.request("/healthz", token=None)


def test_a_listener_on_every_address_is_warned_about(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    port = free_port()
    config = write_tasks(SLOW.replace("LISTEN", f"0.0.0.0:{port}") % "")
    web = start_web_daemon(daemon_factory(config), port)
    wait_for(lambda: "not a loopback address, without TLS" in web.daemon.stderr(),
             message="the warning")
    assert "reverse proxy" in web.daemon.stderr()


def test_torchd_web_prints_an_address_that_logs_in(
        web_daemon: Callable[..., WebDaemon]) -> None:
    web = web_daemon(SLOW % "")
    printed = web.daemon.cli("web")
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith(f"{web.url}/login?token=")
    status, headers, _ = web.request(url.removeprefix(web.url), token=None)
    assert status == 303
    assert "torchd_session=" in headers["Set-Cookie"]


def test_torchd_web_without_a_listener_says_how_to_add_one(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    config = write_tasks("tasks:\n  - {name: a, schedule: '@daily', command: [echo]}\n")
    daemon = daemon_factory(config).start()
    printed = daemon.cli("web")
    assert printed.returncode == 1
    assert "http: {listen:" in printed.stderr


@contextmanager
def nobody_web_daemon() -> Iterator[tuple[Path, WebDaemon]]:
    """A daemon with a listener, run as `nobody` from a home of its own: (home, daemon)."""
    with user_owned_dir("nobody") as home:
        port = free_port()
        config = home / "tasks.yaml"
        config.write_text(SLOW.replace("LISTEN", f"127.0.0.1:{port}") % "")
        daemon = Daemon(config=config, state_dir=home / "state", cmd=torchd_as("nobody"))
        try:
            yield home, start_web_daemon(daemon, port)
        finally:
            daemon.kill_everything()


def torchd_web_as_root(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torchd", "web", "--state-dir", str(state_dir)],
                          capture_output=True, text=True, check=False)


def test_a_daemon_of_its_own_user_makes_a_private_token_that_root_can_print() -> None:
    with nobody_web_daemon() as (home, web):
        info = (home / "state" / "http.token").stat()
        assert info.st_mode & 0o777 == 0o600
        assert info.st_uid != 0
        printed = torchd_web_as_root(home / "state")
        assert printed.returncode == 0, printed.stderr
        assert web.token in printed.stdout


def test_half_sent_requests_cannot_starve_the_scheduler(
        web_daemon: Callable[..., WebDaemon]) -> None:
    """1,000 connections that never finish their headers: the listener holds at most its
    cap of them, and the daemon keeps firing and answering its socket."""
    import socket as sockets

    web = web_daemon(SLOW.replace("0 0 1 1 *", "* * * * * *", 1) % "")
    port = int(web.url.rsplit(":", 1)[1])
    held = []
    before = len(os.listdir(f"/proc/{web.daemon.pid}/fd"))
    try:
        for _ in range(1000):
            conn = sockets.create_connection(("127.0.0.1", port), timeout=5)
            conn.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")  # never ended
            held.append(conn)

        def held_by_daemon() -> int:
            return len(os.listdir(f"/proc/{web.daemon.pid}/fd")) - before

        # The cap of 512, give or take runs; those over it are closed as the loop gets to
        # them (on a loaded machine a moment after they were accepted).
        wait_for(lambda: 400 < held_by_daemon() < 600, message="the daemon to hold the cap")


        def fired_meanwhile() -> bool:
            runs = socket_call(web, "history", task="slow", limit=5)["runs"]
            return isinstance(runs, list) and len(runs) >= 2

        wait_for(fired_meanwhile, message="fires while the listener is full")
        assert "the most there may be" in web.daemon.stderr()
    finally:
        for conn in held:
            conn.close()

    def answers() -> bool:
        try:
            return web.request("/healthz", token=None)[0] == 200
        except OSError:  # reset while the held connections are being closed
            return False

    wait_for(answers, message="the listener to answer again")


def test_torchd_web_never_reads_a_path_the_daemon_names(tmp_path: Path) -> None:
    """A daemon of its own user cannot make root's `torchd web` read and print another
    file: a symlink planted as its http.token is refused, and a token file named only by
    the daemon's reply is not read without the task file."""
    secret = tmp_path / "root-only"
    secret.write_text("ROOT-ONLY-SECRET-first-line-123456\n")
    secret.chmod(0o600)
    with nobody_web_daemon() as (home, _):
        token = home / "state" / "http.token"
        token.unlink()
        token.symlink_to(secret)
        os.lchown(token, *(home.stat().st_uid, home.stat().st_gid))
        printed = torchd_web_as_root(home / "state")
        assert printed.returncode == 1
        assert "symlink" in printed.stderr
        assert "ROOT-ONLY" not in printed.stdout + printed.stderr


def test_torchd_web_reads_a_token_file_the_task_file_names(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    _, port, config = with_token_file(tmp_path, write_tasks, mode=0o600, relative=False)
    web = start_web_daemon(daemon_factory(config), port)
    without = web.daemon.cli("web")
    assert without.returncode == 1
    assert "torchd web -c TASKFILE" in without.stderr
    printed = web.daemon.cli("web", "-c", str(config))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == f"{web.url}/login?token=a-shared-token-0123456789"
