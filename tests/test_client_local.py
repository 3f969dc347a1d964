"""LocalClient and AsyncLocalClient: the SDK's interface in-process, on a real SQLite file,
with no socket opened; what they store a server on the same file then serves."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.client import AsyncClient, Client, InvalidRequest, NotFound, SessionBusy
from server.client.local import AsyncLocalClient, LocalClient
from server.errors import ProviderError
from server.events import Done, MessageStart, RequiresAction, TextDelta
from server.models import ClientTool, MessageResult, SessionRecord, ToolResultBlock
from server.store.lock import DatabaseInUse, DatabaseLock
from tests.conftest import make_settings
from tests.live import ThreadServer


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any connection attempt fails the test: a local turn must not use the network."""

    def refuse(self: socket.socket, *args: Any) -> None:
        raise AssertionError(f"a local client opened a connection to {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield


def script(*steps: dict[str, Any], delay_ms: float = 0) -> dict[str, Any]:
    return {"script": list(steps), "token_delay_ms": delay_ms}


def test_a_local_turn_runs_on_the_database_file(tmp_path: Path, no_sockets: None) -> None:
    db = tmp_path / "local.db"
    with LocalClient(db, allow_roots=[str(tmp_path)]) as client:
        agent = client.agents.create("local", "scripted", options=script({"text": "hi back"}))
        session = client.sessions.create(name="here", agent_id=agent.id, work_dir=str(tmp_path))
        assert isinstance(session, SessionRecord)
        result = client.send("here", "hello")
        assert isinstance(result, MessageResult) and result.response == "hi back"
        events = list(client.stream("here", "again"))
        assert isinstance(events[0], MessageStart) and isinstance(events[-1], Done)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hi back"
        replayed = list(client.runs.events("here", events[-1].run_id))
        assert replayed == events
        assert [m.role for m in client.messages.list("here", page_size=1)] == [
            "user",
            "assistant",
        ] * 2
        assert [r.status for r in client.runs.list("here", page_size=1)] == ["completed"] * 2
        assert {a.name for a in client.agents.list(page_size=1)} == {"default", "local"}
        with pytest.raises(NotFound):
            client.sessions.get("elsewhere")
        with pytest.raises(InvalidRequest):
            client.sessions.create(work_dir="/")  # outside the allowed roots
    assert db.exists()


def test_a_server_on_the_same_file_serves_what_a_local_client_stored(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with LocalClient(settings.db) as client:
        client.sessions.create(name="kept")
        client.send("kept", "remember me")
        with pytest.raises(DatabaseInUse):  # one process runs a database's turns
            DatabaseLock(settings.db).acquire()
    server = ThreadServer(settings).start()
    try:
        with Client(server.url) as remote:
            texts = [m.content[0] for m in remote.messages.list("kept")]
            assert getattr(texts[0], "text", None) == "remember me"
    finally:
        server.stop()


def test_the_async_local_client_pauses_for_client_tools(tmp_path: Path, no_sockets: None) -> None:
    async def scenario() -> None:
        async with AsyncLocalClient(tmp_path / "a.db") as client:
            call = {"name": "pick", "input": {"from": [1, 2]}}
            options = script({"tool_calls": [call]}, {"text": "you picked 2"})
            agent = await client.agents.create("tools", "scripted", options=options)
            await client.sessions.create(name="t", agent_id=agent.id)
            tool = ClientTool("pick", {"type": "object"})
            events = [e async for e in client.stream("t", "go", tools=[tool])]
            [paused] = [e for e in events if isinstance(e, RequiresAction)]
            answer = ToolResultBlock(paused.tool_calls[0].id, "2")
            done = await client.runs.tool_results("t", paused.run_id, [answer])
            assert (done.status, done.response) == ("completed", "you picked 2")

            slow = await client.agents.create(
                "slow", "scripted", options=script({"text": "a " * 200}, delay_ms=20)
            )
            await client.sessions.create(name="s", agent_id=slow.id)
            started = await client.runs.start("s", "go")
            with pytest.raises(SessionBusy):
                await client.send("s", "me too")
            assert (await client.runs.cancel("s", started.run_id)).status == "cancelled"
            down = {"error": {"type": "provider_error", "message": "down"}}
            failing = await client.agents.create("down", "scripted", options=script(down))
            await client.sessions.create(name="f", agent_id=failing.id)
            with pytest.raises(ProviderError):
                await client.send("f", "hi")

    asyncio.run(scenario())


def public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(cls, name))
        for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    }


@pytest.mark.parametrize(
    ("remote", "local", "skip"),
    [
        (Client, LocalClient, {"request", "call", "pages", "follow", "close", "iterate"}),
        (
            AsyncClient,
            AsyncLocalClient,
            {"request", "call", "pages", "follow", "aclose", "open", "view", "checked"},
        ),
    ],
)
def test_the_local_clients_have_the_remote_ones_interface(
    remote: type, local: type, skip: set[str], tmp_path: Path
) -> None:
    def params(sig: inspect.Signature) -> list[str]:
        return [p for p in sig.parameters if p != "self"]

    remote_api = {k: v for k, v in public(remote).items() if k not in skip}
    local_api = {k: v for k, v in public(local).items() if k not in skip}
    assert set(remote_api) <= set(local_api)
    for name in remote_api:
        assert params(remote_api[name]) == params(local_api[name]), name
    made = LocalClient(tmp_path / "i.db") if local is LocalClient else None
    remote_one = remote("http://127.0.0.1:9")
    try:
        for part in ("agents", "sessions", "messages", "runs"):
            theirs = type(getattr(remote_one, part))
            ours = type(getattr(made, part)) if made else type(AsyncLocalClient("x").__dict__[part])
            for name, sig in public(theirs).items():
                assert params(sig) == params(public(ours)[name]), f"{part}.{name}"
    finally:
        if made is not None:
            made.close()
        closing = getattr(remote_one, "close", None)
        if closing is not None:
            closing()
        else:
            asyncio.run(remote_one.aclose())
    assert httpx  # the remote clients are httpx's
