"""POST /v1/messages and /v1/messages/count_tokens through the official `anthropic` SDK,
pointed at a real server on loopback: the SDK's own parsers read every answer and event."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message

from server.api.keys import issue
from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer
from tests.spec import Spec
from tests.test_provider_turns import KEY, anthropic_text, operator_endpoint
from tests.upstream import Reply, Upstream
from tests.waiting import wait_until

SESSION = "sessiond-session-id"
LOOK = [
    {"text": "Let me look.", "tool_calls": [{"name": "list_files", "input": {"path": "."}}]},
    {"text": "I see a.txt."},
]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class Live(ThreadServer):
    """The server, and the SDK clients made for it (closed with it)."""

    clients: list[anthropic.Anthropic]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Live]:
    (tmp_path / "a.txt").write_text("x")
    live = Live(make_settings(tmp_path, ping_s=1.0)).start()
    live.clients = []
    try:
        yield live
    finally:
        for made in live.clients:
            made.close()
        live.stop()


def client(server: Live, **headers: str) -> anthropic.Anthropic:
    made = anthropic.Anthropic(
        base_url=server.url, api_key="unused", max_retries=0, default_headers=headers
    )
    server.clients.append(made)
    return made


def agent(server: Live, name: str, script: list[Any], **extra: Any) -> str:
    created = httpx.post(f"{server.url}/agents", json=scripted_agent(script, name=name, **extra))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def session(server: Live, agent_id: str, name: str, work_dir: Path) -> str:
    body = {"agent_id": agent_id, "name": name, "work_dir": str(work_dir)}
    made = httpx.post(f"{server.url}/sessions", json=body)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def history(server: Live, sid: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(f"{server.url}/sessions/{sid}/messages").json()["data"]
    return data


def shape(content: list[Any]) -> list[tuple[Any, ...]]:
    """Blocks without their ids (each run gives its tool calls new ones)."""
    found = []
    for block in content:
        d = block.to_dict()
        found.append((d["type"], d.get("name"), d.get("input"), d.get("text"), d.get("content")))
    return found


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_blocking_turn(server: Live) -> None:
    agent(server, "greeter", [{"text": "Hello there, friend."}])
    raw = client(server).messages.with_raw_response.create(
        model="greeter", max_tokens=100, messages=user("hi"), metadata={"user_id": "u-1"}
    )
    message = raw.parse()
    assert isinstance(message, Message)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello there, friend."  # type: ignore[union-attr]
    assert message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.model == "greeter" and message.id == raw.headers["sessiond-run-id"]
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    sid = raw.headers[SESSION]
    stored = history(server, sid)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    # without the header, every call is a new session
    again = client(server).messages.with_raw_response.create(
        model="greeter", max_tokens=100, messages=user("hi")
    )
    assert again.headers[SESSION] != sid


def test_streamed_turn_matches_the_blocking_one(server: Live) -> None:
    agent(server, "poet", [{"text": "Roses are red, violets are blue."}])
    blocking = client(server).messages.create(model="poet", max_tokens=50, messages=user("go"))
    kinds: list[str] = []
    with client(server).messages.stream(model="poet", max_tokens=50, messages=user("go")) as s:
        for event in s:
            kinds.append(event.type)
        final = s.get_final_message()
        assert s.response.headers[SESSION]
    assert shape(final.content) == shape(blocking.content)
    assert final.stop_reason == "end_turn" and final.usage == blocking.usage
    raw = [k for k in kinds if k != "text"]  # `text` is the helper's own, after each delta
    deltas = raw.count("content_block_delta")
    assert deltas == 6 and kinds.count("text") == 6
    assert raw == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    with client(server).messages.stream(model="poet", max_tokens=50, messages=user("go")) as s:
        assert "".join(s.text_stream) == "Roses are red, violets are blue."


def test_server_tool_calls_show_in_the_content(server: Live, tmp_path: Path) -> None:
    two = [
        {"name": "list_files", "input": {"path": "."}},
        {"name": "glob", "input": {"pattern": "*"}},
    ]
    script = [{"text": "Looking.", "tool_calls": two}, {"text": "I see a.txt."}]
    aid = agent(server, "looker", script, tools=["list_files", "glob"])
    session(server, aid, "look", tmp_path)
    sdk = client(server, **{SESSION: "look"})
    blocking = sdk.messages.create(model="looker", max_tokens=50, messages=user("what is here?"))
    kinds = [b.type for b in blocking.content]
    assert kinds == ["text", *["server_tool_use", "tool_result"] * 2, "text"]
    call, result = blocking.content[1], blocking.content[2]
    assert call.name == "list_files" and call.input == {"path": "."}  # type: ignore[union-attr]
    extra = result.to_dict()
    assert extra["tool_use_id"] == call.id and "a.txt" in extra["content"]  # type: ignore[union-attr]
    assert extra["is_error"] is False
    assert blocking.stop_reason == "end_turn"
    with sdk.messages.stream(model="looker", max_tokens=50, messages=user("and now?")) as s:
        final = s.get_final_message()
    assert shape(final.content) == shape(blocking.content)
    for message in (blocking, final):  # each result right after its call
        for before, block in zip(message.content, message.content[1:], strict=False):
            if block.type == "tool_result":
                assert block.to_dict()["tool_use_id"] == before.id  # type: ignore[union-attr]
    assert final.usage.input_tokens > blocking.usage.input_tokens  # it saw the first turn


def test_a_two_turn_conversation_sees_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)

    async def go() -> None:
        async with Upstream() as upstream:
            live = ThreadServer(operator_endpoint(tmp_path, "anthropic", upstream.url)).start()
            try:
                upstream.enqueue(
                    *(Reply(200, anthropic_text(t)) for t in ("One.", "Two.", "Three."))
                )
                spec = {"name": "real", "provider": "anthropic", "model": "m"}
                spec["options"] = {"base_url": upstream.url}  # type: ignore[assignment]
                async with httpx.AsyncClient() as http:
                    assert (await http.post(f"{live.url}/agents", json=spec)).status_code == 201
                sdk = anthropic.AsyncAnthropic(base_url=live.url, api_key="unused", max_retries=0)
                headers = {SESSION: "chat"}
                first = await sdk.messages.create(
                    model="real", max_tokens=20, messages=user("first?"), extra_headers=headers
                )
                async with sdk.messages.stream(
                    model="real", max_tokens=20, messages=user("second?"), extra_headers=headers
                ) as s:
                    second = await s.get_final_message()
                assert [b.text for b in (first.content + second.content)] == ["One.", "Two."]  # type: ignore[union-attr]
                sent = upstream.requests[1].body["messages"]
                assert [m["role"] for m in sent] == ["user", "assistant", "user"]
                assert sent[0]["content"][0]["text"] == "first?"
                assert sent[1]["content"][0]["text"] == "One."
                # the whole conversation sent again: its stored part is recognised
                whole = [
                    *user("first?"),
                    {"role": "assistant", "content": first.content},
                    *user("second?"),
                    {"role": "assistant", "content": second.content},
                    *user("third?"),
                ]
                third = await sdk.messages.create(
                    model="real", max_tokens=20, messages=whole, extra_headers=headers
                )
                assert third.content[0].text == "Three."  # type: ignore[union-attr]
                assert len(upstream.requests[2].body["messages"]) == 5
                # the anthropic provider's upstream counts tokens
                upstream.enqueue(Reply(200, [b'{"input_tokens": 321}']))
                counted = await sdk.messages.count_tokens(
                    model="real",
                    system="Be brief.",
                    messages=user("fourth?"),
                    extra_headers=headers,
                )
                assert counted.input_tokens == 321 and counted.to_dict()["estimated"] is False
                asked = upstream.requests[3]
                assert (
                    asked.path == "/v1/messages/count_tokens" and asked.headers["x-api-key"] == KEY
                )
                assert asked.body["system"] == "Be brief."
                assert "stream" not in asked.body and "max_tokens" not in asked.body
                assert len(asked.body["messages"]) == 7  # the stored history and the new turn
                upstream.enqueue(Reply(500, [b'{"error": {"type": "api_error", "message": "x"}}']))
                guessed = await sdk.messages.count_tokens(model="real", messages=user("fifth?"))
                assert guessed.to_dict()["estimated"] is True and guessed.input_tokens > 0
                await sdk.close()
            finally:
                live.stop()

    asyncio.run(go())


def test_the_whole_conversation_is_stored_once(server: Live) -> None:
    agent(server, "counter", [{"text": "Noted."}])
    sdk = client(server, **{SESSION: "once"})
    first = sdk.messages.create(model="counter", max_tokens=20, messages=user("one"))
    whole = [*user("one"), {"role": "assistant", "content": first.content}, *user("two")]
    raw = sdk.messages.with_raw_response.create(model="counter", max_tokens=20, messages=whole)
    stored = history(server, raw.headers[SESSION])
    assert [(m["role"], m["content"][0]["text"]) for m in stored] == [
        ("user", "one"),
        ("assistant", "Noted."),
        ("user", "two"),
        ("assistant", "Noted."),
    ]
    # without the header, a whole conversation seeds a new session with its history
    fresh = client(server).messages.with_raw_response.create(
        model="counter", max_tokens=20, messages=whole
    )
    seeded = history(server, fresh.headers[SESSION])
    assert [m["content"][0]["text"] for m in seeded] == ["one", "Noted.", "two", "Noted."]


def test_a_differing_prefix_is_a_conflict(server: Live) -> None:
    agent(server, "counter", [{"text": "Noted."}])
    sdk = client(server, **{SESSION: "fixed"})
    sdk.messages.create(model="counter", max_tokens=20, messages=user("one"))
    other = [*user("not one"), {"role": "assistant", "content": "Noted."}, *user("two")]
    with pytest.raises(anthropic.ConflictError) as caught:
        sdk.messages.create(model="counter", max_tokens=20, messages=other)
    error = caught.value
    assert error.status_code == 409 and error.type == "conflict"  # type: ignore[comparison-overlap]
    assert error.body["type"] == "error"  # type: ignore[index]
    sid = error.response.headers[SESSION]
    assert len(history(server, sid)) == 2  # nothing stored


def test_client_tool_round_trip(server: Live, tmp_path: Path) -> None:
    script = [
        {
            "text": "Checking.",
            "tool_calls": [
                {"name": "list_files", "input": {}},
                {"name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {"text": "It is sunny in Paris."},
    ]
    aid = agent(server, "weather", script, tools=["list_files"])
    session(server, aid, "trip", tmp_path)
    sdk = client(server, **{SESSION: "trip"})
    asked = sdk.messages.create(
        model="weather", max_tokens=50, messages=user("weather?"), tools=[WEATHER]
    )
    assert asked.stop_reason == "tool_use"
    assert [b.type for b in asked.content] == [
        "text",
        "server_tool_use",
        "tool_result",
        "tool_use",
    ]
    call = asked.content[-1]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}  # type: ignore[union-attr]
    answer = [
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],  # type: ignore[union-attr]
        }
    ]
    with sdk.messages.stream(model="weather", max_tokens=50, messages=answer, tools=[WEATHER]) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "It is sunny in Paris."  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.id == asked.id  # the same run, resumed
    run = httpx.get(f"{server.url}/sessions/trip/runs/{asked.id}").json()
    assert run["status"] == "completed" and run["steps"] == 2


def test_count_tokens(server: Live) -> None:
    agent(server, "counter", [{"text": "Noted."}])
    sdk = client(server)
    short = sdk.messages.count_tokens(model="counter", messages=user("hi"))
    long = sdk.messages.count_tokens(model="counter", messages=user("hi " * 400))
    assert 0 < short.input_tokens < long.input_tokens
    assert short.to_dict()["estimated"] is True


def test_errors_raise_the_sdk_exceptions(server: Live) -> None:
    fail = [{"error": {"type": "overloaded_error", "message": "too busy", "after_tokens": 1}}]
    agent(server, "flaky", fail)
    sdk = client(server)
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(model="nobody", max_tokens=5, messages=user("hi"))
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.create(model="flaky", max_tokens=5, messages=[])
    with pytest.raises(anthropic.BadRequestError):  # refused before any session is made
        sdk.messages.create(model="flaky", max_tokens=5, messages=user("  "))
    assert httpx.get(f"{server.url}/sessions").json()["data"] == []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model="flaky", max_tokens=5, messages=user("hi")) as s,
    ):
        s.get_final_message()
    assert "too busy" in str(caught.value)
    with pytest.raises(anthropic.APIStatusError) as blocking:
        sdk.messages.create(model="flaky", max_tokens=5, messages=user("hi"))
    assert blocking.value.status_code == 502


def test_answers_match_the_spec(server: Live, tmp_path: Path) -> None:
    spec = Spec()
    aid = agent(server, "looker", LOOK, tools=["list_files"])
    session(server, aid, "spec", tmp_path)
    url, path = f"{server.url}/v1/messages", "/v1/messages"
    headers = {SESSION: "spec"}
    body = {"model": "looker", "max_tokens": 50, "messages": user("what is here?")}
    with httpx.Client(timeout=30) as http:
        spec.check(http.post(url, json=body, headers=headers), path)
        streamed = http.post(url, json={**body, "stream": True}, headers=headers)
        frames = spec.check(streamed, path)
        assert frames[0].event == "message_start" and frames[-1].event == "message_stop"
        assert {"server_tool_use", "tool_result"} <= {
            f.data["content_block"]["type"] for f in frames if f.event == "content_block_start"
        }
        other = {
            **body,
            "messages": [*user("no"), {"role": "assistant", "content": "x"}, *user("y")],
        }
        conflict = http.post(url, json=other, headers=headers)
        assert conflict.status_code == 409
        spec.check(conflict, path)
        spec.check(http.post(url, json={**body, "model": "nobody"}), path)
        spec.check(http.post(url, json={"model": "looker"}), path)
        count = http.post(f"{url}/count_tokens", json={"model": "looker", "messages": user("x")})
        spec.check(count, "/v1/messages/count_tokens")


def test_the_readme_example_runs(server: Live) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    found = re.search(r"<!-- anthropic-example -->\n```python\n(.*?)```", readme, re.S)
    assert found, "README.md has no anthropic example"
    env = {**os.environ, "SESSIOND_URL": server.url}
    ran = subprocess.run(
        [sys.executable, "-c", found.group(1)], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].startswith('[echo] You said: "Hello!"')
    assert lines[1].startswith('[echo] You said: "And what did I say first?"')
    assert "input_tokens" in lines[2] and "estimated=True" in lines[3]


def test_a_stateless_client_answers_its_tools_with_the_whole_conversation(server: Live) -> None:
    script = [
        {"text": "Asking.", "tool_calls": [{"name": "get_weather", "input": {"city": "Oslo"}}]}
    ]
    agent(server, "asker", script)
    agent(server, "teller", [{"text": "Snow in Oslo."}])
    sdk = client(server)
    asked = sdk.messages.create(
        model="asker", max_tokens=50, messages=user("weather?"), tools=[WEATHER]
    )
    assert asked.stop_reason == "tool_use" and asked.content[-1].type == "tool_use"
    call_id = asked.content[-1].id  # type: ignore[union-attr]
    answer = {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": [{"type": "text", "text": "snow"}],
    }
    whole = [*user("weather?"), {"role": "assistant", "content": asked.content}]
    whole.append({"role": "user", "content": [answer]})
    raw = sdk.messages.with_raw_response.create(
        model="teller", max_tokens=50, messages=whole, tools=[WEATHER]
    )
    told = raw.parse()
    assert told.content[0].text == "Snow in Oslo." and told.stop_reason == "end_turn"  # type: ignore[union-attr]
    stored = history(server, raw.headers[SESSION])
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[2]["content"] == [
        {"type": "tool_result", "tool_use_id": call_id, "content": "snow", "is_error": False}
    ]


def make_key(server: Live, tenant: str) -> str:
    made = issue(server.app.state.store.keys, tenant, "write", tenant)
    assert server._server is not None and server._server.loop is not None
    return asyncio.run_coroutine_threadsafe(made, server._server.loop).result(30).key


def test_tenants_see_only_their_own(server: Live) -> None:
    acme, globex = make_key(server, "acme"), make_key(server, "globex")
    wait_until(lambda: httpx.get(f"{server.url}/sessions").status_code == 401, "auth to turn on")
    spec = scripted_agent([{"text": "Hi."}], name="helper")
    made = httpx.post(f"{server.url}/agents", json=spec, headers={"x-api-key": acme})
    assert made.status_code == 201, made.text

    def sdk(key: str, **headers: str) -> anthropic.Anthropic:
        made = anthropic.Anthropic(
            base_url=server.url, api_key=key, max_retries=0, default_headers=headers
        )
        server.clients.append(made)
        return made

    mine = sdk(acme, **{SESSION: "shared"}).messages.with_raw_response.create(
        model="helper", max_tokens=5, messages=user("hi")
    )
    sid = mine.headers[SESSION]
    with pytest.raises(anthropic.NotFoundError):  # another tenant's agent
        sdk(globex).messages.create(model="helper", max_tokens=5, messages=user("hi"))
    with pytest.raises(anthropic.NotFoundError):  # another tenant's session, by id
        sdk(globex, **{SESSION: sid}).messages.create(
            model="default", max_tokens=5, messages=user("hi")
        )
    theirs = sdk(globex, **{SESSION: "shared"}).messages.with_raw_response.create(
        model="default", max_tokens=5, messages=user("hi")
    )
    assert theirs.headers[SESSION] != sid  # a session of the same name, their own
    with pytest.raises(anthropic.AuthenticationError):
        sdk("sk-sd-not-a-key").messages.create(model="default", max_tokens=5, messages=user("x"))
