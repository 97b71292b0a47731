"""The operators' dashboard in a real headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright): an
operator signs in with a token, watches machines turn ready live, runs a command from the page and sees its output
stream in and its result stored, and sees a plan drawn as a graph; a viewer reads the same pages but cannot run
anything (the form is disabled and the hub answers 403 anyway). The page and its files are served with a strict
Content-Security-Policy, and nothing on the page breaks it.

``CRC_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/e2e/test_dashboard.py`` refreshes ``docs/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import ConsoleMessage, Error, Page, async_playwright, expect

from clients.link import hub_http_url
from clients.master.sdk import Master
from tests.e2e.support import ROOT, Deployment, HubProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT = 15_000  # ms, for every wait on the page
SCREENSHOT = ROOT / "docs" / "dashboard.png"
CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
Deploy = Callable[..., Awaitable[Deployment]]
SLOW_COMMAND = "for i in 1 2 3; do echo line-$i; sleep 0.3; done"


def _find_chromium() -> Path | None:
    """Debian's chromium; installed here (apt-get, as root) when missing, as ``scripts/test.sh`` does."""
    if CHROMIUM.exists():
        return CHROMIUM
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "install", "-y", "-qq", "chromium"], ["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "chromium"]):  # fmt: skip
            try:
                subprocess.run(argv, env=env, capture_output=True, timeout=900, check=False)
            except (OSError, subprocess.SubprocessError):
                break
            if CHROMIUM.exists():
                return CHROMIUM
    return None


BROWSER = _find_chromium()
if BROWSER is None:
    pytest.skip(
        f"{CHROMIUM} is missing and could not be installed (needs root and apt-get: apt-get install chromium)",
        allow_module_level=True,
    )

expect.set_options(timeout=TIMEOUT)


class PageProblems:
    """What went wrong inside the page: uncaught exceptions and Content-Security-Policy violations."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(f"CSP: {message.text}")

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    """A fresh browser (own temporary profile) and page; fails the test if the page threw or broke the CSP."""
    problems = PageProblems()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(BROWSER), args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 1000})
            opened = await context.new_page()
            opened.set_default_timeout(TIMEOUT)
            opened.on("console", problems.on_console)
            opened.on("pageerror", problems.on_page_error)
            yield opened
        finally:
            await browser.close()
    assert problems.errors == []


async def sign_in(page: Page, url: str, token: str) -> None:
    await page.goto(url)
    await page.get_by_test_id("token-input").fill(token)
    await page.get_by_test_id("sign-in").click()


async def test_an_operator_watches_machines_runs_a_command_and_sees_a_plan(
    hub: HubProcess, master: Master, deploy: Deploy, page: Page, tmp_path: Path
) -> None:
    deployment = await deploy("shop", "db", "web", start=False)
    token, _ = await master.create_token("operator", scenario="shop")
    deployment.start("db")
    base = hub_http_url(hub.url)

    await sign_in(page, f"{base}/", token)
    await expect(page.get_by_test_id("whoami")).to_contain_text("operator")
    await expect(page.get_by_test_id("whoami")).to_contain_text("scenario shop")
    await page.get_by_test_id("scenario-link-shop").click()
    await expect(page).to_have_url(f"{base}/#/scenario/shop")
    await expect(page.get_by_test_id("scenario-title")).to_have_text("shop")
    await expect(page.get_by_test_id("live-status")).to_have_text("live")
    await expect(page.get_by_test_id("status-db")).to_have_text("ready")
    await expect(page.get_by_test_id("status-web")).to_have_text("offline")
    await expect(page.get_by_test_id("machine-db")).to_contain_text("CPU")  # key facts from machine_ready
    await expect(page.get_by_test_id("event-log")).to_contain_text("machine_ready")

    # the second machine comes up while the page is open: its row turns ready without a reload
    await page.evaluate("window.__notReloaded = true")
    deployment.start("web")
    await expect(page.get_by_test_id("status-web")).to_have_text("ready")
    assert await page.evaluate("window.__notReloaded === true")

    # a target that matches nothing: the hub's message is shown
    await expect(page.get_by_test_id("command-note")).to_be_hidden()
    await page.get_by_test_id("command-target").fill("nobody")
    await page.get_by_test_id("command-input").fill("true")
    await page.get_by_test_id("command-submit").click()
    await expect(page.get_by_test_id("command-error")).to_contain_text("not_found")

    # a command run from the form: its output streams in while it runs, then its result is stored
    await page.get_by_test_id("command-target").fill("db")
    await page.get_by_test_id("command-input").fill(SLOW_COMMAND)
    await page.get_by_test_id("command-submit").click()
    await expect(page.get_by_test_id("command-status")).to_contain_text("queued 1 order")
    first_seen = await page.wait_for_function(
        """() => {
            const text = document.querySelector('[data-testid="output-panel"]').textContent;
            return text.includes("line-1") ? text : null;
        }""",
        timeout=TIMEOUT,
    )
    assert "line-3" not in await first_seen.json_value()  # shown live, not once the command had finished
    panel = page.get_by_test_id("output-panel")
    await expect(panel).to_contain_text("line-3")
    section = panel.locator("section.output", has_text="line-3")
    await expect(section.locator("header")).to_contain_text("db")
    await expect(section.locator("header")).to_contain_text("exit 0")
    row = page.get_by_test_id("results").locator("tbody tr", has_text="line-3")
    await expect(row.get_by_test_id("result-state")).to_have_text("succeeded")
    await expect(row.get_by_test_id("result-exit")).to_have_text("0")
    await expect(row).to_contain_text("line-1")
    await expect(page.get_by_test_id("step-db")).to_contain_text("exit 0")
    await expect(page.get_by_test_id("command-error")).to_be_hidden()  # cleared by the next submission

    # a plan submitted through the SDK is drawn as a graph: b depends on a, so it sits in the next column
    plan = {"name": "p", "steps": [{"id": "a", "target": "all", "command": "true"},
                                   {"id": "b", "target": "all", "command": "true", "depends_on": ["a"]}]}  # fmt: skip
    submitted = await master.run_plan("shop", plan)
    await master.wait_plan("shop", submitted["id"], timeout=15)
    drawn = page.get_by_test_id(f"plan-{submitted['id']}")
    for step in ("a", "b"):
        await expect(drawn.get_by_test_id(f"plan-step-{step}")).to_have_attribute("data-state", "succeeded")
    await expect(drawn.get_by_test_id("plan-status")).to_have_text("succeeded")
    await expect(drawn.locator("path.edge")).to_have_count(1)
    box_a = await drawn.get_by_test_id("plan-step-a").bounding_box()
    box_b = await drawn.get_by_test_id("plan-step-b").bounding_box()
    assert box_a is not None and box_b is not None and box_b["x"] > box_a["x"] + box_a["width"]
    await expect(page.get_by_test_id("event-log")).to_contain_text("plan_finished")

    # every event once, in cursor order
    cursors = await logged_cursors(page)
    assert cursors == sorted(set(cursors)) and cursors

    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("CRC_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


async def test_a_viewer_reads_but_cannot_run_commands(
    hub: HubProcess, master: Master, deploy: Deploy, page: Page
) -> None:
    await deploy("ro", "box")
    token, _ = await master.create_token("viewer")
    base = hub_http_url(hub.url)

    # a wrong token is refused with a readable message
    await sign_in(page, f"{base}/#/scenario/ro", "crc_nope.nope")
    await expect(page.get_by_test_id("error")).to_contain_text("Sign-in failed")
    await expect(page.get_by_test_id("token-input")).to_be_visible()

    await page.get_by_test_id("token-input").fill(token)
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("whoami")).to_contain_text("viewer")
    await expect(page.get_by_test_id("whoami")).to_contain_text("all scenarios")
    await expect(page.get_by_test_id("error")).to_be_hidden()
    await expect(page.get_by_test_id("scenario-link-ro")).to_be_visible()
    await expect(page.get_by_test_id("scenario-title")).to_have_text("ro")  # opened from the URL's hash
    await expect(page.get_by_test_id("status-box")).to_have_text("ready")
    await expect(page.get_by_test_id("command-note")).to_have_text("viewer tokens can only read")
    await expect(page.get_by_test_id("command-submit")).to_be_disabled()
    await expect(page.get_by_test_id("command-input")).to_be_disabled()
    await expect(page.get_by_test_id("command-target")).to_be_disabled()

    answer = await page.evaluate(
        """async (token) => {
            const response = await fetch("/v1/scenarios/ro/commands", {
                method: "POST",
                headers: {"Authorization": `Bearer ${token}`, "Content-Type": "application/json"},
                body: JSON.stringify({target: "all", command: "true", timeout: null}),
            });
            return {status: response.status, body: await response.json()};
        }""",
        token,
    )
    assert answer["status"] == 403 and answer["body"]["error"]["code"] == "forbidden"

    # the token stays in this tab's session storage until signing out
    await page.reload()
    await expect(page.get_by_test_id("status-box")).to_have_text("ready")
    await page.get_by_test_id("sign-out").click()
    await expect(page.get_by_test_id("token-input")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_the_live_log_resumes_after_the_hub_restarts_without_gaps_or_duplicates(
    hub: HubProcess, master: Master, deploy: Deploy, page: Page
) -> None:
    await deploy("rc", "box")
    token, _ = await master.create_token("viewer", scenario="rc")
    base = hub_http_url(hub.url)
    await sign_in(page, f"{base}/", token)  # a token limited to one scenario opens it at once
    await expect(page.get_by_test_id("live-status")).to_have_text("live")
    await expect(page.get_by_test_id("status-box")).to_have_text("ready")
    before = await logged_cursors(page)

    await asyncio.to_thread(hub.kill)
    await expect(page.get_by_test_id("live-status")).to_contain_text("reconnecting")
    await asyncio.to_thread(hub.start)  # same port and data: the daemon comes back, and so does the page
    await expect(page.get_by_test_id("live-status")).to_have_text("live")
    await page.wait_for_function(  # the daemon's new session, logged after what the page had before
        """(last) => [...document.querySelectorAll('[data-testid="event-log"] li[data-kind="machine_ready"]')]
            .some((row) => Number(row.dataset.cursor) > last)""",
        arg=before[-1],
    )
    await expect(page.get_by_test_id("status-box")).to_have_text("ready")

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{base}/v1/scenarios/rc/events", params={"after": "0", "limit": "500"}) as response,
    ):
        stored = [e["cursor"] for e in (await response.json())["events"]]

    await page.wait_for_function(  # the page's log is exactly the stored events: nothing twice, nothing missed
        """(stored) => JSON.stringify([...document.querySelectorAll('[data-testid="event-log"] li')]
            .map((row) => Number(row.dataset.cursor))) === JSON.stringify(stored)""",
        arg=stored,
    )
    assert len(stored) > len(before) and stored[: len(before)] == before


async def logged_cursors(page: Page) -> list[int]:
    rows = page.get_by_test_id("event-log").locator("li")
    return [int(c) for c in await rows.evaluate_all("rows => rows.map(row => row.dataset.cursor)")]


async def test_the_page_and_its_files_are_served_with_a_strict_policy(hub: HubProcess) -> None:
    base = hub_http_url(hub.url)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["Cache-Control"] == "no-cache"
            html = await response.text()
        assert 'data-testid="token-input"' in html and "http" not in html.split("<body>", 1)[1]
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            async with session.get(f"{base}/static/{name}") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith(kind)
                assert response.headers["Cache-Control"] == "no-cache"
        for name in ("nope.js", "..%2f__init__.py", "index.htm"):
            async with session.get(f"{base}/static/{name}") as response:
                assert response.status == 404
