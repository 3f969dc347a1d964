"""Token budgets and compaction, end to end: a real server (uvicorn on loopback), a real
SQLite file, and the Anthropic provider talking to a loopback double whose requests are
read back. Summaries come from a `scripted` summary agent, so they are offline and known."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.session import SUMMARY_HEAD
from tests.conftest import make_settings
from tests.live import ThreadServer
from tests.spec import Spec
from tests.sse import collect, typed
from tests.upstream import Reply, Upstream, anthropic_sse, json_error

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

KEY = "sk-ant-test-compaction"
SUMMARY = "The user asked many questions about files; each was answered with a lookup."
WINDOW, BUDGET = 20_000, 16_000


def text_reply(text: str) -> list[bytes]:
    return anthropic_sse(
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 10}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 3},
        },
        {"type": "message_stop"},
    )


def history(rounds: int, session_id: str, started: str) -> list[dict[str, Any]]:
    """4 * `rounds` messages: a question, a tool call, its result, an answer."""
    out: list[dict[str, Any]] = []

    def add(role: str, content: list[dict[str, Any]]) -> None:
        out.append(
            {
                "id": f"01J{len(out):023d}",
                "session_id": session_id,
                "seq": len(out) + 1,
                "role": role,
                "content": content,
                "run_id": None,
                "created_at": started,
            }
        )

    for i in range(rounds):
        call = f"toolu_{i:06d}"
        add("user", [{"type": "text", "text": f"Question {i}: what is in file number {i}?"}])
        add(
            "assistant",
            [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": call, "name": "read_file", "input": {"path": f"{i}"}},
            ],
        )
        add("user", [{"type": "tool_result", "tool_use_id": call, "content": "x" * 120}])
        add("assistant", [{"type": "text", "text": f"File {i} holds 120 x characters."}])
    return out


async def seeded(http: httpx.AsyncClient, url: str, agent: dict[str, Any], rounds: int) -> str:
    """A session of the agent holding 4 * `rounds` stored messages (imported)."""
    made = await http.post(f"{url}/agents", json=agent)
    assert made.status_code == 201, made.text
    session = await http.post(f"{url}/sessions", json={"agent_id": made.json()["id"]})
    sid = session.json()["id"]
    export = (await http.get(f"{url}/sessions/{sid}/export")).json()
    await http.delete(f"{url}/sessions/{sid}")
    export["messages"] = history(rounds, sid, export["session"]["created_at"])
    export["session"]["message_count"] = len(export["messages"])
    imported = await http.post(f"{url}/sessions/import?keep_ids=true", json=export)
    assert imported.status_code in (200, 201), imported.text
    return sid


def agents(upstream: Upstream, **budget: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    summariser = {
        "name": "summariser",
        "provider": "scripted",
        "options": {"summary": SUMMARY},
    }
    main = {
        "name": "main",
        "provider": "anthropic",
        "model": "claude-test",
        "system": "Be brief.",
        "options": {"base_url": upstream.url},
        **budget,
    }
    return summariser, main


def server_for(tmp_path: Path, upstream: Upstream) -> ThreadServer:
    settings = make_settings(tmp_path, provider_base_urls=[f"anthropic={upstream.url}"])
    return ThreadServer(settings).start()


def check_paired(messages: list[dict[str, Any]]) -> None:
    """Every tool_use answered by a tool_result in the very next message, and no result
    without its call."""
    for i, message in enumerate(messages):
        blocks = message["content"] if isinstance(message["content"], list) else []
        calls = [b["id"] for b in blocks if b["type"] == "tool_use"]
        if calls:
            following = messages[i + 1]["content"]
            answered = {b["tool_use_id"] for b in following if b["type"] == "tool_result"}
            assert set(calls) <= answered, f"message {i}: calls {calls} not answered"
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if results:
            before = messages[i - 1]["content"] if i else []
            made = {b["id"] for b in before if b["type"] == "tool_use"}
            assert set(results) <= made, f"message {i}: results {results} answer nothing"


def last_text(message: dict[str, Any]) -> str:
    """The message's last block's text: the summary and a user message after it share a
    user turn (turns alternate), as two blocks."""
    content = message["content"]
    return content if isinstance(content, str) else str(content[-1].get("text"))


def as_text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b["type"] == "text")


def test_a_2000_message_session_passes_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)

    async def go() -> None:
        async with Upstream() as upstream, httpx.AsyncClient(timeout=60) as http:
            server = server_for(tmp_path, upstream)
            try:
                summariser, main = agents(upstream, context_window=WINDOW)
                made = await http.post(f"{server.url}/agents", json=summariser)
                main["summary_agent"] = made.json()["id"]
                sid = await seeded(http, server.url, main, 500)
                upstream.enqueue(Reply(200, text_reply("Done.")))
                url = f"{server.url}/sessions/{sid}/message/stream"
                body = {"message": "And now the new question."}
                async with http.stream("POST", url, json=body) as response:
                    got = typed(await collect(response))
                kinds = [e.event for e in got]
                assert kinds[0] == "compaction", kinds
                event = json.loads(got[0].data)
                spec = Spec()
                spec.validate(event, "#/components/schemas/RunEvent")
                assert event["reason"] == "budget"
                assert event["before"] > BUDGET > event["after"]
                assert got[-1].json["status"] == "completed"

                assert len(upstream.requests) == 1  # the summaries were the scripted agent's
                sent = upstream.requests[0].body
                assert sent["system"] == "Be brief."
                messages = sent["messages"]
                assert len(json.dumps(sent)) // 4 < BUDGET
                assert messages[0]["role"] == "user"
                assert as_text(messages[0]).startswith(SUMMARY_HEAD + SUMMARY)
                assert messages[-1]["role"] == "user"
                assert last_text(messages[-1]) == "And now the new question."
                assert len(messages) > 2  # recent turns kept whole, not only the new message
                check_paired(messages)

                # the whole history stays stored and listed, the summary a message of its own
                listed = await all_messages(http, server.url, sid)
                spec.validate({"data": listed, "next_cursor": None}, MESSAGE_PAGE)
                assert len(listed) == 2000 + 1 + 1 + 1  # the new message, the entry, the answer
                entry = next(m for m in listed if m["role"] == "compaction")
                assert entry["id"] == event["message_id"]
                assert entry["content"] == [{"type": "text", "text": SUMMARY}]
                assert entry["compaction"]["through_seq"] == event["through_seq"]
                assert entry["compaction"]["summary_agent_id"] == made.json()["id"]
                assert entry["seq"] == 2002  # after the run's user message
                first_kept = listed[event["through_seq"]]  # seq through_seq + 1
                assert all(b["type"] != "tool_result" for b in first_kept["content"])
                assert {m["tokens_source"] for m in listed} == {"estimate", "provider"}
                assert all(m["tokens"] > 0 for m in listed)
                answer = listed[-1]
                assert answer["role"] == "assistant"
                assert (answer["tokens"], answer["tokens_source"]) == (3, "provider")
                export = (await http.get(f"{server.url}/sessions/{sid}/export")).json()
                assert len(export["messages"]) == 2003
                metrics = (await http.get(f"{server.url}/metrics")).text
                assert 'sessiond_compactions_total{reason="budget"} 1.0' in metrics

                # the next turn is built from the entry and the turns after it
                upstream.enqueue(Reply(200, text_reply("Again.")))
                again = await http.post(
                    f"{server.url}/sessions/{sid}/message", json={"message": "One more."}
                )
                assert again.status_code == 200, again.text
                second = upstream.requests[1].body["messages"]
                assert as_text(second[0]).startswith(SUMMARY_HEAD + SUMMARY)
                assert last_text(second[-1]) == "One more."
                check_paired(second)
                # …and after a restart, read back from the database the same way
                server.restart()
                upstream.enqueue(Reply(200, text_reply("Still.")))
                third = await http.post(
                    f"{server.url}/sessions/{sid}/message", json={"message": "Last one."}
                )
                assert third.status_code == 200, third.text
                third_sent = upstream.requests[2].body["messages"]
                assert third_sent[: len(second)] == second  # the same, read from the database
                assert last_text(third_sent[-1]) == "Last one."
                check_paired(third_sent)
            finally:
                server.stop()

    asyncio.run(go())


async def all_messages(http: httpx.AsyncClient, url: str, sid: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = (await http.get(f"{url}/sessions/{sid}/messages", params=params)).json()
        out += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


MESSAGE_PAGE = "#/components/schemas/MessagePage"
TOO_LONG = "prompt is too long: 210000 tokens > 200000 maximum"


@pytest.mark.parametrize("refusals", [1, 2])
def test_context_too_long_compacts_once_and_asks_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusals: int
) -> None:
    """One refusal: one compaction, one retry, success. Two: still one compaction and one
    retry, then the run fails (never a loop)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)

    async def go() -> None:
        async with Upstream() as upstream, httpx.AsyncClient(timeout=60) as http:
            server = server_for(tmp_path, upstream)
            try:
                summariser, main = agents(upstream)  # the default window: no budget reached
                made = await http.post(f"{server.url}/agents", json=summariser)
                main["summary_agent"] = made.json()["id"]
                sid = await seeded(http, server.url, main, 10)
                upstream.enqueue(*[json_error(400, "invalid_request_error", TOO_LONG)] * refusals)
                upstream.enqueue(Reply(200, text_reply("Fine now.")))
                url = f"{server.url}/sessions/{sid}/message/stream"
                async with http.stream("POST", url, json={"message": "Go on."}) as response:
                    got = typed(await collect(response))
                compactions = [json.loads(e.data) for e in got if e.event == "compaction"]
                assert [c["reason"] for c in compactions] == ["context_too_long"]
                assert len(upstream.requests) == 2
                retried = upstream.requests[1].body["messages"]
                assert as_text(retried[0]).startswith(SUMMARY_HEAD + SUMMARY)
                assert last_text(retried[-1]) == "Go on."
                check_paired(retried)
                done = got[-1].json
                if refusals == 1:
                    assert done["status"] == "completed"
                    assert (
                        "".join(e.json["text"] for e in got if e.event == "text_delta")
                        == "Fine now."
                    )
                else:
                    assert done["status"] == "failed"
                    errors = [e.json for e in got if e.event == "error"]
                    assert "prompt is too long" in errors[0]["error"]["message"]
                listed = await all_messages(http, server.url, sid)
                assert [m["role"] for m in listed].count("compaction") == 1
            finally:
                server.stop()

    asyncio.run(go())


