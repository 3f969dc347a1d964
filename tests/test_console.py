"""The web console at `/`, in a real Chromium against a real `sessiond serve`, driven by the
`data-testid` attributes README documents. Every scenario also checks that the page logged no
error of its own (a failed request the scenario made on purpose aside)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.conftest import scripted_agent
from tests.live import ProcessServer
from tests.proxy import CuttingProxy
from tests.waiting import wait_until

TIMEOUT_MS = 30_000
WORDS = [f"w{i:02d}" for i in range(40)]
LONG_REPLY = " ".join(WORDS)
RESOURCE_ERROR = re.compile(
    r"^Failed to load resource: the server responded with a status of (4\d\d)"
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ProcessServer]:
    server = ProcessServer(tmp_path / "console.db", tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


class Console:
    """One browser page on the console, recording what the page logs as errors."""

    def __init__(self, browser: Browser, url: str, width: int = 1280) -> None:
        self.page: Page = browser.new_page(viewport={"width": width, "height": 800})
        self.page.set_default_timeout(TIMEOUT_MS)
        self.url = url
        self.errors: list[str] = []
        self.expected_failures = 0
        self.page.on("console", self._logged)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _logged(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def open(self, fragment: str = "#/") -> Page:
        self.page.goto(f"{self.url}/{fragment}")
        return self.page

    def by(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    def assistant_text(self) -> str:
        texts = self.page.locator('[data-testid="message"][data-role="assistant"] .text')
        return "".join(texts.all_inner_texts())

    def check_log(self, *refused: int) -> None:
        """No errors but failed requests the scenario made on purpose, of these statuses (each
        at least once). The browser reports a failed request's log line a moment after the
        page has shown the failure: the lines are waited for (each wait lets Playwright
        deliver what came)."""

        def statuses() -> set[int]:
            return {int(m.group(1)) for e in self.errors if (m := RESOURCE_ERROR.match(e))}

        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not set(refused) <= statuses() and time.monotonic() < deadline:
            self.page.wait_for_timeout(20)
        others = [e for e in self.errors if not RESOURCE_ERROR.match(e)]
        assert others == [], others
        assert statuses() == set(refused), self.errors


def make_agent(url: str, script: list[dict[str, Any]], name: str, **extra: Any) -> str:
    created = httpx.post(f"{url}/agents", json=scripted_agent(script, name=name, **extra))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def make_session(url: str, agent: str, **extra: Any) -> str:
    created = httpx.post(f"{url}/sessions", json={"agent_id": agent, **extra})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def runs_of(url: str, sid: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = httpx.get(f"{url}/sessions/{sid}/runs").json()["data"]
    return runs


def paced(text: str, delay_ms: int = 40) -> dict[str, Any]:
    return {"options": {"token_delay_ms": delay_ms}, "script": [{"text": text}]}


def test_the_files_are_served_with_etags_and_a_strict_policy(served: ProcessServer) -> None:
    page = httpx.get(f"{served.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    again = httpx.get(f"{served.url}/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    module = httpx.get(f"{served.url}/console/app.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    assert module.headers["cache-control"] == "no-cache" and module.headers["etag"]
    for bad in ("/console/nothing.js", "/console/..%2Fapi%2Fweb.py", "/console/.hidden.js"):
        missing = httpx.get(f"{served.url}{bad}")
        assert missing.status_code == 404, bad
        assert missing.json()["error"]["type"] == "not_found"


def test_chat_streams_piece_by_piece_and_lists_the_session(
    served: ProcessServer, browser: Browser
) -> None:
    make_agent(served.url, [{"text": LONG_REPLY}], "talker", options={"token_delay_ms": 25})
    console = Console(browser, served.url)
    page = console.open()
    console.by("agent-select").select_option(label="talker (scripted)")
    console.by("session-name").fill("first-chat")
    console.by("new-session").click()
    expect(page).to_have_url(re.compile(r"#/sessions/[0-9A-Z]{26}$"))
    sid = page.url.rsplit("/", 1)[1]
    item = page.locator(f'[data-testid="session-item"][data-session-id="{sid}"]')
    expect(item).to_have_attribute("data-status", "idle")

    console.by("message-input").fill("hello there")
    console.by("message-input").press("Enter")
    # an intermediate state: some of the words painted, not yet all
    page.wait_for_function(
        """([first, last]) => {
            const t = [...document.querySelectorAll('[data-role="assistant"] .text')]
                .map(n => n.textContent).join('');
            return t.includes(first) && !t.includes(last);
        }""",
        arg=[WORDS[2], WORDS[-1]],
    )
    expect(item).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("run-usage")).to_contain_text("completed")
    assert console.assistant_text() == LONG_REPLY
    user = page.locator('[data-testid="message"][data-role="user"]')
    expect(user).to_have_text(re.compile("hello there"))
    expect(item).to_have_attribute("data-status", "idle")
    expect(console.by("message-input")).to_have_value("")
    console.check_log()


def test_a_reload_mid_reply_shows_it_whole_exactly_once(
    served: ProcessServer, browser: Browser
) -> None:
    agent = make_agent(served.url, [{"text": LONG_REPLY}], "slow", options={"token_delay_ms": 60})
    sid = make_session(served.url, agent)
    console = Console(browser, served.url)
    page = console.open(f"#/sessions/{sid}")
    console.by("message-input").fill("go")
    console.by("send").click()
    page.wait_for_function(
        "(w) => document.querySelector('[data-testid=transcript]').textContent.includes(w)",
        arg=WORDS[3],
    )
    page.reload()
    expect(page.get_by_test_id("run-usage")).to_contain_text("completed")
    assert console.assistant_text() == LONG_REPLY
    assert page.get_by_test_id("transcript").inner_text().count(WORDS[-1]) == 1
    assert page.locator('[data-role="user"]').count() == 1
    console.check_log()


def test_stop_and_escape_cancel_the_run(served: ProcessServer, browser: Browser) -> None:
    agent = make_agent(
        served.url, [{"text": LONG_REPLY}], "stoppable", options={"token_delay_ms": 80}
    )
    sid = make_session(served.url, agent)
    console = Console(browser, served.url)
    page = console.open(f"#/sessions/{sid}")
    for stopping in ("button", "escape"):
        console.by("message-input").fill(f"go {stopping}")
        console.by("send").click()
        page.wait_for_function(
            "(w) => document.querySelector('[data-testid=transcript]').textContent.includes(w)",
            arg=WORDS[1],
        )
        if stopping == "button":
            console.by("stop").click()
        else:
            page.keyboard.press("Escape")
        wait_until(
            lambda: runs_of(served.url, sid)[0]["status"] == "cancelled", "the run cancelled"
        )
        expect(page.get_by_test_id("run-usage").last).to_contain_text("cancelled")
        expect(console.by("stop")).to_be_disabled()
    assert [r["status"] for r in runs_of(served.url, sid)] == ["cancelled", "cancelled"]
    console.check_log()


def test_a_tool_call_is_folded_with_its_input_and_output(
    served: ProcessServer, browser: Browser, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("the secret ingredient is basil\n")
    script = [
        {"text": "Reading.", "tool_calls": [{"name": "read_file", "input": {"path": "notes.txt"}}]},
        {"text": "It says basil."},
    ]
    agent = make_agent(served.url, script, "reader", tools=["read_file"])
    sid = make_session(served.url, agent, work_dir=str(tmp_path))
    console = Console(browser, served.url)
    page = console.open(f"#/sessions/{sid}")
    console.by("message-input").fill("what is in notes.txt?")
    console.by("send").click()
    expect(page.get_by_test_id("run-usage")).to_contain_text("completed")
    call = page.locator('[data-testid="tool-call"][data-tool-name="read_file"]')
    expect(call).to_have_count(1)
    assert call.get_attribute("open") is None  # folded
    expect(call.locator(".tool-output")).to_be_hidden()
    call.locator("summary").click()
    expect(call.locator(".tool-input")).to_contain_text('"path": "notes.txt"')
    expect(call.locator(".tool-output")).to_contain_text("basil")
    assert "It says basil." in console.assistant_text()
    console.check_log()


def test_search_finds_a_session_by_a_word_of_its_history(
    served: ProcessServer, browser: Browser
) -> None:
    agent = make_agent(served.url, [{"text": "noted"}], "noter")
    wanted = make_session(served.url, agent, name="about-quokkas")
    other = make_session(served.url, agent, name="about-lunch")
    for sid, text in ((wanted, "tell me about the quokka island"), (other, "what is for lunch")):
        answered = httpx.post(f"{served.url}/sessions/{sid}/message", json={"message": text})
        assert answered.status_code == 200, answered.text
    console = Console(browser, served.url)
    page = console.open()
    items = page.get_by_test_id("session-item")
    expect(items).to_have_count(2)
    console.by("search-input").fill("quokka")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-session-id", wanted)
    console.by("search-input").fill("")
    expect(items).to_have_count(2)
    console.check_log()


def test_fork_at_a_middle_message_opens_the_fork(served: ProcessServer, browser: Browser) -> None:
    agent = make_agent(served.url, [{"text": "answer"}], "forker")
    sid = make_session(served.url, agent)
    for text in ("first question", "second question"):
        httpx.post(
            f"{served.url}/sessions/{sid}/message", json={"message": text}
        ).raise_for_status()
    console = Console(browser, served.url)
    page = console.open(f"#/sessions/{sid}")
    messages = page.get_by_test_id("message")
    expect(messages).to_have_count(4)
    messages.nth(1).get_by_test_id("fork").click()  # after the first answer
    expect(page).not_to_have_url(re.compile(sid))
    fork = page.url.rsplit("/", 1)[1]
    expect(messages).to_have_count(2)
    expect(messages.first).to_contain_text("first question")
    record = httpx.get(f"{served.url}/sessions/{fork}").json()
    assert record["parent_id"] == sid and record["message_count"] == 2
    console.check_log()


def test_a_client_tool_is_answered_through_its_form(
    served: ProcessServer, browser: Browser
) -> None:
    ask = {
        "name": "ask_user",
        "description": "Ask the person a question",
        "input_schema": {"type": "object", "properties": {"question": {"type": "string"}}},
        "executor": "client",
    }
    script = [
        {"tool_calls": [{"name": "ask_user", "input": {"question": "favourite colour?"}}]},
        {"text": "Thanks for telling me. " + LONG_REPLY},
    ]
    agent = make_agent(served.url, script, "asker", tools=[ask], options={"token_delay_ms": 40})
    sid = make_session(served.url, agent)
    console = Console(browser, served.url)
    page = console.open(f"#/sessions/{sid}")
    console.by("message-input").fill("ask me something")
    console.by("send").click()
    form = page.locator('[data-testid="client-tool"][data-tool-name="ask_user"]')
    expect(form).to_contain_text("favourite colour?")
    form.get_by_test_id("tool-result-input").fill("green")
    console.by("tool-submit").click()
    page.wait_for_function(
        "(w) => document.querySelector('[data-testid=transcript]').textContent.includes(w)",
        arg=WORDS[2],
    )
    # a reload now replays the run past its answered pause: no form again, the text once
    page.reload()
    expect(page.get_by_test_id("run-usage")).to_contain_text("completed")
    assert console.assistant_text() == "Thanks for telling me. " + LONG_REPLY
    expect(page.get_by_test_id("client-tool")).to_have_count(0)
    history = httpx.get(f"{served.url}/sessions/{sid}/messages").json()["data"]
    results = [b for m in history for b in m["content"] if b["type"] == "tool_result"]
    assert [r["content"] for r in results] == ["green"]
    console.check_log()


def test_bad_input_and_server_errors_read_as_messages(
    served: ProcessServer, browser: Browser
) -> None:
    console = Console(browser, served.url)
    page = console.open("#/agents")
    console.by("agent-name").fill("broken")
    console.by("agent-options").fill("{not json")
    console.by("agent-save").click()
    expect(console.by("error")).to_be_visible()
    expect(console.by("error")).to_contain_text("options is not valid JSON")

    console.by("agent-options").fill("{}")
    console.by("agent-provider").fill("no-such-provider")
    console.by("agent-save").click()
    expect(console.by("error")).to_contain_text("invalid_request")
    expect(console.by("error")).to_contain_text("no-such-provider")

    page.goto(f"{served.url}/#/sessions/01J0000000000000000000NONE")
    expect(console.by("error")).to_contain_text("not_found")
    console.check_log(400, 404)  # the agent refused, then the session's reads


def test_agents_are_created_and_edited(served: ProcessServer, browser: Browser) -> None:
    console = Console(browser, served.url)
    page = console.open("#/agents")
    console.by("agent-name").fill("helper")
    console.by("agent-system").fill("Be brief.")
    console.by("agent-options").fill('{"script": [{"text": "brief"}]}')
    console.by("agent-save").click()
    expect(page).to_have_url(re.compile(r"#/agents/[0-9A-Z]{26}$"))
    agent_id = page.url.rsplit("/", 1)[1]
    expect(console.by("agent-save")).to_have_text("Save agent")  # the stored agent's form
    expect(console.by("agent-system")).to_have_value("Be brief.")
    console.by("agent-max-steps").fill("3")
    console.by("agent-save").click()
    wait_until(
        lambda: httpx.get(f"{served.url}/agents/{agent_id}").json()["max_steps"] == 3,
        "the agent's edit stored",
    )
    stored = httpx.get(f"{served.url}/agents/{agent_id}").json()
    assert stored["system"] == "Be brief." and stored["options"]["script"][0]["text"] == "brief"
    expect(page.locator(f'[data-testid="agent-item"][data-agent-id="{agent_id}"]')).to_be_visible()
    console.check_log()


def test_a_key_is_asked_for_once_and_streams_use_tokens(tmp_path: Path, browser: Browser) -> None:
    db = tmp_path / "keyed.db"
    made = subprocess.run(
        [sys.executable, "-m", "server", "keys", "create", "--name", "web", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip()
    server = ProcessServer(db, tmp_path).start()
    try:
        auth = {"Authorization": f"Bearer {key}"}
        agent = httpx.post(
            f"{server.url}/agents",
            json=scripted_agent([{"text": "keyed hello"}], name="k"),
            headers=auth,
        ).json()["id"]
        sid = httpx.post(f"{server.url}/sessions", json={"agent_id": agent}, headers=auth).json()[
            "id"
        ]
        console = Console(browser, server.url)
        page = console.open(f"#/sessions/{sid}")
        expect(console.by("api-key")).to_be_visible()
        console.by("api-key").fill(key)
        console.by("api-key").press("Enter")
        expect(console.by("api-key")).to_be_hidden()
        console.by("message-input").fill("hi")
        console.by("send").click()
        expect(page.get_by_test_id("run-usage")).to_contain_text("completed")
        assert console.assistant_text() == "keyed hello"
        page.reload()  # the key is kept: no question again
        expect(page.get_by_test_id("message")).to_have_count(2)
        expect(console.by("api-key")).to_be_hidden()
        console.check_log(401)  # the first calls, before the key was given
    finally:
        server.stop()


@pytest.mark.parametrize("width", [1280, 375])
def test_screenshots_of_every_page(
    served: ProcessServer, browser: Browser, tmp_path: Path, width: int
) -> None:
    script = [
        {"text": "Listing.", "tool_calls": [{"name": "list_files", "input": {}}]},
        {"text": "Here is what the folder holds."},
    ]
    agent = make_agent(served.url, script, f"shown{width}", tools=["list_files"])
    sid = make_session(served.url, agent, name=f"screens-{width}", work_dir=str(tmp_path))
    httpx.post(f"{served.url}/sessions/{sid}/message", json={"message": "what is here?"})
    console = Console(browser, served.url, width)
    shots = tmp_path / "screenshots"
    page = console.open()
    expect(page.get_by_test_id("session-item")).to_have_count(1)
    page.screenshot(path=str(shots / f"home-{width}.png"))
    page.goto(f"{served.url}/#/sessions/{sid}")
    expect(page.get_by_test_id("run-usage")).to_contain_text("completed")
    expect(console.by("message-input")).to_be_visible()
    page.screenshot(path=str(shots / f"chat-{width}.png"))
    page.goto(f"{served.url}/#/sessions/{sid}/runs")
    expect(page.get_by_test_id("run-row")).to_have_count(1)
    page.screenshot(path=str(shots / f"runs-{width}.png"))
    page.goto(f"{served.url}/#/agents")
    expect(page.get_by_test_id("agent-item").first).to_be_visible()
    page.screenshot(path=str(shots / f"agents-{width}.png"))
    # nothing wider than the window at a phone's width
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert len(list(shots.glob("*.png"))) == 4
    console.check_log()


def test_rename_tag_archive_export_import_and_delete(
    served: ProcessServer, browser: Browser, tmp_path: Path
) -> None:
    agent = make_agent(served.url, [{"text": "kept"}], "keeper")
    sid = make_session(served.url, agent, name="old-name")
    httpx.post(f"{served.url}/sessions/{sid}/message", json={"message": "remember me"})
    console = Console(browser, served.url)
    page = console.open(f"#/sessions/{sid}")
    page.locator("details.manage").evaluate("d => { d.open = true; }")
    console.by("rename-input").fill("new-name")
    page.get_by_label("Tags").fill("alpha, beta")
    page.get_by_role("button", name="Save").click()
    item = page.locator(f'[data-testid="session-item"][data-session-id="{sid}"]')
    expect(item).to_contain_text("new-name")
    stored = httpx.get(f"{served.url}/sessions/{sid}").json()
    assert stored["name"] == "new-name" and stored["tags"] == ["alpha", "beta"]

    page.locator("details.manage").evaluate("d => { d.open = true; }")
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Export").click()
    exported = tmp_path / "exported.json"
    downloading.value.save_as(exported)
    assert "remember me" in exported.read_text()

    page.locator("details.manage").evaluate("d => { d.open = true; }")
    page.get_by_role("button", name="Archive").click()
    expect(page.get_by_test_id("session-status")).to_have_text("archived")
    expect(item).to_have_count(0)  # the list leaves archived sessions out
    page.locator("#show-archived").check()
    expect(item).to_have_attribute("data-status", "archived")
    page.locator("#show-archived").uncheck()

    page.locator("details.manage").evaluate("d => { d.open = true; }")
    page.get_by_role("button", name="Delete…").click()  # the first click only asks
    assert httpx.get(f"{served.url}/sessions/{sid}").status_code == 200
    page.get_by_role("button", name="Really delete? Click again").click()
    expect(page).to_have_url(re.compile(r"#/$"))
    wait_until(
        lambda: httpx.get(f"{served.url}/sessions/{sid}").status_code == 404, "the session deleted"
    )

    page.set_input_files('[data-testid="import-file"]', str(exported))  # and back it comes
    expect(page).to_have_url(re.compile(r"#/sessions/[0-9A-Z]{26}$"))
    expect(page.get_by_test_id("message")).to_have_count(2)
    expect(page.get_by_test_id("transcript")).to_contain_text("remember me")
    copy = httpx.get(f"{served.url}/sessions/new-name").json()
    assert copy["id"] != sid and copy["tags"] == ["alpha", "beta"]
    console.check_log()


def test_a_busy_session_offers_queue_or_interrupt(served: ProcessServer, browser: Browser) -> None:
    agent = make_agent(served.url, [{"text": LONG_REPLY}], "busy", options={"token_delay_ms": 80})
    sid = make_session(served.url, agent)
    console = Console(browser, served.url)
    page = console.open(f"#/sessions/{sid}")
    console.by("message-input").fill("first")
    console.by("send").click()
    page.wait_for_function(
        "(w) => document.querySelector('[data-testid=transcript]').textContent.includes(w)",
        arg=WORDS[1],
    )
    console.by("message-input").fill("second")
    console.by("send").click()
    page.locator("#busy-interrupt").click()
    wait_until(lambda: len(runs_of(served.url, sid)) == 2, "the second run")
    wait_until(
        lambda: [r["status"] for r in runs_of(served.url, sid)][1] == "interrupted",
        "the first run interrupted",
    )
    page.wait_for_function(
        "(w) => document.querySelector('[data-testid=transcript]').textContent.includes(w)",
        arg=WORDS[2],
    )
    console.by("stop").click()
    wait_until(
        lambda: runs_of(served.url, sid)[0]["status"] == "cancelled", "the second run cancelled"
    )
    expect(page.get_by_test_id("run-usage")).to_have_count(2)
    expect(page.get_by_test_id("run-usage").first).to_contain_text("interrupted")
    console.check_log()


def test_a_dropped_network_mid_reply_goes_on_without_a_gap(
    served: ProcessServer, browser: Browser
) -> None:
    agent = make_agent(served.url, [{"text": LONG_REPLY}], "cut", options={"token_delay_ms": 50})
    sid = make_session(served.url, agent)
    proxy = CuttingProxy(served.port)
    console = Console(browser, proxy.url)
    try:
        page = console.open(f"#/sessions/{sid}")
        console.by("message-input").fill("go")
        console.by("send").click()
        page.wait_for_function(
            "(w) => document.querySelector('[data-testid=transcript]').textContent.includes(w)",
            arg=WORDS[3],
        )
        partial = console.assistant_text()
        proxy.cut()
        expect(page.get_by_test_id("run-usage")).to_contain_text("completed")
        assert console.assistant_text() == LONG_REPLY
        assert LONG_REPLY.startswith(partial) and len(partial) < len(LONG_REPLY)
        resumed = [h for h in proxy.heads if b"/events" in h and b"last-event-id" in h.lower()]
        assert resumed, "the browser did not resume the stream with Last-Event-ID"
        # the cut itself may log one failed request of the page's own (a poll in flight)
        assert [e for e in console.errors if not e.startswith("Failed to load resource")] == []
    finally:
        console.page.close()  # no more requests through the relay (the list polls)
        proxy.close()
