"""An agent that cannot run as the server is set up (its provider's key is not set) is the
operator's or the agent's problem, not an upstream failure: every route that starts a run
answers 422 agent_unusable naming the missing setting, the run is recorded as failed with
that error, no upstream is asked, and the agent shows why it cannot run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings, scripted_agent
from tests.live import ThreadServer
from tests.sse import collect, typed

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings(tmp_path)) as c:
        yield c


async def keyless_session(client: httpx.AsyncClient, provider: str = "openai") -> tuple[str, str]:
    agent = await client.post("/agents", json={"name": f"keyless-{provider}", "provider": provider})
    assert agent.status_code == 201, agent.text
    session = await client.post("/sessions", json={"agent_id": agent.json()["id"]})
    return agent.json()["id"], session.json()["id"]


def assert_unusable(response: httpx.Response, setting: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "agent_unusable"
    assert setting in error["message"]
    return error


async def assert_failed_run(client: httpx.AsyncClient, sid: str, run_id: str) -> None:
    run = (await client.get(f"/sessions/{sid}/runs/{run_id}")).json()
    assert run["status"] == "failed", run
    assert run["error"]["type"] == "agent_unusable"


@pytest.mark.parametrize(
    ("provider", "setting"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")]
)
async def test_the_blocking_route(client: httpx.AsyncClient, provider: str, setting: str) -> None:
    _, sid = await keyless_session(client, provider)
    sent = await client.post(f"/sessions/{sid}/message", json={"message": "hi"})
    error = assert_unusable(sent, setting)
    await assert_failed_run(client, sid, error["run_id"])
    runs = (await client.get(f"/sessions/{sid}/runs")).json()["data"]
    assert [r["status"] for r in runs] == ["failed"]


async def test_the_stream_route_answers_before_the_stream_opens(client: httpx.AsyncClient) -> None:
    _, sid = await keyless_session(client)
    sent = await client.post(f"/sessions/{sid}/message/stream", json={"message": "hi"})
    error = assert_unusable(sent, "OPENAI_API_KEY")
    await assert_failed_run(client, sid, error["run_id"])


async def test_a_background_run(client: httpx.AsyncClient) -> None:
    _, sid = await keyless_session(client)
    sent = await client.post(f"/sessions/{sid}/runs", json={"message": "hi"})
    error = assert_unusable(sent, "OPENAI_API_KEY")
    await assert_failed_run(client, sid, error["run_id"])


@pytest.mark.parametrize("extra", [{}, {"stream": True}, {"no_persistence": True}])
async def test_one_shot_run(client: httpx.AsyncClient, extra: dict[str, Any]) -> None:
    agent_id, _ = await keyless_session(client)
    sent = await client.post("/run", json={"prompt": "hi", "agent_id": agent_id, **extra})
    error = assert_unusable(sent, "OPENAI_API_KEY")
    if not extra.get("no_persistence"):
        found = await client.get("/sessions", params={"agent_id": agent_id})
        sid = next(s["id"] for s in found.json()["data"] if s["message_count"])
        await assert_failed_run(client, sid, error["run_id"])


async def test_a_message_overriding_the_agent(client: httpx.AsyncClient) -> None:
    agent_id, _ = await keyless_session(client)
    sid = (await client.post("/sessions", json={})).json()["id"]
    sent = await client.post(
        f"/sessions/{sid}/message", json={"message": "hi", "agent_id": agent_id}
    )
    assert_unusable(sent, "OPENAI_API_KEY")


async def test_the_agent_says_why_it_cannot_run(client: httpx.AsyncClient) -> None:
    agent_id, _ = await keyless_session(client)
    shown = (await client.get(f"/agents/{agent_id}")).json()
    assert shown["usable"] is False
    assert "OPENAI_API_KEY" in shown["unusable_reason"]
    listed = {a["id"]: a for a in (await client.get("/agents")).json()["data"]}
    assert listed[agent_id]["usable"] is False
    assert listed["default"]["usable"] is True  # the echo stand-in needs nothing
    assert listed["default"]["unusable_reason"] is None


def test_a_live_stream_of_a_keyless_agent(tmp_path: Path) -> None:
    """Over real HTTP: the stream route's 422 is a JSON body, not an event stream."""
    server = ThreadServer(make_settings(tmp_path)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            agent = http.post("/agents", json={"name": "k", "provider": "openai"}).json()
            sid = http.post("/sessions", json={"agent_id": agent["id"]}).json()["id"]
            sent = http.post(f"/sessions/{sid}/message/stream", json={"message": "hi"})
            assert_unusable(sent, "OPENAI_API_KEY")
            # the session is not stuck: a usable agent runs in it next
            echo = http.post(
                f"/sessions/{sid}/message/stream", json={"message": "hi", "agent_id": "default"}
            )
            assert echo.status_code == 200 and "event: done" in echo.text
    finally:
        server.stop()


@pytest.mark.parametrize("url", ["http://[::1", "http://[zz]/"])
async def test_an_unparsable_base_url_is_a_400(client: httpx.AsyncClient, url: str) -> None:
    agent = {"name": "bad-url", "provider": "openai", "options": {"base_url": url}}
    created = await client.post("/agents", json=agent)
    assert created.status_code == 400, created.text
    assert created.json()["error"]["field"] == "options"
    agent_id, _ = await keyless_session(client)
    changed = await client.put(f"/agents/{agent_id}", json={"options": {"base_url": url}})
    assert changed.status_code == 400, changed.text
    assert changed.json()["error"]["field"] == "options"


def test_a_queued_run_of_a_keyless_agent_fails_in_its_stream(tmp_path: Path) -> None:
    """The stream of a run queued behind another opens at once; when the run's turn comes
    its agent cannot run, and the stream says so with an `error` event."""
    server = ThreadServer(make_settings(tmp_path)).start()

    async def go() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            slow = scripted_agent([{"text": "x " * 500}], options={"token_delay_ms": 50})
            slow_id = (await http.post("/agents", json=slow)).json()["id"]
            keyless = (await http.post("/agents", json={"name": "k", "provider": "openai"})).json()
            sid = (await http.post("/sessions", json={"agent_id": slow_id})).json()["id"]
            first = (await http.post(f"/sessions/{sid}/runs", json={"message": "go"})).json()
            body = {"message": "hi", "agent_id": keyless["id"], "if_busy": "queue"}
            url = f"/sessions/{sid}/message/stream"
            async with http.stream("POST", url, json=body) as response:
                assert response.status_code == 200
                cancel = f"/sessions/{sid}/runs/{first['run_id']}/cancel"
                assert (await http.post(cancel)).status_code == 200
                got = typed(await collect(response))
            errors = [e.json for e in got if e.event == "error"]
            assert errors and errors[0]["error"]["type"] == "agent_unusable", got
            assert "OPENAI_API_KEY" in errors[0]["error"]["message"]
            assert got[-1].event == "done" and got[-1].json["status"] == "failed"

    try:
        asyncio.run(go())
    finally:
        server.stop()
