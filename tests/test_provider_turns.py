"""A full agent turn with tools through each real provider, blocking and streaming: the server
talks over loopback HTTP to a double speaking the upstream's exact wire format."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.live import ThreadServer
from tests.sse import collect, typed
from tests.upstream import Reply, Upstream, anthropic_sse, json_error, openai_sse

KEY = "sk-test-not-a-real-key-123456"


def words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def anthropic_text(text: str) -> list[bytes]:
    return anthropic_sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_2",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 40, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *[
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": word},
            }
            for word in words(text)
        ],
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    )


def anthropic_tool(path: str) -> list[bytes]:
    args = json.dumps({"path": path})
    return anthropic_sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 30, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "list_files",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        *[
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": args[i : i + 3]},
            }
            for i in range(0, len(args), 3)
        ],
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
        {"type": "message_stop"},
    )


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def openai_tool(path: str) -> list[bytes]:
    args = json.dumps({"path": path})
    first = {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "list_files", "arguments": ""},
            }
        ]
    }
    parts = [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 4]}}]})
        for i in range(0, len(args), 4)
    ]
    return openai_sse(
        chunk({"role": "assistant", "content": None}),
        chunk(first),
        *parts,
        chunk({}, "tool_calls"),
        usage_chunk(30, 12),
    )


def openai_text(text: str) -> list[bytes]:
    pieces = [chunk({"content": w}) for w in words(text)]
    return openai_sse(
        chunk({"role": "assistant", "content": ""}), *pieces, chunk({}, "stop"), usage_chunk(40, 7)
    )


PROVIDERS = {
    "anthropic": (anthropic_tool, anthropic_text, "ANTHROPIC_API_KEY"),
    "openai": (openai_tool, openai_text, "OPENAI_API_KEY"),
}


def operator_endpoint(tmp_path: Path, provider: str, url: str) -> Any:
    """Settings that make the double the operator's endpoint for `provider`: only such an
    endpoint gets the server's key."""
    return make_settings(tmp_path, provider_base_urls=[f"{provider}={url}"])


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_tool_turn_through_a_real_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str, mode: str
) -> None:
    tool_reply, text_reply, key_env = PROVIDERS[provider]
    monkeypatch.setenv(key_env, KEY)
    (tmp_path / "a.txt").write_text("x")

    async def go() -> None:
        async with Upstream() as upstream, httpx.AsyncClient(timeout=30) as http:
            server = ThreadServer(operator_endpoint(tmp_path, provider, upstream.url)).start()
            try:
                upstream.enqueue(Reply(200, tool_reply(".")), Reply(200, text_reply("Found a.txt")))
                agent = {
                    "name": "real",
                    "provider": provider,
                    "model": "m",
                    "system": "Be brief.",
                    "tools": ["list_files"],
                    "options": {"base_url": upstream.url},
                }
                created = await http.post(f"{server.url}/agents", json=agent)
                assert created.status_code == 201, created.text
                session = {"agent_id": created.json()["id"], "work_dir": str(tmp_path)}
                sid = (await http.post(f"{server.url}/sessions", json=session)).json()["id"]
                body = {"message": "what is here?"}
                if mode == "blocking":
                    result = await http.post(f"{server.url}/sessions/{sid}/message", json=body)
                    assert result.status_code == 200, result.text
                    assert result.json()["response"] == "Found a.txt"
                    assert result.json()["usage"] == {"input_tokens": 70, "output_tokens": 19}
                else:
                    url = f"{server.url}/sessions/{sid}/message/stream"
                    async with http.stream("POST", url, json=body) as response:
                        got = typed(await collect(response))
                    texts = "".join(e.json["text"] for e in got if e.event == "text_delta")
                    assert texts == "Found a.txt"
                    assert got[-1].json["status"] == "completed"
                    assert "tool_result" in [e.event for e in got]
                second = upstream.requests[1]
                check_second_request(provider, second.body, second.headers)
                history = (await http.get(f"{server.url}/sessions/{sid}/messages")).json()["data"]
                assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
                assert history[1]["content"][0]["input"] == {"path": "."}
            finally:
                server.stop()

    asyncio.run(go())
    assert KEY.encode() not in (tmp_path / "sessiond.db").read_bytes()
    conn = sqlite3.connect(tmp_path / "sessiond.db")
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert KEY not in dump


