"""A run's limits: an upstream that sends only pings, one that never stops writing, a run
past its deadline; each ends `failed` naming its limit, with a history that can be exported
and imported again. And tool call ids an upstream repeats are made unique as they are stored.

The server runs in a thread; the provider doubles (tests/upstream.py) speak each API's exact
SSE format over loopback. Nothing sleeps waiting for something: a blocking message returns
when its run has ended (with a generous client timeout)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import config
from server.cli.commands import build_parser
from server.errors import RunLimit
from server.events import ContentBlockStart, TextDelta
from server.loop import BLOCK_FRAMING, TEXT_FRAMING, Accumulator
from server.models import TextBlock
from tests.conftest import app_client, make_settings, scripted_agent
from tests.live import ThreadServer
from tests.upstream import (
    ANTHROPIC_PING,
    OPENAI_KEEP_ALIVE,
    Reply,
    Upstream,
    anthropic_sse,
    openai_sse,
)

KEY = "sk-test-not-a-real-key-123456"
WAIT_S = 60.0  # a client's patience: far beyond what any limit below needs


def anthropic_start() -> list[bytes]:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    return anthropic_sse({"type": "message_start", "message": message})


def anthropic_text_delta(text: str) -> bytes:
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    [frame] = anthropic_sse(delta)
    return frame


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


def ping_only(provider: str) -> Reply:
    """A 200 stream that stays alive on pings alone, as an overloaded upstream may."""
    if provider == "anthropic":
        return Reply(chunks=anthropic_start(), forever=ANTHROPIC_PING, delay_s=0.02)
    return Reply(forever=OPENAI_KEEP_ALIVE, delay_s=0.02)


def endless_text(provider: str) -> Reply:
    """A 200 stream whose text never ends."""
    if provider == "anthropic":
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
        block["content_block"]["text"] = ""
        return Reply(
            chunks=[*anthropic_start(), *anthropic_sse(block)],
            forever=anthropic_text_delta("lorem ipsum "),
        )
    [frame] = openai_sse(chunk({"content": "lorem ipsum "}), done=False)
    return Reply(chunks=openai_sse(chunk({"role": "assistant"}), done=False), forever=frame)


async def make_session(http: httpx.AsyncClient, url: str, agent: dict[str, Any]) -> str:
    created = await http.post(f"{url}/agents", json=agent)
    assert created.status_code == 201, created.text
    made = await http.post(f"{url}/sessions", json={"agent_id": created.json()["id"]})
    return str(made.json()["id"])


async def check_round_trip(http: httpx.AsyncClient, url: str, sid: str) -> list[dict[str, Any]]:
    """The session's history is one sessiond's own import takes back."""
    exported = await http.get(f"{url}/sessions/{sid}/export")
    assert exported.status_code == 200, exported.text
    imported = await http.post(
        f"{url}/sessions/import",
        content=exported.content,
        headers={"content-type": "application/json"},
    )
    assert imported.status_code == 201, imported.text
    messages: list[dict[str, Any]] = exported.json()["messages"]
    return messages


AGENT_KEY_ENV = "LIMITS_TEST_AGENT_KEY"  # the double is no operator endpoint: a key of its own


def remote_agent(provider: str, upstream: Upstream) -> dict[str, Any]:
    base = upstream.url if provider == "anthropic" else f"{upstream.url}/v1"
    options = {"base_url": base, "api_key_env": AGENT_KEY_ENV}
    return {"name": f"{provider}-limits", "provider": provider, "options": options}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_ping_only_upstream_ends_at_the_idle_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    monkeypatch.setenv(AGENT_KEY_ENV, KEY)
    settings = make_settings(tmp_path, provider_idle_timeout_s=0.3, agent_key_env=[AGENT_KEY_ENV])
    server = ThreadServer(settings).start()

    async def go() -> None:
        async with Upstream() as upstream, httpx.AsyncClient(timeout=WAIT_S) as http:
            upstream.enqueue(ping_only(provider))
            sid = await make_session(http, server.url, remote_agent(provider, upstream))
            sent = await http.post(f"{server.url}/sessions/{sid}/message", json={"message": "hi"})
            assert sent.status_code == 502, sent.text
            error = sent.json()["error"]
            assert error["type"] == "provider_error"
            assert "provider_idle_timeout_s" in error["message"], error
            assert "only pings" in error["message"]
            run = (await http.get(f"{server.url}/sessions/{sid}/runs/{error['run_id']}")).json()
            assert run["status"] == "failed"
            assert run["error"] == {"type": "provider_error", "message": error["message"]}
            await asyncio.wait_for(upstream.requests[0].closed.wait(), WAIT_S)
            assert len(upstream.requests) == 1  # a stream that began is not retried
            messages = await check_round_trip(http, server.url, sid)
            assert [m["role"] for m in messages] == ["user"]

    try:
        asyncio.run(go())
    finally:
        server.stop()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_endless_text_ends_at_the_step_output_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    cap = 64 * 1024
    monkeypatch.setenv(AGENT_KEY_ENV, KEY)
    settings = make_settings(tmp_path, max_step_output_bytes=cap, agent_key_env=[AGENT_KEY_ENV])
    server = ThreadServer(settings).start()
    run_id = ""

    async def go() -> None:
        nonlocal run_id
        async with Upstream() as upstream, httpx.AsyncClient(timeout=WAIT_S) as http:
            upstream.enqueue(endless_text(provider))
            sid = await make_session(http, server.url, remote_agent(provider, upstream))
            sent = await http.post(f"{server.url}/sessions/{sid}/message", json={"message": "hi"})
            assert sent.status_code == 502, sent.text
            error = sent.json()["error"]
            assert error["type"] == "run_limit"
            assert f"over {cap} bytes (max_step_output_bytes)" in error["message"], error
            run_id = error["run_id"]
            run = (await http.get(f"{server.url}/sessions/{sid}/runs/{run_id}")).json()
            assert run["status"] == "failed" and run["error"]["type"] == "run_limit"
            await asyncio.wait_for(upstream.requests[0].closed.wait(), WAIT_S)
            messages = await check_round_trip(http, server.url, sid)
            stored = sum(
                len(block.get("text", "").encode())
                for m in messages
                if m["role"] == "assistant"
                for block in m["content"]
            )
            assert stored <= cap
            events = await http.get(f"{server.url}/sessions/{sid}/runs/{run_id}/events")
            assert events.status_code == 200
            assert b"max_step_output_bytes" in events.content  # the `error` event names it

    try:
        asyncio.run(go())
    finally:
        server.stop()
    # What the database keeps of the run's stream stays within the cap (plus the few
    # events around the text: message_start, error, done).
    conn = sqlite3.connect(tmp_path / "sessiond.db")
    try:
        [(logged,)] = conn.execute(
            "SELECT coalesce(sum(length(data) + length(types)), 0) FROM events WHERE run_id = ?",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()
    assert 0 < logged <= cap + 4096


def paced(words: int) -> dict[str, Any]:
    return {"text": "tick " * words}


def test_a_run_past_its_deadline_ends_failed_with_a_valid_history(tmp_path: Path) -> None:
    """A tool step, then a reply paced far beyond the agent's max_run_seconds."""
    (tmp_path / "a.txt").write_text("x")
    server = ThreadServer(make_settings(tmp_path)).start()
    script = [{"tool_calls": [{"name": "list_files", "input": {"path": "."}}]}, paced(4000)]

    async def go() -> None:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            agent = scripted_agent(
                script,
                name="slow",
                tools=["list_files"],
                max_run_seconds=0.5,
                options={"token_delay_ms": 20},
            )
            created = await http.post(f"{server.url}/agents", json=agent)
            assert created.status_code == 201, created.text
            assert created.json()["max_run_seconds"] == 0.5
            body = {"agent_id": created.json()["id"], "work_dir": str(tmp_path)}
            sid = (await http.post(f"{server.url}/sessions", json=body)).json()["id"]
            sent = await http.post(f"{server.url}/sessions/{sid}/message", json={"message": "go"})
            assert sent.status_code == 502, sent.text
            error = sent.json()["error"]
            assert error["type"] == "run_limit"
            assert "deadline of 0.5 s (max_run_seconds" in error["message"], error
            run = (await http.get(f"{server.url}/sessions/{sid}/runs/{error['run_id']}")).json()
            assert run["status"] == "failed" and run["error"]["type"] == "run_limit"
            session = (await http.get(f"{server.url}/sessions/{sid}")).json()
            assert session["status"] == "failed"
            messages = await check_round_trip(http, server.url, sid)
            roles = [m["role"] for m in messages]
            assert roles in (["user"], ["user", "assistant", "user"])  # the tool step, if done
            # the session takes a new message: nothing of the failed run is left in the way
            again = await http.post(f"{server.url}/sessions/{sid}/runs", json={"message": "x"})
            assert again.status_code in (200, 201, 202), again.text

    try:
        asyncio.run(go())
    finally:
        server.stop()


