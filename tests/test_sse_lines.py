"""An SSE stream's lines end at CRLF, LF or CR only: text that JSON carries unescaped (U+2028,
U+0085, as msgspec writes them) stays inside its line, in every reader of ours."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import httpx
import pytest

from server.cli.chat import Client
from server.providers.http import SseLines, sse_lines_sync
from tests.conftest import scripted_agent
from tests.live import ThreadServer
from tests.sse import events

STREAM = 'event: a\r\ndata: {"t":"x\u2028y\u0085z"}\r\n\r\nid: 2\rdata: two\r\rdata: 3\n\n'
LINES = ["event: a", 'data: {"t":"x\u2028y\u0085z"}', "", "id: 2", "data: two", "", "data: 3", ""]


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_lines_end_only_at_crlf_lf_or_cr_wherever_the_text_is_cut(cut: int) -> None:
    assert list(sse_lines_sync([STREAM[:cut], "", STREAM[cut:]])) == LINES


def test_a_stream_cut_into_single_characters() -> None:
    lines = SseLines()
    got = list(itertools.chain.from_iterable(lines.feed(ch) for ch in STREAM))
    assert got + lines.close() == LINES


def test_our_readers_keep_a_reply_with_line_separators_whole(
    live: ThreadServer, tmp_path: Path
) -> None:
    reply = "one\u2028two\u0085three"
    agent = scripted_agent([{"text": reply}], name="separators")
    agent_id = httpx.post(f"{live.url}/agents", json=agent).json()["id"]
    sid = httpx.post(f"{live.url}/sessions", json={"agent_id": agent_id}).json()["id"]

    async def tests_reader() -> str:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{live.url}/sessions/{sid}/message/stream"
            async with http.stream("POST", path, json={"message": "hi"}) as response:
                texts = [e.json["text"] async for e in events(response) if e.event == "text_delta"]
        return "".join(texts)

    assert asyncio.run(tests_reader()) == reply
    client = Client(live.url)
    try:
        with client.stream(f"/sessions/{sid}/message/stream", {"message": "again"}) as stream:
            kinds = [(e.event, e.data) for e in stream]
    finally:
        client.close()
    deltas = [data for kind, data in kinds if kind == "text_delta"]
    assert "".join(json.loads(d)["text"] for d in deltas) == reply
