"""The dashboard end to end in a real browser: Playwright driving Debian's chromium
(headless) against the real daemon. One browser for the module, a fresh context (no
cookies) per test. With TORCHD_SCREENSHOTS=1 the screenshots go to docs/screenshots/
(the README shows them); otherwise to the test's tmp dir."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import unavailable
from tests.webhelpers import WebDaemon

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

WebStarter = Callable[[str], WebDaemon]
CHROMIUM = "/usr/bin/chromium"  # Debian's package; scripts/test installs it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT = 15_000  # ms: Playwright's deadline for what the page should come to show
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWER = "viewer-token-0123456789abcdef"
TASKS = """\
daemon:
  http: {listen: LISTEN}
tasks:
  - name: backup
    schedule: '0 30 2 * * *'
    timezone: Europe/Berlin
    command: [sh, -c, 'for i in 1 2 3 4; do echo "copied part $i"; sleep 0.7; done']
  - {name: report, schedule: '0 */15 * * * MON-FRI', command: [echo, report done]}
  - {name: sync, schedule: '*/30 * * * * *', command: ['true']}
  - {name: long, schedule: '@daily', command: [sleep, '300'], kill_grace: 2}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless chromium; Playwright gives each launch a fresh user data dir."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1280, "height": 860})
    made.set_default_timeout(WAIT)
    yield made
    made.close()


@pytest.fixture
def shoot(tmp_path: Path) -> Callable[[Page, str], None]:
    folder = DOCS_SHOTS if os.environ.get("TORCHD_SCREENSHOTS") == "1" else tmp_path

    def take(page: Page, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return take


def open_dashboard(context: BrowserContext, web: WebDaemon, path: str = "/",
                   token: str | None = None) -> Page:
    """A page logged in through the token URL `torchd web` prints."""
    page = context.new_page()
    response = page.goto(f"{web.url}/login?token={token or web.token}&next={path}")
    assert response is not None
    assert response.status == 200
    return page


def test_tasks_run_now_live_log_pause_and_resume(
        web_daemon: WebStarter, context: BrowserContext,
        shoot: Callable[[Page, str], None]) -> None:
    """Through the token URL: the tasks show; Run now opens the run, whose output arrives
    live; Pause and Resume change the task's state in place."""
    from playwright.sync_api import expect

    web = web_daemon(TASKS)
    web.api("trigger", "POST", task="report", wait=True)
    page = open_dashboard(context, web, "/tasks")
    rows = page.locator("tr[data-task]")
    expect(rows).to_have_count(4)
    expect(page.locator("tr[data-task=backup]")).to_contain_text("At 02:30")
    expect(page.locator("tr[data-task=backup]")).to_contain_text("Europe/Berlin")
    page.locator("tr[data-task=backup]").get_by_role("button", name="Run now").click()
    page.wait_for_url(f"{web.url}/runs/*")
    log = page.locator("pre#log")
    expect(log).to_contain_text("copied part 1")
    shoot(page, "run")
    expect(log).to_contain_text("copied part 4")
    expect(log).to_have_attribute("data-ended", "ok")  # the stream's end event came
    expect(page.locator("#outcome")).to_have_text("ok")

    page.goto(f"{web.url}/tasks")
    row = page.locator("tr[data-task=sync]")
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".state")).to_contain_text("paused")
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    assert web.api("task", task="sync")["result"]["task"]["paused"] is True
    shoot(page, "tasks")
    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".state")).to_contain_text("active")
    assert web.api("task", task="sync")["result"]["task"]["paused"] is False

    page.goto(f"{web.url}/tasks/backup")
    expect(page.locator("svg.chart rect")).to_have_count(1)
    expect(page.locator("pre.yaml")).to_contain_text("copied part")
    shoot(page, "task")