def check_second_request(provider: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    messages = body["messages"]
    if provider == "anthropic":
        assert headers["x-api-key"] == KEY and headers["anthropic-version"]
        assert body["system"] == "Be brief." and body["stream"] is True
        assert body["tools"][0]["name"] == "list_files"
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[1]["content"][0] == {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "list_files",
            "input": {"path": "."},
        }
        result = messages[2]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
        assert "a.txt" in json.dumps(result["content"])
    else:
        assert headers["authorization"] == f"Bearer {KEY}"
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert body["stream_options"] == {"include_usage": True}
        assert body["tools"][0]["function"]["name"] == "list_files"
        call = messages[2]["tool_calls"][0]
        assert call["id"] == "call_1" and json.loads(call["function"]["arguments"]) == {"path": "."}
        assert messages[3]["role"] == "tool" and messages[3]["tool_call_id"] == "call_1"
        assert "a.txt" in messages[3]["content"]


def test_upstream_failure_is_a_provider_error_and_the_key_stays_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)

    async def go() -> None:
        async with Upstream() as upstream, httpx.AsyncClient(timeout=30) as http:
            server = ThreadServer(operator_endpoint(tmp_path, "anthropic", upstream.url)).start()
            try:
                upstream.enqueue(
                    json_error(401, "authentication_error", f"invalid x-api-key {KEY}")
                )
                agent = {
                    "name": "bad",
                    "provider": "anthropic",
                    "options": {"base_url": upstream.url},
                }
                agent_id = (await http.post(f"{server.url}/agents", json=agent)).json()["id"]
                sid = (
                    await http.post(f"{server.url}/sessions", json={"agent_id": agent_id})
                ).json()
                result = await http.post(
                    f"{server.url}/sessions/{sid['id']}/message", json={"message": "hi"}
                )
                assert result.status_code == 502
                error = result.json()["error"]
                assert error["type"] == "provider_error"
                assert "ANTHROPIC_API_KEY" in error["message"] and KEY not in result.text
                runs = (await http.get(f"{server.url}/sessions/{sid['id']}/runs")).text
                assert "failed" in runs and KEY not in runs
                default = (await http.get(f"{server.url}/agents/default")).json()
                assert default["provider"] == "anthropic" and KEY not in json.dumps(default)
            finally:
                server.stop()

    asyncio.run(go())


def test_the_default_agent_takes_the_default_model_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local OpenAI-compatible server (no key, OPENAI_BASE_URL) serves its own models."""
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)

    async def go() -> None:
        async with Upstream() as upstream, httpx.AsyncClient(timeout=30) as http:
            monkeypatch.setenv("OPENAI_BASE_URL", f"{upstream.url}/v1")
            settings = make_settings(tmp_path, default_model="llama3.2")
            server = ThreadServer(settings).start()
            try:
                upstream.enqueue(Reply(200, openai_text("hello from llama")))
                default = (await http.get(f"{server.url}/agents/default")).json()
                assert (default["provider"], default["model"]) == ("openai", "llama3.2")
                sid = (await http.post(f"{server.url}/sessions", json={})).json()["id"]
                sent = await http.post(
                    f"{server.url}/sessions/{sid}/message", json={"message": "hi"}
                )
                assert sent.status_code == 200, sent.text
                assert sent.json()["response"] == "hello from llama"
                assert upstream.requests[0].body["model"] == "llama3.2"
            finally:
                server.stop()
            server = ThreadServer(make_settings(tmp_path)).start()  # the setting dropped
            try:
                default = (await http.get(f"{server.url}/agents/default")).json()
                assert default["model"] == "gpt-4o-mini"
            finally:
                server.stop()

    asyncio.run(go())