def test_the_deadline_is_clamped_to_the_ceiling_and_validated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, run_max_seconds=30.0, run_max_seconds_ceiling=0.5)
    server = ThreadServer(settings).start()

    async def go() -> None:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            for bad in (0, -1, "soon"):
                agent = scripted_agent([paced(10)], name=f"bad{bad}", max_run_seconds=bad)
                refused = await http.post(f"{server.url}/agents", json=agent)
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"]["type"] == "invalid_request"
            agent = scripted_agent(
                [paced(4000)], name="long", max_run_seconds=1e6, options={"token_delay_ms": 20}
            )
            created = (await http.post(f"{server.url}/agents", json=agent)).json()
            assert created["max_run_seconds"] == 1e6  # stored as asked, clamped when run
            put = await http.put(f"{server.url}/agents/{created['id']}", json={"max_tokens": 9})
            assert put.json()["max_run_seconds"] == 1e6
            sid = await http.post(f"{server.url}/sessions", json={"agent_id": created["id"]})
            url = f"{server.url}/sessions/{sid.json()['id']}/message"
            sent = await http.post(url, json={"message": "go"})
            assert sent.status_code == 502, sent.text
            assert "deadline of 0.5 s" in sent.json()["error"]["message"]
            cleared = await http.put(
                f"{server.url}/agents/{created['id']}", json={"max_run_seconds": None}
            )
            assert cleared.status_code == 200 and cleared.json()["max_run_seconds"] is None

    try:
        asyncio.run(go())
    finally:
        server.stop()


WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "executor": "client",
}


WEATHER_CALL = {"name": "get_weather", "input": {"city": "Oslo"}}


class MovedLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock a test moves on: the time it reads (a run's deadline, the
    time a run was driven) passes without the test waiting for it."""

    moved = 0.0

    def time(self) -> float:
        return super().time() + self.moved


def test_time_paused_for_a_client_tool_does_not_count(tmp_path: Path) -> None:
    """A run paused for longer than its deadline still goes on when the results come."""
    deadline_s = 30.0  # far beyond what the run is driven for, however busy the machine
    script = [{"tool_calls": [WEATHER_CALL]}, paced(3)]

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = scripted_agent(
                script, name="pausing", tools=[WEATHER], max_run_seconds=deadline_s
            )
            sid = await make_session(http, "", agent)
            base = f"/sessions/{sid}"
            paused = (await http.post(f"{base}/message", json={"message": "weather?"})).json()
            assert paused["status"] == "requires_action", paused
            # The pause itself is what is tested: it outlasts the deadline, on the loop's clock.
            loop = asyncio.get_running_loop()
            assert isinstance(loop, MovedLoop)
            loop.moved += deadline_s * 1.5
            [call] = paused["pending_tool_calls"]
            answer = {"results": [{"tool_use_id": call["id"], "content": "snow"}]}
            url = f"{base}/runs/{paused['run_id']}/tool_results?wait=true"
            done = await http.post(url, json=answer)
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "completed"

    with asyncio.Runner(loop_factory=MovedLoop) as runner:
        runner.run(go())


def test_a_resumed_run_goes_on_with_what_is_left_of_its_deadline(tmp_path: Path) -> None:
    """The time a run was driven before it paused is kept: resumed by a server whose ceiling
    is below that time, the run is past its deadline at once."""
    script = [
        {"text": "one two three four five six seven eight nine ten", "tool_calls": [WEATHER_CALL]},
        {"text": "It snows."},
    ]
    agent = scripted_agent(
        script, name="resumed", tools=[WEATHER], options={"token_delay_ms": 50}
    )  # the first step streams ten words, 50 ms apart: at least 0.5 s driven
    server = ThreadServer(make_settings(tmp_path)).start()
    try:
        sid = asyncio.run(_session_of(server.url, agent))
        base = f"{server.url}/sessions/{sid}"
        paused = httpx.post(f"{base}/message", json={"message": "weather?"}, timeout=WAIT_S).json()
        assert paused["status"] == "requires_action", paused
    finally:
        server.stop()
    server = ThreadServer(make_settings(tmp_path, run_max_seconds_ceiling=0.25)).start()
    try:
        [call] = paused["pending_tool_calls"]
        answer = {"results": [{"tool_use_id": call["id"], "content": "snow"}]}
        url = f"{server.url}/sessions/{sid}/runs/{paused['run_id']}/tool_results?wait=true"
        done = httpx.post(url, json=answer, timeout=WAIT_S)
        assert done.status_code == 502, done.text
        error = done.json()["error"]
        assert error["type"] == "run_limit" and "deadline of 0.25 s" in error["message"]

        async def check() -> None:
            async with httpx.AsyncClient(timeout=WAIT_S) as http:
                messages = await check_round_trip(http, server.url, sid)
                assert [m["role"] for m in messages] == ["user", "assistant", "user"]

        asyncio.run(check())
    finally:
        server.stop()


async def _session_of(url: str, agent: dict[str, Any]) -> str:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        return await make_session(http, url, agent)


def openai_call(call_id: str, *more: str) -> list[bytes]:
    """One step calling list_files once per id, each as its own upstream tool index."""
    ids = [call_id, *more]
    opened = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": each,
                        "type": "function",
                        "function": {"name": "list_files", "arguments": json.dumps({"path": "."})},
                    }
                ]
            }
        )
        for i, each in enumerate(ids)
    ]
    return openai_sse(
        chunk({"role": "assistant", "content": None}), *opened, chunk({}, "tool_calls")
    )


def test_repeated_tool_call_ids_are_stored_unique(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream numbering its calls afresh: call_1 in one step, call_1 twice in the next."""
    monkeypatch.setenv(AGENT_KEY_ENV, KEY)
    (tmp_path / "a.txt").write_text("x")
    server = ThreadServer(make_settings(tmp_path, agent_key_env=[AGENT_KEY_ENV])).start()

    async def go() -> None:
        async with Upstream() as upstream, httpx.AsyncClient(timeout=WAIT_S) as http:
            text = openai_sse(chunk({"content": "done"}), chunk({}, "stop"))
            upstream.enqueue(
                Reply(chunks=openai_call("call_1")),
                Reply(chunks=openai_call("call_1", "call_1")),
                Reply(chunks=text),
            )
            agent = remote_agent("openai", upstream) | {"tools": ["list_files"]}
            created = (await http.post(f"{server.url}/agents", json=agent)).json()
            body = {"agent_id": created["id"], "work_dir": str(tmp_path)}
            sid = (await http.post(f"{server.url}/sessions", json=body)).json()["id"]
            sent = await http.post(f"{server.url}/sessions/{sid}/message", json={"message": "ls"})
            assert sent.status_code == 200, sent.text
            assert sent.json()["response"] == "done"
            messages = await check_round_trip(http, server.url, sid)
            uses = [b["id"] for m in messages for b in m["content"] if b["type"] == "tool_use"]
            results = [
                b["tool_use_id"]
                for m in messages
                for b in m["content"]
                if b["type"] == "tool_result"
            ]
            assert len(uses) == 3 and len(set(uses)) == 3 and uses[0] == "call_1"
            assert results == uses
            # the model is sent the same pairs: each call followed by its own result
            last = upstream.requests[2].body["messages"]
            sent_calls = [
                c["id"] for m in last if m["role"] == "assistant" for c in m["tool_calls"]
            ]
            sent_results = [m["tool_call_id"] for m in last if m["role"] == "tool"]
            assert sent_calls == uses and sent_results == uses
            # and the run's events name the ids as stored
            run_id = sent.json()["run_id"]
            events = await http.get(f"{server.url}/sessions/{sid}/runs/{run_id}/events")
            started = [
                json.loads(line[6:])
                for line in events.text.splitlines()
                if line.startswith("data: ") and '"content_block_start"' in line
            ]
            blocks = [e["content_block"] for e in started]
            assert [b["id"] for b in blocks if b["type"] == "tool_use"] == uses
            logged = [
                json.loads(line[6:])["tool_use_id"]
                for line in events.text.splitlines()
                if line.startswith("data: ") and '"type":"tool_result"' in line
            ]
            assert sorted(logged) == sorted(uses)

    try:
        asyncio.run(go())
    finally:
        server.stop()


