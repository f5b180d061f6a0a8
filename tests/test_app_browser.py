"""The review app in a real browser: `monitor demo`, then `monitor app` on loopback, driven by
Playwright with Debian's chromium. A screenshot of each page is taken into the test's own folder;
`make previews` runs this test with MONITOR_SCREENSHOTS=docs to refresh docs/app-*.png."""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pg import free_port

pytestmark = pytest.mark.browser

MONITOR = str(Path(sys.executable).parent / "monitor")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
BREACH_WEEK = "2026-10-05"  # the demo's planted spam campaign: days 34-41, the ISO week 2026-W41


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo world made by the command a new user runs first."""
    d = tmp_path_factory.mktemp("demo")
    # 42 days end on Tuesday 2026-10-13: the campaign week is the last complete one
    out = subprocess.run([MONITOR, "demo", "--dir", str(d), "--days", "42", "--end", "2026-10-13"], capture_output=True, text=True, timeout=600, check=False)
    assert (d / "monitor.yaml").is_file(), out.stdout + out.stderr
    return d


class App:
    """`monitor app` as its own process group on a loopback port."""

    def __init__(self, config: Path, port: int, log: Path):
        self.config, self.port, self.log = config, port, log
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "App":
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([MONITOR, "app", "--config", str(self.config), "--port", str(self.port),
                                          "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < 60:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"monitor app did not answer within 60 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def browser():
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: install Debian's chromium (make deb)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def settle(page, text: str, timeout: float = 30_000) -> None:
    """Wait until `text` shows and the script has finished running."""
    page.get_by_text(text).first.wait_for(timeout=timeout)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=timeout)
    page.wait_for_timeout(300)


def shots(tmp_path: Path) -> Path:
    """Where the screenshots go: the test's folder, or MONITOR_SCREENSHOTS (set by `make previews` only)."""
    folder = Path(os.environ.get("MONITOR_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page, folder: Path, name: str) -> None:
    """The whole page (the app scrolls inside its main block, so the viewport grows to fit it)."""
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], section.main')]"
                           ".map(e => e.scrollHeight), 900)")
    page.set_viewport_size({"width": 1400, "height": min(height + 40, 4000)})
    page.wait_for_timeout(1000)
    page.screenshot(path=str(folder / f"app-{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_a_new_user_reviews_the_demo_week_in_a_browser(demo, browser, tmp_path):
    app = App(demo / "monitor.yaml", free_port(), tmp_path / "app.log").start()
    folder = shots(tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    outside = []  # air-gapped: no font, icon or script from another host
    page.on("request", lambda r: outside.append(r.url) if urllib.parse.urlsplit(r.url).hostname not in (
        "127.0.0.1", "localhost", None) and not r.url.startswith(("data:", "blob:")) else None)
    try:
        # This week: the planted spam campaign is a missed goal on its card
        page.goto(f"{app.url}/?week={BREACH_WEEK}")
        settle(page, "Open the goal")
        spam = page.locator(".st-key-card-spam_exposure_rate")
        value = spam.locator("[data-testid='stMetricValue']").inner_text()
        assert float(re.match(r"([\d.]+) %", value).group(1)) > 1.0, value  # target: at most 1 %
        assert "missed" in spam.inner_text()
        assert "vs last week" in spam.inner_text()
        screenshot(page, folder, "this-week")

        # the card opens the goal's page
        spam.get_by_text("Open the goal").click()
        settle(page, "SMART card")
        assert "goal=spam_exposure_rate" in page.url
        assert "FROM message_views" in page.locator("[data-testid='stCode']").first.inner_text()
        screenshot(page, folder, "goal")

        page.goto(f"{app.url}/?goal=minutes_per_active_user")  # how dashboards and alerts link to a goal
        settle(page, "SMART card")
        assert page.get_by_role("heading", name="Average minutes of use per active user per day").is_visible()

        page.get_by_role("link", name="Models").click()
        page.get_by_role("heading", name="Models").wait_for()
        settle(page, "binary classification")
        screenshot(page, folder, "models")

        # the review: a note, written by a named author
        page.goto(f"{app.url}/review?week={BREACH_WEEK}")
        settle(page, "Close the review")
        page.get_by_label("Your name", exact=True).fill("Ann")
        page.get_by_label("Your name", exact=True).press("Enter")
        settle(page, "Close the review")
        note = f"Spam campaign from hijacked accounts ({time.time():.0f})"
        form = page.locator(".st-key-review-spam_exposure_rate")
        if not form.get_by_label("Text").is_visible():
            form.get_by_text("Add a note, decision or action item").click()
        form.get_by_label("Text").fill(note)
        form.get_by_role("button", name="Add").click()
        settle(page, note)
        form.get_by_text("Ann · ").first.wait_for(timeout=30_000)  # the rerun that stored it draws its author
        assert "Ann · " in form.inner_text()
        screenshot(page, folder, "review")

        page.reload()  # a reload: a new session, the note read back from the results database
        settle(page, note)

        app.stop()  # a restart of the server
        app.start()
        page.goto(f"{app.url}/review?week={BREACH_WEEK}")
        settle(page, note)

        # closing freezes the week
        page.get_by_label("Your name", exact=True).fill("Ann")
        page.get_by_label("Your name", exact=True).press("Enter")
        settle(page, "Close the review")
        page.get_by_role("button", name="Close the review of this week").click()
        settle(page, "Yes, close the review")  # it asks first
        page.get_by_role("button", name="Yes, close the review").click()
        settle(page, "was closed by Ann")
        frozen = value

        # late data moves the stored value; the closed week keeps its snapshot and says what changed
        db = sqlite3.connect(demo / "monitor.db")
        with db:
            db.execute("UPDATE monitor_goal_results SET value = 0.5 WHERE goal = 'spam_exposure_rate' "
                       "AND size_seconds = 604800 AND window_start LIKE ?", (f"{BREACH_WEEK}%",))
        db.close()
        page.goto(f"{app.url}/?week={BREACH_WEEK}")
        settle(page, "Open the goal")
        page.get_by_role("button", name="Refresh").click()  # reads are cached for a minute
        settle(page, "changed since the review was closed")
        assert page.locator(".st-key-card-spam_exposure_rate [data-testid='stMetricValue']").inner_text() == frozen
        changed = page.locator("[data-testid='stExpander']").first
        changed.get_by_text("50.00 %").first.wait_for(timeout=30_000)  # the expander's table renders after its label
        assert "50.00 %" in changed.inner_text()
        page.goto(f"{app.url}/review?week={BREACH_WEEK}")
        settle(page, note)
        assert page.locator(".st-key-review-spam_exposure_rate form").count() == 0  # no more notes once closed

        # model alerts link to /?model=NAME: it opens that model's page; an unknown one says so
        page.goto(f"{app.url}/?model=credit_scoring")
        settle(page, "Dataset drift")
        assert "model=credit_scoring" in page.url and "owner credit-risk" in page.inner_text("body")
        page.goto(f"{app.url}/?goal=nope")
        settle(page, "not found")
        assert outside == [], outside
        for name in ("this-week", "goal", "models", "review"):
            assert (folder / f"app-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    except Exception as e:  # say what the app said, and keep what the browser showed
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise AssertionError(f"{e}\n--- the page: {tmp_path / 'failure.png'}\n--- monitor app's log (tail):\n"
                             f"{(tmp_path / 'app.log').read_text()[-3000:]}") from e
    finally:
        app.stop()
