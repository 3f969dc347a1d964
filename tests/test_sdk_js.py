"""GET /sdk.js, the browser SDK: served as a cacheable JavaScript module without a key, and
run in a real Chromium against a real server with auth on: a run started and followed across
a cut connection with its text exact, a client tool answered, a run cancelled."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer
from tests.proxy import CuttingProxy
from tests.test_auth import bearer
from tests.waiting import wait_until

WORDS = [f"w{i:02d}" for i in range(40)]
REPLY = " ".join(WORDS)

PAGE = """<!doctype html><meta charset="utf-8"><title>sdk</title>
<script type="module">
import { Sessiond } from "/sdk.js";
const q = new URLSearchParams(location.search);
window.text = ""; window.deltas = 0; window.states = []; window.events = [];
const sd = new Sessiond({ apiKey: q.get("key") });
try {
  const tool = q.get("tool");
  const tools = tool ? [{ name: tool, input_schema: { type: "object" } }] : undefined;
  const run = await sd.startRun(q.get("session"), "go", { tools });
  window.run = run;
  const follower = sd.follow(run, {
    onText: (text) => { window.text += text; window.deltas += 1; },
    onEvent: (event, id) => window.events.push([id, event.type]),
    onConnection: (state) => window.states.push(state),
    onToolCalls: (calls) => calls.map((c) => ({ tool_use_id: c.id, content: "blue" })),
  });
  window.follower = follower;
  window.done = await follower.done;
} catch (error) {
  window.failure = String(error.type || "") + ": " + String(error.message || error);
}
</script>"""


def start_keyed(tmp_path: Path, **settings: Any) -> tuple[ThreadServer, dict[str, str], str]:
    server = ThreadServer(make_settings(tmp_path, **settings)).start()
    command = [sys.executable, "-m", "server", "keys", "create", "--name", "web"]
    made = subprocess.run(
        [*command, "--db", server.settings.db],
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip().split()[-1]
    wait_until(lambda: httpx.get(f"{server.url}/sessions").status_code == 401, "auth to turn on")
    return server, bearer(key), key


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[tuple[ThreadServer, dict[str, str], str]]:
    server, headers, key = start_keyed(tmp_path)
    yield server, headers, key
    server.stop()


def session_with(
    server: ThreadServer, headers: dict[str, str], script: Any, name: str, delay_ms: float = 60
) -> str:
    agent = scripted_agent(script, name=name, options={"token_delay_ms": delay_ms})
    made = httpx.post(f"{server.url}/agents", json=agent, headers=headers)
    assert made.status_code == 201, made.text
    body = {"agent_id": made.json()["id"], "name": name}
    answer = httpx.post(f"{server.url}/sessions", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return name


def open_page(browser: Browser, proxy: CuttingProxy, **query: str) -> Any:
    page = browser.new_page()
    page.route(
        lambda url: url.startswith(f"{proxy.url}/page.html"),
        lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE),
    )
    page.goto(f"{proxy.url}/page.html?{httpx.QueryParams(query)}")
    return page


def test_sdk_js_is_a_cacheable_module_served_without_a_key(
    keyed_server: tuple[ThreadServer, dict[str, str], str],
) -> None:
    server, _, _ = keyed_server
    answer = httpx.get(f"{server.url}/sdk.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "public" in answer.headers["cache-control"]
    assert "export class Sessiond" in answer.text
    etag = answer.headers["etag"]
    again = httpx.get(f"{server.url}/sdk.js", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    assert httpx.get(f"{server.url}/sdk.js", headers={"If-None-Match": '"x"'}).status_code == 200


def test_a_page_follows_a_run_across_a_cut_connection(
    keyed_server: tuple[ThreadServer, dict[str, str], str], browser: Browser
) -> None:
    server, headers, key = keyed_server
    proxy = CuttingProxy(server.port)
    try:
        session = session_with(server, headers, [{"text": REPLY}], "cut")
        page = open_page(browser, proxy, key=key, session=session)
        page.wait_for_function("window.deltas >= 5", timeout=30_000)
        proxy.cut()  # mid-reply
        page.wait_for_function("window.done || window.failure", timeout=60_000)
        assert page.evaluate("window.failure") is None
        assert page.evaluate("window.text") == REPLY  # no gap, nothing twice
        assert page.evaluate("window.done.status") == "completed"
        ids = [event_id for event_id, _ in page.evaluate("window.events")]
        assert ids == list(range(1, len(ids) + 1))  # every event once, in order
        assert "reconnecting" in page.evaluate("window.states")
        follows = [h for h in proxy.heads if b"/events?token=" in h]
        assert len(follows) >= 2
        assert any(b"last-event-id" in h.lower() for h in follows[1:])
    finally:
        proxy.close()


def test_a_page_answers_client_tools_and_cancels(
    keyed_server: tuple[ThreadServer, dict[str, str], str], browser: Browser
) -> None:
    server, headers, key = keyed_server
    proxy = CuttingProxy(server.port)
    try:
        script = [{"tool_calls": [{"name": "colour", "input": {}}]}, {"text": "blue it is"}]
        session = session_with(server, headers, script, "tools")
        page = open_page(browser, proxy, key=key, session=session, tool="colour")
        page.wait_for_function("window.done || window.failure", timeout=60_000)
        assert page.evaluate("window.failure") is None
        assert page.evaluate("window.text") == "blue it is"
        assert page.evaluate("window.done.status") == "completed"
        types = [t for _, t in page.evaluate("window.events")]
        assert "requires_action" in types and types[-1] == "done"
        # after the tool results, the follower goes on from the last event it holds
        assert any(b"/events?token=" in h and b"last_event_id=" in h for h in proxy.heads)

        slow = session_with(server, headers, [{"text": REPLY}], "slow")
        page = open_page(browser, proxy, key=key, session=slow)
        page.wait_for_function("window.deltas >= 2", timeout=30_000)
        page.evaluate("window.follower.cancel()")
        page.wait_for_function("window.done || window.failure", timeout=30_000)
        assert page.evaluate("window.done.status") == "cancelled"
        assert page.evaluate("window.text") != REPLY
    finally:
        proxy.close()


def test_a_page_goes_on_when_the_browser_gives_up_on_an_expired_token(
    tmp_path: Path, browser: Browser
) -> None:
    """The browser's own reconnect carries the run's first token; once that has expired it
    is refused (401) and EventSource gives up. The follower then asks for a fresh events_url
    with its key and goes on after the last event it holds."""
    server, headers, key = start_keyed(tmp_path, stream_token_ttl=3.0)
    proxy = CuttingProxy(server.port)
    try:
        session = session_with(server, headers, [{"text": REPLY}], "expiring", delay_ms=150)
        page = open_page(browser, proxy, key=key, session=session)
        page.wait_for_function("window.deltas >= 3", timeout=30_000)
        first_url = page.evaluate("window.run.events_url")
        wait_until(
            lambda: httpx.head(f"{server.url}{first_url}").status_code == 401,
            "the run's first stream token to expire",
        )
        proxy.cut()
        page.wait_for_function("window.done || window.failure", timeout=60_000)
        assert page.evaluate("window.failure") is None
        assert page.evaluate("window.text") == REPLY
        ids = [event_id for event_id, _ in page.evaluate("window.events")]
        assert ids == list(range(1, len(ids) + 1))
        assert any(b"/events_url?run_id=" in h for h in proxy.heads)  # a fresh token
        assert any(b"last_event_id=" in h for h in proxy.heads)
    finally:
        proxy.close()
        server.stop()
