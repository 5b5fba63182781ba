"""The dashboard's pages over HTTP, without a browser: every screen answers, what it shows
is escaped, filters and pages work at a few thousand tasks, and the actions' forms work
without JavaScript (and are refused where they must be)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from tests.helpers import wait_for
from tests.webhelpers import WebDaemon

WebStarter = Callable[[str], WebDaemon]
VIEWER = "viewer-token-0123456789abcdef"
TASKS = """\
daemon:
  http: {listen: LISTEN}
tasks:
  - {name: tick, schedule: '0 */5 * * * *', command: [echo, "<script>alert(1)</script>"]}
  - {name: nightly, schedule: '0 30 2 * * MON-FRI', timezone: Europe/Berlin, command: ['true']}
"""


def form(web: WebDaemon, path: str, fields: dict[str, str], *, token: object = None,
         origin: str | None = "same") -> tuple[int, dict[str, str], str]:
    """POST `fields` as a browser's form would (no redirect followed)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if origin is not None:
        headers["Origin"] = web.url if origin == "same" else origin
    status, got, body = _post(web, path, urllib.parse.urlencode(fields), headers, token)
    return status, got, body.decode()


def _post(web: WebDaemon, path: str, data: str, headers: dict[str, str],
          token: object) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    sent = {**headers, "Authorization": f"Bearer {web.token if token is None else token}"}
    request = urllib.request.Request(web.url + path, data=data.encode(), method="POST",  # noqa: S310
                                     headers=sent)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_args: object, **_kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def page(web: WebDaemon, path: str, token: object = None) -> tuple[int, str]:
    status, _, body = web.request(path, token=web.token if token is None else token)
    return status, body.decode()