def test_the_limits_are_settings_flags_and_environment(tmp_path: Path) -> None:
    flags = "serve --max-run-seconds 5 --max-run-seconds-ceiling 50 "
    flags += "--max-step-output-bytes 1024 --provider-idle-timeout 7.5"
    args = build_parser().parse_args(flags.split())
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    missing = str(tmp_path / "none.toml")
    settings = config.load(cli, env={}, config_file=missing)
    assert (settings.run_max_seconds, settings.run_max_seconds_ceiling) == (5.0, 50.0)
    assert (settings.max_step_output_bytes, settings.provider_idle_timeout_s) == (1024, 7.5)
    env = {"SESSIOND_PROVIDER_IDLE_TIMEOUT_S": "12"}
    assert config.load({}, env=env, config_file=missing).provider_idle_timeout_s == 12.0
    defaults = config.load({}, env={}, config_file=missing)
    assert defaults.run_max_seconds == 3600 and defaults.max_step_output_bytes == 8 * 1024**2
    for name in ("run_max_seconds", "max_step_output_bytes", "provider_idle_timeout_s"):
        with pytest.raises(ValueError, match=name):
            config.load({name: 0}, env={}, config_file=missing)


def test_a_step_is_counted_in_utf8_bytes_with_its_events_framing() -> None:
    room = BLOCK_FRAMING + TEXT_FRAMING + 5
    plain = Accumulator(room)
    plain.add(ContentBlockStart(0, TextBlock("")))
    plain.add(TextDelta("hello", 0))  # five bytes: exactly at the cap
    accented = Accumulator(room)
    accented.add(ContentBlockStart(0, TextBlock("")))
    with pytest.raises(RunLimit, match="max_step_output_bytes"):
        accented.add(TextDelta("héllo", 0))  # five characters, six bytes
