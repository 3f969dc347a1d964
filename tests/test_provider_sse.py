"""The one SSE reader (server/providers/sse.py): the WHATWG parsing rules, and lines that end
at CRLF, LF or CR only, so that text JSON carries unescaped (U+2028, U+0085, as msgspec writes
them) stays inside its line, in every reader of ours."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx
import pytest

from server.client import Client
from server.events import TextDelta
from server.providers.sse import SseEvent, SseLines, SseParser, sse_events_sync
from tests.conftest import scripted_agent
from tests.live import ThreadServer
from tests.sse import events

STREAM = 'event: a\r\ndata: {"t":"x\u2028y\u0085z"}\r\n\r\nid: 2\rdata: two\r\rdata: 3\n\n'
LINES = ["event: a", 'data: {"t":"x\u2028y\u0085z"}', "", "id: 2", "data: two", "", "data: 3", ""]
EVENTS = [
    SseEvent("a", '{"t":"x\u2028y\u0085z"}'),
    SseEvent("message", "two", "2", "2"),
    SseEvent("message", "3", None, "2"),
]


def parse(text: str) -> list[SseEvent]:
    return list(sse_events_sync([text]))


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_lines_end_only_at_crlf_lf_or_cr_wherever_the_text_is_cut(cut: int) -> None:
    lines = SseLines()
    assert lines.feed(STREAM[:cut]) + lines.feed("") + lines.feed(STREAM[cut:]) == LINES
    assert list(sse_events_sync([STREAM[:cut], "", STREAM[cut:]])) == EVENTS


def test_a_stream_cut_into_single_characters() -> None:
    lines, parser = SseLines(), SseParser()
    assert list(itertools.chain.from_iterable(lines.feed(ch) for ch in STREAM)) == LINES
    assert list(itertools.chain.from_iterable(parser.feed(ch) for ch in STREAM)) == EVENTS


@pytest.mark.parametrize("pieces", [["\ufeffdata: a\n\n"], ["", "\ufeff", "data: a\n\n"]])
def test_a_byte_order_mark_opening_the_stream_is_dropped(pieces: list[str]) -> None:
    assert list(sse_events_sync(pieces)) == [SseEvent(data="a")]


def test_a_byte_order_mark_later_is_text() -> None:
    """Only the stream's first character may be the mark: later, it is part of a field name."""
    assert parse("data: a\n\n\ufeffdata: b\n\n") == [SseEvent(data="a"), SseEvent(dispatched=False)]
    assert parse("data: \ufeffc\n\n") == [SseEvent(data="\ufeffc")]


def test_data_lines_join_with_line_feeds() -> None:
    got = parse("data: one\ndata:two\ndata:  three\ndata\ndata:\n\ndata:\n\n")
    assert got == [SseEvent(data="one\ntwo\n three\n\n"), SseEvent(data="")]


def test_the_last_event_id_persists_and_each_block_keeps_its_own() -> None:
    got = parse("id: 1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n")
    assert [(e.id, e.last_id) for e in got] == [("1", "1"), (None, "1"), (None, "1"), ("", "")]


def test_retry_takes_ascii_digits_only() -> None:
    got = parse("retry: 1500\n\nretry: 15x\n\nretry: \u00b2\n\nretry: 20\ndata: a\n\n")
    assert [(e.retry, e.dispatched) for e in got] == [
        (1500, False),
        (None, False),
        (None, False),
        (20, True),
    ]


def test_comments_are_reported_and_end_no_event() -> None:
    got = parse(": keep-alive\n\ndata: a\n:\ndata: b\n\n")
    assert got == [
        SseEvent("", comment="keep-alive", dispatched=False),
        SseEvent("", comment="", dispatched=False),
        SseEvent(data="a\nb"),
    ]


def test_event_types_and_blocks_without_data() -> None:
    got = parse("event: x\n\nevent:\ndata: a\n\nevent: y\ndata: b\nunknown: c\n\n")
    assert got == [SseEvent("x", dispatched=False), SseEvent(data="a"), SseEvent("y", "b")]


def test_an_event_the_stream_does_not_end_is_dropped() -> None:
    assert parse("data: a\n\ndata: b\n") == [SseEvent(data="a")]
    assert parse("data: a\n\ndata: b") == [SseEvent(data="a")]


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
    with Client(live.url) as client:  # the SDK's reader (sessiond chat's)
        texts = [e.text for e in client.stream(sid, "again") if isinstance(e, TextDelta)]
    assert "".join(texts) == reply