def test_every_screen_answers_and_escapes_what_it_shows(web_daemon: WebStarter) -> None:
    """Overview, tasks, task, runs and run pages answer 200 and escape task output."""
    web = web_daemon(TASKS)
    run = web.api("trigger", "POST", task="tick", wait=True)["result"]
    assert run["outcome"] == "ok"
    pages = {"/": "Needs attention", "/tasks": "At 02:30, Monday through Friday",
             "/tasks/tick": "Next fires", "/runs": run["run_id"],
             f"/runs/{run['run_id']}": "fire id",
             "/tasks?q=%3Cscript%3Ex": "&lt;script&gt;x"}
    for path, expected in pages.items():
        status, body = page(web, path)
        assert status == 200, path
        assert expected in body, path
        assert "<script>alert" not in body, path
        assert "<script>x" not in body, path
    _, run_page = page(web, f"/runs/{run['run_id']}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run_page  # the output, escaped
    _, task_page = page(web, "/tasks/tick")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in task_page  # the source and the log
    assert "Europe/Berlin" in page(web, "/tasks")[1]


def test_missing_task_and_run_are_404(web_daemon: WebStarter) -> None:
    """A task or run that does not exist is a 404 page saying so."""
    web = web_daemon(TASKS)
    status, body = page(web, "/tasks/nobody")
    assert (status, "no task &#39;nobody&#39;" in body) == (404, True)
    status, body = page(web, "/runs/nosuchrun")
    assert (status, "no run nosuchrun in the history" in body) == (404, True)


def test_no_token_is_401_and_a_login_opens_the_pages(web_daemon: WebStarter) -> None:
    """Without a token every page is 401; /login?token= sets the cookie for them."""
    web = web_daemon(TASKS)
    assert web.request("/tasks", token=None)[0] == 401
    status, headers, _ = _get_no_redirect(web, f"/login?token={web.token}&next=/tasks")
    assert (status, headers["Location"]) == (303, "/tasks")
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    status, _, body = web.request("/tasks", token=None, headers={"Cookie": cookie})
    assert status == 200
    assert b"nightly" in body


def _get_no_redirect(web: WebDaemon, path: str) -> tuple[int, dict[str, str], bytes]:
    import http.client

    host, port = web.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_actions_work_as_plain_forms(web_daemon: WebStarter) -> None:
    """Pause and resume as form posts answer 303 back to the page named, and act."""
    web = web_daemon(TASKS)
    status, headers, _ = form(web, "/act/pause", {"task": "tick", "next": "/tasks?q=ti"})
    assert (status, headers["Location"]) == (303, "/tasks?q=ti")
    assert "tag-paused" in page(web, "/tasks?q=ti")[1]
    assert "Resume" in page(web, "/tasks?q=ti")[1]
    status, headers, _ = form(web, "/act/resume", {"task": "tick", "next": "//evil.example/"})
    assert (status, headers["Location"]) == (303, "/")  # never to another site
    assert "tag-paused" not in page(web, "/tasks?q=ti")[1]
    status, headers, _ = form(web, "/act/trigger", {"task": "tick"})
    assert status == 303
    assert re.fullmatch(r"/runs/\S+", headers["Location"])
    audit = web.api("audit")["result"]["actions"]
    assert [a["action"] for a in audit[:3]] == ["trigger", "resume", "pause"]


def test_actions_are_refused_where_they_must_be(web_daemon: WebStarter, tmp_path: Path,
                                                ) -> None:
    """Another site's Origin is 403, a viewer may not act, an unknown action is 404."""
    viewer = tmp_path / "viewer.token"
    viewer.write_text(VIEWER + "\n")
    viewer.chmod(0o600)
    web = web_daemon(TASKS.replace("{listen: LISTEN}",
                                   f"{{listen: LISTEN, viewer_token_file: {viewer}}}"))
    status, _, body = form(web, "/act/pause", {"task": "tick"}, origin="http://evil.example")
    assert status == 403
    assert "another site" in body
    status, _, body = form(web, "/act/pause", {"task": "tick"},
                           token=VIEWER)
    assert status == 403
    assert "the viewer token may read, not act" in body
    assert "Pause" not in page(web, "/tasks", token=VIEWER)[1]
    assert form(web, "/act/stop", {})[0] == 404
    assert web.api("status")["result"]["tasks"][1]["paused"] is False


def test_read_only_listener_refuses_actions(web_daemon: WebStarter) -> None:
    """With read_only the pages show no action and a posted one is refused."""
    web = web_daemon(TASKS.replace("{listen: LISTEN}", "{listen: LISTEN, read_only: true}"))
    status, _, body = form(web, "/act/trigger", {"task": "tick"})
    assert status == 403
    assert "read-only" in body
    assert "Run now" not in page(web, "/tasks")[1]


def test_filter_and_pages_at_thousands_of_tasks(web_daemon: WebStarter) -> None:
    """3000 tasks: a page holds 50, the filter is applied on the server, pages go on."""
    lines = "\n".join(f"  - {{name: job{i:04d}, schedule: '0 0 0 1 1 *', command: ['true']}}"
                      for i in range(3000))
    web = web_daemon(f"daemon:\n  http: {{listen: LISTEN}}\ntasks:\n{lines}\n")
    status, body = page(web, "/tasks")
    assert status == 200
    assert "3000 of 3000 tasks" in body
    assert "page 1 of 60" in body
    assert body.count('data-task="') == 50
    _, body = page(web, "/tasks?page=2")
    assert 'data-task="job0050"' in body
    assert 'data-task="job0049"' not in body
    _, body = page(web, "/tasks?q=job29")
    assert "100 of 3000 tasks" in body
    assert "page 1 of 2" in body
    _, body = page(web, "/tasks?q=job2999&page=7")  # past the end: the last page
    assert 'data-task="job2999"' in body
    assert "page 1 of 1" in body
    _, body = page(web, "/tasks?state=paused")
    assert "0 of 3000 tasks" in body
    assert "No task matches." in body


def test_runs_filters(web_daemon: WebStarter) -> None:
    """The runs page filters by task, outcome, trigger and time, and says what is wrong
    with a time it cannot read."""
    web = web_daemon(TASKS.replace("command: ['true']", "command: ['false']"))
    good = web.api("trigger", "POST", task="tick", wait=True)["result"]["run_id"]
    bad = web.api("trigger", "POST", task="nightly", wait=True)["result"]["run_id"]
    wait_for(lambda: bad in page(web, "/runs")[1], message="the run in the history")
    _, body = page(web, "/runs?outcome=failed")
    assert bad in body
    assert good not in body
    _, body = page(web, "/runs?task=tick&trigger=manual&since=1h")
    assert good in body
    assert bad not in body
    _, body = page(web, "/runs?until=1h")
    assert good not in body
    assert bad not in body
    status, body = page(web, "/runs?since=yesterdayish")
    assert status == 400
    assert "since: &#39;yesterdayish&#39; is neither" in body


def test_a_task_page_shows_its_workflow_with_last_outcomes(web_daemon: WebStarter) -> None:
    """The task page lists a task's upstreams and downstreams (issue 25) with each one's
    last outcome."""
    web = web_daemon("""\
daemon:
  http: {listen: LISTEN}
tasks:
  - {name: extract, schedule: '@yearly', command: [sh, -c, 'exit 4']}
  - {name: transform, after: extract, command: ['true']}
  - {name: alert, after: {tasks: [extract], on: failure}, command: ['true']}
""")
    assert web.api("trigger", "POST", task="extract", wait=True)["result"]["exit_code"] == 4

    def alert_ran() -> bool:
        runs = web.api("history", task="alert")["result"]["runs"]
        return any(r["outcome"] == "ok" for r in runs)

    wait_for(alert_ran, message="alert to run after extract failed")
    _, body = page(web, "/tasks/extract")
    then = re.findall(r'<tr data-downstream="(\w+)">(.*?)</tr>', body, re.DOTALL)
    assert [name for name, _ in then] == ["alert", "transform"]
    shown = dict(then)
    assert "ok" in shown["alert"]
    assert "never ran" in shown["transform"]
    _, body = page(web, "/tasks/alert")
    upstream = re.search(r'<tr data-upstream="extract">(.*?)</tr>', body, re.DOTALL)
    assert upstream is not None
    assert "failed" in upstream.group(1)
    assert "runs on failure of extract" in body


def test_a_task_without_a_next_fire_says_why(web_daemon: WebStarter) -> None:
    """The tasks page's next-fire column gives the reason `list` gives: daemon, @reboot,
    after upstreams, paused, not for this host; a scheduled task keeps its countdown."""
    web = web_daemon('daemon:\n  http: {listen: LISTEN}\ntasks:\n'
                     '  - {name: tick, schedule: "0 */5 * * * *", command: ["true"]}\n'
                     '  - {name: later, schedule: "0 0 3 * * *", command: ["true"]}\n'
                     '  - {name: keeper, type: daemon, command: [sleep, "600"]}\n'
                     '  - {name: boot, schedule: "@reboot", command: ["true"]}\n'
                     '  - {name: child, after: tick, command: ["true"]}\n'
                     '  - {name: there, schedule: "0 0 4 * * *", hosts: [no-such-host.invalid],'
                     ' command: ["true"]}\n')
    assert web.api("pause", "POST", task="later")["ok"] is True
    _, body = page(web, "/tasks")
    said = dict(re.findall(r'data-task="([^"]+)">.*?<td>(?:<span class="muted" data-idle>'
                           r'([^<]*)</span>|<time)', body, re.S))
    assert said == {"tick": "", "later": "paused", "keeper": "daemon task",
                    "boot": "at start only", "child": "after tick",
                    "there": "not for this host"}
