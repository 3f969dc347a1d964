"""The README's browser page, run in a real chromium against a real server: it tells the
server's `error` event (a run that failed) from EventSource's own connection error."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from tests.conftest import scripted_agent
from tests.live import ThreadServer

README = Path(__file__).resolve().parents[1] / "README.md"
FAILING = [
    {
        "text": "partly written",
        "error": {"type": "overloaded", "message": "upstream overloaded", "after_tokens": 1},
    }
]


def example_page() -> str:
    found = re.search(r"<!-- browser-example -->\n```html\n(.*?)```", README.read_text(), re.S)
    assert found, "README.md has no browser example"
    return found.group(1)


def open_page(browser: Browser, live: ThreadServer, events: str) -> Page:
    """The README's page, served at the server's own origin (as a same-origin app would be)."""
    html = example_page()
    page = browser.new_page()

    def serve(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=html)

    page.route(lambda url: url.startswith(f"{live.url}/page.html"), serve)
    page.goto(f"{live.url}/page.html?events={events}")
    return page


def test_the_readme_page_tells_a_failed_run_from_a_lost_connection(
    live: ThreadServer, browser: Browser
) -> None:
    agent = httpx.post(f"{live.url}/agents", json=scripted_agent(FAILING)).json()["id"]
    sid = httpx.post(f"{live.url}/sessions", json={"agent_id": agent}).json()["id"]
    failed = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "go"})
    assert failed.status_code == 502
    run_id = failed.json()["error"]["run_id"]

    page = open_page(browser, live, f"/sessions/{sid}/runs/{run_id}/events")
    log = page.locator("#log")
    expect(log).to_contain_text("done: failed", timeout=20_000)
    text = log.inner_text()
    assert "partly" in text
    assert "run failed: scripted overloaded: upstream overloaded" in text
    assert "connection" not in text  # closed on done: no reconnect, no connection error

    lost = open_page(browser, live, f"/sessions/{sid}/runs/01J0000000000000000000NONE/events")
    expect(lost.locator("#log")).to_contain_text("connection closed", timeout=20_000)
    assert "run failed" not in lost.locator("#log").inner_text()
