"""/v1/responses driven by the official `openai` package against a real server on loopback.

The clients validate strictly (`_strict_response_validation`): every response and every
event must parse as the SDK's own models, or the call raises.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from server.api.keys import issue
from server.models import TextBlock
from server.runs.active import RunRequest
from tests.conftest import app_client, make_settings, scripted_agent
from tests.live import ThreadServer
from tests.upstream import Reply, Upstream
from tests.waiting import wait_until

TEXT = 'Hello "there", a naïve reply 😀 with a back\\slash\nand a new line.'
TOOL_SCRIPT = [
    {"text": "Let me look.", "tool_calls": [{"name": "list_files", "input": {"path": "."}}]},
    {"text": "I can see a.txt here."},
]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CLIENT_SCRIPT = [
    {"text": "Checking.", "tool_calls": [{"name": "get_weather", "input": {"city": "Paris"}}]},
    {"text": "It is sunny in Paris."},
]
STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{url}/v1", api_key=key, max_retries=0, _strict_response_validation=True
    )


def agent(url: str, name: str, script: list[Any], **extra: Any) -> str:
    made = httpx.post(f"{url}/agents", json=scripted_agent(script, name=name, **extra))
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


@pytest.fixture
def sdk(live: ThreadServer) -> Iterator[openai.OpenAI]:
    with client(live.url) as made:
        yield made


def kinds(events: list[Any]) -> list[str]:
    """Event types with each run of deltas folded into one."""
    folded: list[str] = []
    for event in events:
        if not (folded and folded[-1] == event.type and event.type.endswith(".delta")):
            folded.append(event.type)
    return folded


def test_a_blocking_turn(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent_id = agent(live.url, "talker", [{"text": TEXT}])
    response = sdk.responses.create(
        model="talker", input="hi", instructions="Be brief.", metadata={"ticket": "42"}
    )
    assert response.status == "completed" and response.object == "response"
    assert response.output_text == TEXT
    assert response.model == "talker" and response.metadata == {"ticket": "42"}
    assert response.instructions == "Be brief."
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    [message] = response.output
    assert message.type == "message" and message.status == "completed"
    assert response.conversation is not None
    session = httpx.get(f"{live.url}/sessions/{response.conversation.id}").json()
    assert session["agent_id"] == agent_id
    run = httpx.get(f"{live.url}/sessions/{session['id']}/runs/{response.id}").json()
    assert run["status"] == "completed"  # the response is that run
    again = sdk.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()
    # `model` also takes the agent's id; `default` is the built-in agent
    assert sdk.responses.create(model=agent_id, input="hi").output_text == TEXT
    assert sdk.responses.create(model="default", input="hi").status == "completed"


def test_instructions_reach_the_model(tmp_path: Path) -> None:
    async def go() -> None:
        async with Upstream() as upstream:
            server = ThreadServer(make_settings(tmp_path)).start()
            try:
                upstream.enqueue(Reply(200, openai_text("ok")))
                real = {"name": "real", "provider": "openai", "model": "m", "system": "Base."}
                real["options"] = {"base_url": upstream.url}
                assert httpx.post(f"{server.url}/agents", json=real).status_code == 201
                async with async_client(server.url) as sdk:
                    await sdk.responses.create(model="real", input="hi", instructions="Short.")
                [seen] = upstream.requests
                system = seen.body["messages"][0]
                assert system == {"role": "system", "content": "Base.\n\nShort."}
            finally:
                server.stop()

    asyncio.run(go())


def test_a_streamed_turn(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent(live.url, "streamer", [{"text": TEXT}])
    with sdk.responses.stream(model="streamer", input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert kinds(events) == STREAM_ORDER
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == TEXT and len(deltas) == len(TEXT.split())
    assert final.output_text == TEXT and final.status == "completed"
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    raw = list(sdk.responses.create(model="streamer", input="again", stream=True))
    assert kinds(raw) == STREAM_ORDER and raw[-1].response.output_text == TEXT
    # the stored response is the one the stream built
    assert sdk.responses.retrieve(raw[-1].response.id).model_dump() == raw[-1].response.model_dump()
    assert sdk.responses.retrieve(final.id).output_text == TEXT


def test_a_two_turn_conversation_sees_the_first_turn(tmp_path: Path) -> None:
    async def go() -> None:
        async with Upstream() as upstream:
            server = ThreadServer(make_settings(tmp_path)).start()
            try:
                upstream.enqueue(Reply(200, openai_text("Nice to meet you, Ada.")))
                upstream.enqueue(Reply(200, openai_text("Your name is Ada.")))
                upstream.enqueue(Reply(200, openai_text("Ada, still.")))
                real = {"name": "real", "provider": "openai", "model": "m"}
                real["options"] = {"base_url": upstream.url}
                assert httpx.post(f"{server.url}/agents", json=real).status_code == 201
                async with async_client(server.url) as sdk:
                    first = await sdk.responses.create(model="real", input="I am Ada.")
                    second = await sdk.responses.create(
                        model="real", input="What is my name?", previous_response_id=first.id
                    )
                    assert second.output_text == "Your name is Ada."
                    assert first.conversation and second.conversation
                    assert second.conversation.id == first.conversation.id
                    sent = upstream.requests[1].body["messages"]
                    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
                    assert sent[0]["content"] == "I am Ada."
                    assert sent[1]["content"] == "Nice to meet you, Ada."
                    # by conversation: the same session again
                    third = await sdk.responses.create(
                        model="real", input="Again?", conversation=first.conversation.id
                    )
                    assert third.conversation and third.conversation.id == first.conversation.id
                    assert len(upstream.requests[2].body["messages"]) == 5
            finally:
                server.stop()

    asyncio.run(go())


def test_previous_response_of_an_older_run_forks(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent(live.url, "forker", [{"text": TEXT}])
    first = sdk.responses.create(model="forker", input="one")
    second = sdk.responses.create(model="forker", input="two", previous_response_id=first.id)
    assert first.conversation and second.conversation
    source = first.conversation.id
    assert second.conversation.id == source
    branch = sdk.responses.create(model="forker", input="other", previous_response_id=first.id)
    assert branch.conversation is not None and branch.conversation.id != source
    fork = httpx.get(f"{live.url}/sessions/{branch.conversation.id}").json()
    assert fork["parent_id"] == source
    texts = [
        m["content"][0]["text"]
        for m in httpx.get(f"{live.url}/sessions/{fork['id']}/messages").json()["data"]
    ]
    assert texts == ["one", TEXT, "other", TEXT]  # up to the first response, then the new turn
    assert len(httpx.get(f"{live.url}/sessions/{source}/messages").json()["data"]) == 4


def test_a_server_run_tool_call_is_in_the_output(
    live: ThreadServer, sdk: openai.OpenAI, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("x")
    agent(live.url, "looker", TOOL_SCRIPT, tools=["list_files"])
    response = sdk.responses.create(
        model="looker", input="what is here?", extra_body={"work_dir": str(tmp_path)}
    )
    assert [item.type for item in response.output] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    call, result = response.output[1], response.output[2]
    assert call.type == "function_call" and result.type == "function_call_output"
    assert call.name == "list_files" and call.status == "completed"
    assert call.arguments == '{"path":"."}'
    assert result.call_id == call.call_id and "a.txt" in str(result.output)
    assert response.output_text == "Let me look.I can see a.txt here."
    with sdk.responses.stream(
        model="looker", input="again", conversation=response.conversation.id
    ) as stream:
        events = list(stream)
    types = kinds(events)
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    final = events[-1].response
    assert [item.type for item in final.output] == [item.type for item in response.output]


def test_a_client_tool_round_trip(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent(live.url, "asker", CLIENT_SCRIPT)
    first = sdk.responses.create(model="asker", input="weather?", tools=[WEATHER])
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["message", "function_call"]
    call = first.output[1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"Paris"}'
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"
    assert first.conversation is not None
    session = httpx.get(f"{live.url}/sessions/{first.conversation.id}").json()
    assert session["status"] == "requires_action"

    answer = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}]
    with sdk.responses.stream(
        model="asker", input=answer, previous_response_id=first.id, tools=[WEATHER]
    ) as stream:
        events = list(stream)
        second = stream.get_final_response()
    assert second.id != first.id and second.output_text == "It is sunny in Paris."
    assert [item.type for item in second.output] == ["message"]  # not the answered call again
    assert events[0].sequence_number == 0
    assert second.usage is not None and first.usage is not None
    assert plain(sdk.responses.retrieve(second.id)) == plain(second)
    assert sdk.responses.retrieve(first.id).model_dump() == first.model_dump()
    history = httpx.get(f"{live.url}/sessions/{session['id']}/messages").json()["data"]
    assert history[2]["content"][0]["content"] == "sunny, 21 C"
    run = httpx.get(f"{live.url}/sessions/{session['id']}/runs/{first.id}").json()
    assert run["status"] == "completed" and run["steps"] == 2  # one run, two responses
    # an answered call cannot be answered twice
    with pytest.raises(openai.ConflictError):
        sdk.responses.create(model="asker", input=answer, previous_response_id=first.id)


def test_client_tool_output_by_conversation(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent(live.url, "asker2", CLIENT_SCRIPT)
    first = sdk.responses.create(model="asker2", input="weather?", tools=[WEATHER])
    assert first.conversation is not None
    call = first.output[-1]
    assert call.type == "function_call"
    answer = [{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}]
    second = sdk.responses.create(
        model="asker2", input=answer, conversation=first.conversation.id, tools=[WEATHER]
    )
    assert second.output_text == "It is sunny in Paris." and second.id != first.id
    with pytest.raises(openai.ConflictError):  # nothing waits for an answer any more
        sdk.responses.create(model="asker2", input=answer, conversation=first.conversation.id)


def test_a_stream_resumed_with_starting_after(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent(live.url, "resumer", [{"text": TEXT}])
    everything = list(sdk.responses.create(model="resumer", input="hi", stream=True))
    response_id = everything[-1].response.id
    for after in (0, 3, len(everything) - 2):
        rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=after))
        assert [e.model_dump() for e in rest] == [e.model_dump() for e in everything[after + 1 :]]
    # the SDK's own helper asks for the whole stream and drops what it has
    with sdk.responses.stream(response_id=response_id, starting_after=4) as stream:
        helped = list(stream)
    assert [e.sequence_number for e in helped] == list(range(5, len(everything)))


def test_a_resumed_stream_follows_the_run_live(live: ThreadServer, sdk: openai.OpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    agent(live.url, "slow", [{"text": words}], options={"token_delay_ms": 10})
    started = sdk.responses.create(model="slow", input="hi", background=True)
    assert started.status == "queued" and started.output == []
    tail = list(sdk.responses.retrieve(started.id, stream=True, starting_after=2))
    assert tail[0].sequence_number == 3 and tail[-1].type == "response.completed"
    numbers = [e.sequence_number for e in tail]
    assert numbers == list(range(3, 3 + len(tail)))
    assert tail[-1].response.output_text == words
    assert sdk.responses.retrieve(started.id).status == "completed"


def test_cancel_a_background_response(live: ThreadServer, sdk: openai.OpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(2000))
    agent(live.url, "long", [{"text": words}], options={"token_delay_ms": 20})
    started = sdk.responses.create(model="long", input="go on", background=True)
    assert started.status == "queued"
    wait_until(
        lambda: sdk.responses.retrieve(started.id).status == "in_progress",
        "the background response to start",
    )
    cancelled = sdk.responses.cancel(started.id)
    assert cancelled.status == "cancelled" and cancelled.error is not None
    assert sdk.responses.retrieve(started.id).status == "cancelled"
    events = list(sdk.responses.retrieve(started.id, stream=True))
    assert events[-1].type == "response.failed" and events[-1].response.status == "cancelled"
    again = sdk.responses.cancel(started.id)  # a finished response stays as it is
    assert again.model_dump() == cancelled.model_dump()


def test_store_false_runs_without_storing(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent(live.url, "ghost", [{"text": TEXT}])
    before = httpx.get(f"{live.url}/sessions").json()["data"]
    response = sdk.responses.create(model="ghost", input="hi", store=False)
    assert response.output_text == TEXT and response.conversation is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    with sdk.responses.stream(model="ghost", input="hi", store=False) as stream:
        assert stream.get_final_response().output_text == TEXT
    assert httpx.get(f"{live.url}/sessions").json()["data"] == before


def test_errors_raise_the_sdks_exceptions(live: ThreadServer, sdk: openai.OpenAI) -> None:
    agent(live.url, "plain", [{"text": TEXT}])
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.responses.retrieve("01JAAAAAAAAAAAAAAAAAAAAAAA")
    assert missing.value.type == "not_found"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("not-an-id")
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="no-such-agent", input="hi")
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.responses.create(model="plain", input="")
    assert bad.value.type == "invalid_request" and bad.value.body["field"] == "input"
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="plain", input="hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="plain", input="hi", extra_body={"nonsense": 1})
    first = sdk.responses.create(model="plain", input="hi")
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(
            model="plain", input="hi", previous_response_id=first.id, conversation="x"
        )
    with pytest.raises(openai.BadRequestError):
        sdk.responses.retrieve(first.id, stream=True, starting_after=-1)


def test_keys_and_tenants(live: ThreadServer) -> None:
    agent(live.url, "kept", [{"text": TEXT}])
    store = live.app.state.store
    loop = live._server.loop if live._server else None
    assert loop is not None

    def made(name: str, tenant: str) -> str:
        future = asyncio.run_coroutine_threadsafe(
            issue(store.keys, name, "write", tenant=tenant), loop
        )
        return future.result(30).key

    ours, theirs = made("ours", "default"), made("theirs", "acme")
    wait_until(lambda: httpx.get(f"{live.url}/sessions").status_code == 401, "auth to turn on")
    with client(live.url) as anonymous, pytest.raises(openai.AuthenticationError):
        anonymous.responses.create(model="kept", input="hi")
    with client(live.url, ours) as mine, client(live.url, theirs) as other:
        response = mine.responses.create(model="kept", input="hi")
        assert response.output_text == TEXT
        with pytest.raises(openai.NotFoundError) as hidden:
            other.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError) as unknown:
            other.responses.retrieve("01JAAAAAAAAAAAAAAAAAAAAAAA")
        assert hidden.value.body == {
            "type": "not_found",
            "message": f"response {response.id!r} not found",
        }
        assert unknown.value.body["type"] == "not_found"
        with pytest.raises(openai.NotFoundError):
            other.responses.cancel(response.id)
        with pytest.raises(openai.NotFoundError):  # nor continue it
            other.responses.create(model="default", input="hi", previous_response_id=response.id)


# -- helpers ------------------------------------------------------------------------------
def plain(response: Any) -> Any:
    """A response as data, without what the SDK's stream helper adds (`parsed`)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "parsed"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(response.model_dump())


