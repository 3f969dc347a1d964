"""The Python SDK (server.client) against a real server: typed results, every page of a list,
the server's error kinds as its exception classes, and a stream that goes on across a cut
connection with exactly the events an uninterrupted one gives."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.client import (
    AsyncClient,
    Client,
    InvalidRequest,
    NotFound,
    SessionBusy,
    Unauthorized,
    Unreachable,
)
from server.errors import ProviderError
from server.events import ContentBlockStart, Done, MessageStart, RequiresAction, TextDelta
from server.models import AgentView, ClientTool, MessageResult, Run, SessionRecord, ToolResultBlock
from tests.conftest import make_settings
from tests.live import ThreadServer
from tests.proxy import CuttingProxy

WORDS = [f"w{i:02d}" for i in range(40)]
REPLY = " ".join(WORDS)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ThreadServer]:
    server = ThreadServer(make_settings(tmp_path)).start()
    yield server
    server.stop()


def scripted(client: Client, script: list[dict[str, object]], delay_ms: float = 0) -> AgentView:
    options = {"script": script, "token_delay_ms": delay_ms}
    name = f"scripted-{len(list(client.agents.list()))}"
    return client.agents.create(name, "scripted", options=options)


def test_a_turn_gives_typed_results(live: ThreadServer, tmp_path: Path) -> None:
    with Client(live.url) as client:
        agent = scripted(client, [{"text": "hello there"}])
        assert isinstance(agent, AgentView) and agent.usable
        session = client.sessions.create(name="demo", agent_id=agent.id, work_dir=str(tmp_path))
        assert isinstance(session, SessionRecord) and session.work_dir == str(tmp_path)
        again = client.sessions.create(name="demo", if_exists="resume")
        assert again.id == session.id

        result = client.send("demo", "hi")
        assert isinstance(result, MessageResult)
        assert (result.response, result.status) == ("hello there", "completed")

        events = list(client.stream("demo", "and again"))
        assert isinstance(events[0], MessageStart) and isinstance(events[-1], Done)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello there"

        texts = [m.content[0] for m in client.messages.list("demo")]
        assert [getattr(t, "text", None) for t in texts] == [
            "hi",
            "hello there",
            "and again",
            "hello there",
        ]
        runs = list(client.runs.list(session.id))
        assert [r.status for r in runs] == ["completed", "completed"]
        assert isinstance(client.runs.get("demo", runs[0].id), Run)
        assert client.sessions.archive("demo").archived_at is not None
        client.sessions.delete("demo")
        with pytest.raises(NotFound):
            client.sessions.get("demo")


def test_lists_go_through_every_page(live: ThreadServer) -> None:
    with Client(live.url) as client:
        made = [client.sessions.create(name=f"s{i}").id for i in range(7)]
        pages = 0

        def count(request: object) -> None:
            nonlocal pages
            pages += 1

        client.http.event_hooks["request"].append(count)
        listed = [s.id for s in client.sessions.list(page_size=3)]
        assert sorted(listed) == sorted(made) and len(listed) == 7
        assert pages == 3  # 3 + 3 + 1: each page asked for once, the last one says no more
        assert len(list(client.sessions.list(page_size=1000))) == 7


def test_errors_are_the_servers_error_kinds(live: ThreadServer, tmp_path: Path) -> None:
    with Client(live.url) as client:
        with pytest.raises(NotFound) as missing:
            client.sessions.get("nope")
        assert missing.value.status == 404 and "nope" in missing.value.message
        with pytest.raises(InvalidRequest) as bad:
            client.sessions.create(name="no spaces allowed")
        assert bad.value.extra["field"] == "name"
        agent = scripted(client, [{"text": REPLY}], delay_ms=50)
        client.sessions.create(name="busy", agent_id=agent.id)
        started = client.runs.start("busy", "go")
        with pytest.raises(SessionBusy) as busy:
            client.send("busy", "me too")
        assert busy.value.extra["run_id"] == started.run_id
        assert busy.value.headers["Retry-After"]
        assert client.runs.cancel("busy", started.run_id).status == "cancelled"

        down = {"error": {"type": "provider_error", "message": "upstream down"}}
        failing = scripted(client, [down])
        client.sessions.create(name="fails", agent_id=failing.id)
        with pytest.raises(ProviderError) as failed:
            client.send("fails", "hi")
        assert failed.value.status == 502 and "upstream down" in failed.value.message
        assert failed.value.extra["run_id"]
    with Client("http://127.0.0.1:9") as nowhere:
        with pytest.raises(Unreachable):
            nowhere.sessions.get("x")
        with pytest.raises(Unreachable, match="cannot reach sessiond"):
            list(nowhere.stream("x", "hi"))


def test_a_key_is_sent_and_a_missing_one_refused(live: ThreadServer) -> None:
    command = [sys.executable, "-m", "server", "keys", "create", "--name", "sdk"]
    made = subprocess.run(
        [*command, "--db", live.settings.db],
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip().split()[-1]
    proxy = CuttingProxy(live.port)
    try:
        with Client(live.url, api_key=key) as direct, Client(proxy.url, api_key=key) as client:
            agent = scripted(direct, [{"text": REPLY}], delay_ms=20)
            assert client.sessions.create(name="keyed", agent_id=agent.id).name == "keyed"
            received = []
            for event in client.stream("keyed", "go"):
                received.append(event)
                if len(received) == 6:
                    proxy.cut()  # the resumed stream is asked for with the key too
            assert isinstance(received[-1], Done)
            assert received == list(direct.runs.events("keyed", received[-1].run_id))
        assert any(b"/events" in h for h in proxy.heads)
    finally:
        proxy.close()
    with Client(live.url, api_key="") as client, pytest.raises(Unauthorized):
        list(client.sessions.list())


def test_client_tools_round_trip(live: ThreadServer) -> None:
    with Client(live.url) as client:
        call = {"name": "ask_user", "input": {"q": "colour?"}}
        agent = scripted(client, [{"tool_calls": [call]}, {"text": "blue it is"}])
        client.sessions.create(name="tools", agent_id=agent.id)
        tool = ClientTool("ask_user", {"type": "object"}, "ask the user")
        paused = client.send("tools", "go", tools=[tool])
        assert paused.status == "requires_action"
        [pending] = paused.pending_tool_calls
        answer = ToolResultBlock(pending.id, "blue")
        done = client.runs.tool_results("tools", paused.run_id, [answer])
        assert (done.status, done.response) == ("completed", "blue it is")


def test_stream_goes_on_across_a_cut_connection(live: ThreadServer) -> None:
    proxy = CuttingProxy(live.port)
    try:
        with Client(live.url) as direct, Client(proxy.url) as client:
            agent = scripted(direct, [{"text": REPLY}], delay_ms=20)
            direct.sessions.create(name="cut", agent_id=agent.id)
            received = []
            for event in client.stream("cut", "go"):
                received.append(event)
                if sum(isinstance(e, TextDelta) for e in received) == 5:
                    proxy.cut()  # mid-reply
            run_id = received[-1].run_id if isinstance(received[-1], Done) else None
            assert run_id is not None
            whole = list(direct.runs.events("cut", run_id))
        assert received == whole  # no gap, nothing twice, the same events in the same order
        assert "".join(e.text for e in received if isinstance(e, TextDelta)) == REPLY
        resumed = [h for h in proxy.heads if b"/events" in h]
        assert resumed and all(b"last-event-id:" in h.lower() for h in resumed)
    finally:
        proxy.close()


def test_the_async_client_streams_across_a_cut_too(live: ThreadServer) -> None:
    proxy = CuttingProxy(live.port)

    async def scenario() -> None:
        async with AsyncClient(live.url) as direct, AsyncClient(proxy.url) as client:
            options = {"script": [{"text": REPLY}], "token_delay_ms": 20}
            agent = await direct.agents.create("scripted", "scripted", options=options)
            await direct.sessions.create(name="acut", agent_id=agent.id)
            received = []
            async for event in client.stream("acut", "go"):
                received.append(event)
                if sum(isinstance(e, TextDelta) for e in received) == 5:
                    proxy.cut()
            assert isinstance(received[-1], Done)
            whole = [e async for e in direct.runs.events("acut", received[-1].run_id)]
            assert received == whole
            assert [s.name async for s in direct.sessions.list(page_size=1)] == ["acut"]
            blocked = await direct.send("acut", "once more")
            assert blocked.response == REPLY
            with pytest.raises(NotFound):
                await direct.runs.get("acut", "01ARZ3NDEKTSV4RRFFQ69G5FAV")

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()


def test_a_run_followed_from_the_middle_gives_only_what_follows(live: ThreadServer) -> None:
    with Client(live.url) as client:
        agent = scripted(client, [{"text": "one two three"}])
        client.sessions.create(name="mid", agent_id=agent.id)
        run_id = client.send("mid", "go").run_id
        whole = list(client.runs.events("mid", run_id))
        assert isinstance(whole[1], ContentBlockStart)
        assert list(client.runs.events("mid", run_id, after=2)) == whole[2:]
        assert list(client.runs.events("mid", run_id, after=len(whole))) == []


def test_requires_action_reaches_a_stream(live: ThreadServer) -> None:
    with Client(live.url) as client:
        agent = scripted(client, [{"tool_calls": [{"name": "pick", "input": {}}]}])
        client.sessions.create(name="ra", agent_id=agent.id)
        tool = ClientTool("pick", {"type": "object"})
        events = list(client.stream("ra", "go", tools=[tool]))
        assert any(isinstance(e, RequiresAction) for e in events)
        assert isinstance(events[-1], Done) and events[-1].status == "requires_action"


def test_importing_the_sdk_loads_no_part_of_the_engine() -> None:
    """A program that only talks to a server needs no store, runner, Starlette or SQLite."""
    engine = ("server.runs", "server.store", "server.api", "server.app", "server.client.local")
    code = (
        "import sys, server.client\n"
        f"print(sorted(m for m in sys.modules if m.startswith({engine!r})"
        " or m.split('.')[0] in ('starlette', 'aiosqlite', 'uvicorn', 'sqlite3')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