def test_compact_on_demand_and_its_refusals(tmp_path: Path) -> None:
    """POST /sessions/{id}/compact: 200 with the entry (scripted summary, offline); 409 when
    there is nothing left to summarise; 404 for another's session."""

    async def go() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            server = ThreadServer(make_settings(tmp_path)).start()
            try:
                agent = {"name": "s", "provider": "scripted", "options": {"summary": SUMMARY}}
                sid = await seeded(http, server.url, agent, 5)
                answer = await http.post(f"{server.url}/sessions/{sid}/compact")
                assert answer.status_code == 200, answer.text
                spec = Spec()
                spec.check(answer, "/sessions/{session_id}/compact")
                entry = answer.json()
                assert entry["role"] == "compaction"
                assert entry["content"] == [{"type": "text", "text": SUMMARY}]
                info = entry["compaction"]
                # the latest user message (seq 17) and what follows are kept
                assert info["through_seq"] == 16
                assert info["summarised"] == 16
                assert info["tokens_after"] < info["tokens_before"]
                again = await http.post(f"{server.url}/sessions/{sid}/compact")
                assert again.status_code == 409, again.text
                spec.check(again, "/sessions/{session_id}/compact")
                assert again.json()["error"]["type"] == "conflict"
                missing = await http.post(
                    f"{server.url}/sessions/01J0000000000000000000000X/compact"
                )
                assert missing.status_code == 404
                # a run then sends the summary and the kept turns
                reply = await http.post(
                    f"{server.url}/sessions/{sid}/message", json={"message": "hello"}
                )
                assert reply.status_code == 200, reply.text
            finally:
                server.stop()

    asyncio.run(go())