def async_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="none", max_retries=0, _strict_response_validation=True
    )


def openai_text(text: str) -> list[bytes]:
    """A Chat Completions stream of `text`, word by word, as an OpenAI-compatible server."""
    from tests.test_provider_turns import openai_text as chat_stream

    return chat_stream(text)


def test_the_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)  # the default agent is then `echo`
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    found = re.search(r"<!-- openai-example -->\n```python\n(.*?)```", readme, re.S)
    assert found is not None
    server = ThreadServer(make_settings(tmp_path)).start()
    try:
        code = found.group(1).replace("http://127.0.0.1:2323", server.url)
        exec(compile(code, "README.md", "exec"), {})
    finally:
        server.stop()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('[echo] You said: "My name is Ada."')
    assert lines[1] == "True" and lines[2].startswith('[echo] You said: "Say it again."')
    assert lines[3:] == ["queued", "completed"]


def test_a_run_with_no_persistence_is_followed_even_once_it_has_ended(tmp_path: Path) -> None:
    """A `store: false` stream opens its follower after the run has started; a quick run may
    have ended by then, with no event log to replay: the handle reads it from memory."""

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            runner, store = http.app.state.runner, http.app.state.store
            agent = await store.agents.get("default", None)
            handle = await runner.run_ephemeral(agent, None, [], RunRequest([TextBlock("hi")]))
            await handle.outcome()
            assert not runner.is_live(handle.id)
            rows = [row async for batch in handle.follow(0, 1.0) for row in batch]
            assert [row[1] for row in rows] == list(range(1, len(rows) + 1))
            assert rows[0][2] == "message_start" and rows[-1][2] == "done"

    asyncio.run(go())