def test_kill_a_long_run(web_daemon: WebStarter, context: BrowserContext,
                         shoot: Callable[[Page, str], None]) -> None:
    """A long run shows on the overview as running; Kill on its page ends it."""
    from playwright.sync_api import expect

    web = web_daemon(TASKS)
    for task in ("report", "sync", "backup"):
        web.api("trigger", "POST", task=task, wait=True)
    run_id = web.api("trigger", "POST", task="long")["result"]["run_id"]
    page = open_dashboard(context, web, "/")
    expect(page.locator("tr[data-row]", has_text="long")).to_contain_text(run_id)
    shoot(page, "overview")
    page.locator("tr[data-row]", has_text="long").get_by_role("link", name=run_id).click()
    page.wait_for_url(f"{web.url}/runs/{run_id}")
    expect(page.locator("#outcome")).to_have_text("running")
    page.get_by_role("button", name="Kill").click()
    expect(page.locator("#outcome")).to_have_text("killed")
    expect(page.locator("#result")).to_contain_text("signal 15")
    page.goto(f"{web.url}/")
    expect(page.locator("section", has_text="Running now")).to_contain_text("Nothing runs.")
    expect(page.locator("table.feed")).to_contain_text("kill")


def test_the_daily_plan_opens(web_daemon: WebStarter, context: BrowserContext,
                              shoot: Callable[[Page, str], None]) -> None:
    """The nav's Daily plan link opens the plan: every task has its row in the picture,
    and the per-30-seconds task's fires are drawn."""
    from playwright.sync_api import expect

    web = web_daemon(TASKS)
    page = open_dashboard(context, web, "/")
    page.get_by_role("link", name="Daily plan").click()
    page.wait_for_url(f"{web.url}/plan*")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Daily plan")
    svg = page.locator("svg").first
    for name in ("backup", "report", "sync", "long"):
        expect(svg.locator(f'text[data-task="{name}"]')).to_have_count(1)
    expect(svg.locator('rect.fire[data-task="sync"]').first).to_be_attached()
    shoot(page, "plan")


def test_no_token_and_another_site_are_refused(web_daemon: WebStarter,
                                               context: BrowserContext) -> None:
    """Without a token the dashboard is 401; a POST with another site's Origin is 403,
    even with the session cookie."""
    web = web_daemon(TASKS)
    page = context.new_page()
    response = page.goto(f"{web.url}/tasks")
    assert response is not None
    assert response.status == 401
    assert page.goto(f"{web.url}/login?token=wrong") is not None
    open_dashboard(context, web, "/tasks")
    refused = context.request.post(f"{web.url}/act/pause", form={"task": "sync"},
                                   headers={"Origin": "http://evil.example"},
                                   max_redirects=0)
    assert refused.status == 403
    assert web.api("task", task="sync")["result"]["task"]["paused"] is False


def test_read_only_and_viewer_cannot_act(web_daemon: WebStarter, context: BrowserContext,
                                         tmp_path: Path) -> None:
    """A viewer token, and any token on a read-only listener, see no action buttons, and
    an action posted anyway is refused."""
    from playwright.sync_api import expect

    viewer = tmp_path / "viewer.token"
    viewer.write_text(VIEWER + "\n")
    viewer.chmod(0o600)
    for setting, token in ((f"viewer_token_file: {viewer}", VIEWER), ("read_only: true", None)):
        web = web_daemon(TASKS.replace("{listen: LISTEN}", f"{{listen: LISTEN, {setting}}}"))
        context.clear_cookies()
        page = open_dashboard(context, web, "/tasks", token)
        expect(page.locator("tr[data-task]")).to_have_count(4)
        expect(page.locator("header .who")).to_contain_text("read-only")
        expect(page.get_by_role("button", name="Pause")).to_have_count(0)
        refused = context.request.post(f"{web.url}/act/pause", form={"task": "sync"},
                                       headers={"Origin": web.url}, max_redirects=0)
        assert refused.status == 403, setting
        assert web.api("task", task="sync")["result"]["task"]["paused"] is False
        web.daemon.kill_everything()
