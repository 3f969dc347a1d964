"""The SSE wire form, alone."""

from __future__ import annotations

import json

from server import events
from server.events import Done, Error, MessageStart, Ping, StepInfo, TextDelta, ToolResult
from server.models import ErrorInfo, Usage


def test_frame_is_one_sse_block_with_id_event_and_data() -> None:
    data = events.encode(TextDelta('Hello \n"world"', 0))
    block = events.frame(7, "text_delta", data)
    assert block == (
        b'id: 7\nevent: text_delta\ndata: {"type":"text_delta","text":"Hello \\n\\"world\\"",'
        b'"index":0}\n\n'
    )
    assert block.count(b"\n") == 4  # no raw newline inside data


def test_every_event_carries_its_type_and_round_trips() -> None:
    samples = [
        TextDelta("x", 1),
        ToolResult("toolu_1", "list_files", "a\nb", False),
        Error(ErrorInfo("cancelled", "stop")),
        Done(Usage(3, 4), 2, "01RUN", "end_turn", "completed"),
        Ping(),
    ]
    for event in samples:
        data = events.encode(event)
        assert json.loads(data)["type"] == events.event_type(event)
        assert events.decode(data) == event


def test_session_channel_adds_run_id_once() -> None:
    delta = events.encode(TextDelta("x", 0))
    assert json.loads(events.with_run_id("text_delta", delta, "01R")) == {
        "run_id": "01R",
        "type": "text_delta",
        "text": "x",
        "index": 0,
    }
    done = events.encode(Done(Usage(), 1, "01R", None, "completed"))
    assert events.with_run_id("done", done, "01R") == done
    start = events.encode(MessageStart(StepInfo("m", 'a "run_id":"x" model'), run_id="01R"))
    assert events.with_run_id("message_start", start, "01R") == start
    assert start.count(b'"run_id"') == 1
    # a message_start logged before it carried its run id gets it on the session channel
    old = events.encode(MessageStart(StepInfo("m", None)))
    assert b"run_id" not in old
    assert json.loads(events.with_run_id("message_start", old, "01R"))["run_id"] == "01R"


def test_retry_and_ping_frames_have_no_id() -> None:
    assert events.retry_frame(3000) == b"retry: 3000\n\n"
    assert b"id:" not in events.PING_FRAME
    assert events.PING_FRAME.startswith(b"event: ping\ndata: ")


def test_frames_of_rows_are_their_frames_joined() -> None:
    data = events.encode(TextDelta("x", 0))
    rows = [("01R", 1, "text_delta", data), ("01R", 300, "done", b"{}")]
    assert events.frames(rows) == b"".join(events.frame(s, t, d) for _, s, t, d in rows)
    assert events.frames([]) == b""


def test_every_event_type_is_known_by_its_class() -> None:
    assert events.event_type(TextDelta("x", 0)) == "text_delta"
    assert events.event_type(Ping()) == "ping"
    assert len(set(events.TYPES.values())) == len(events.TYPES)
