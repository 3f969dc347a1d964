"""The translation of a run's events into the Responses stream (api/response_stream.py),
alone: frames that parse, numbers that count, the same bytes however the rows are batched
or replayed, escapes kept."""

from __future__ import annotations

import json
from typing import Any

from server import events
from server.api.response_stream import Head, Translator, parse_response_id, response_id
from server.events import (
    ContentBlockStart,
    ContentBlockStop,
    Done,
    Error,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StepInfo,
    StopInfo,
    TextDelta,
    ToolResult,
)
from server.models import ErrorInfo, TextBlock, ToolUseBlock, Usage

RUN = "01JABCDEFGHJKMNPQRSTVWXYZ0"
PIECES = ['Say "hi"', " naïve\n", "back\\slash ", "😀\t", "\u2028end"]


def head() -> Head:
    return Head(RUN, 1_700_000_000, "agent", None, None, {}, [])


def rows_of(*evs: events.Event, first: int = 1) -> list[events.EventRow]:
    return [(RUN, seq, events.event_type(e), events.encode(e)) for seq, e in enumerate(evs, first)]


def text_run(status: str = "completed", stop: str = "end_turn") -> list[events.EventRow]:
    return rows_of(
        MessageStart(StepInfo("msg_1", None, usage=Usage(10, 0))),
        ContentBlockStart(0, TextBlock("")),
        *(TextDelta(piece, 0) for piece in PIECES),
        ContentBlockStop(0),
        MessageDelta(StopInfo(stop), Usage(10, 5)),
        MessageStop(),
        Done(Usage(10, 5), 1, RUN, stop, status),
    )


def parse(data: bytes) -> list[dict[str, Any]]:
    frames = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        body = json.loads(fields["data"])
        assert fields["event"] == body["type"] and fields["id"] == str(body["sequence_number"])
        frames.append(body)
    return frames


def test_a_text_reply_in_order_with_its_escapes_kept() -> None:
    t = Translator(head())
    frames = parse(t.frames(text_run()))
    kinds = [f["type"] for f in frames]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(PIECES),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
    deltas = [f["delta"] for f in frames if f["type"] == "response.output_text.delta"]
    assert deltas == PIECES
    done = next(f for f in frames if f["type"] == "response.output_text.done")
    assert done["text"] == "".join(PIECES)
    final = frames[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["id"] == f"msg_{RUN}_2"
    assert final["output"][0]["content"][0]["text"] == "".join(PIECES)
    assert final["usage"]["total_tokens"] == 15
    assert t.finished and t.response().status == "completed"


def test_the_same_bytes_however_batched_or_replayed() -> None:
    rows = text_run()
    whole = Translator(head()).frames(rows)
    one_by_one = Translator(head())
    pieces = b"".join(one_by_one.frames([row]) for row in rows)
    assert pieces == whole
    every = parse(whole)
    for skip in (0, 4, len(every) - 2):
        tail = Translator(head(), skip=skip).frames(rows)
        assert parse(tail) == every[skip + 1 :]


def test_tool_calls_and_results() -> None:
    rows = rows_of(
        MessageStart(StepInfo("m", None)),
        ContentBlockStart(0, ToolUseBlock("call_a", "list_files", {})),
        InputJsonDelta('{"pa', 0),
        InputJsonDelta('th":"."}', 0),
        ContentBlockStop(0),
        ContentBlockStart(1, ToolUseBlock("call_b", "ask", {"q": "x"})),  # input up front
        ContentBlockStop(1),
        MessageStop(),
        ToolResult("call_a", "list_files", "a.txt", False),
        ToolResult("call_z", "other", "from an earlier response", False),
        Done(Usage(), 1, RUN, "requires_action", "requires_action"),
    )
    t = Translator(head())
    frames = parse(t.frames(rows))
    args = [f for f in frames if f["type"] == "response.function_call_arguments.done"]
    assert [a["arguments"] for a in args] == ['{"path":"."}', '{"q":"x"}']
    output = frames[-1]["response"]["output"]
    assert [(i["type"], i.get("call_id")) for i in output] == [
        ("function_call", "call_a"),
        ("function_call", "call_b"),
        ("function_call_output", "call_a"),
    ]
    assert frames[-1]["type"] == "response.completed"  # paused for client tools


def test_ends_other_than_completed() -> None:
    failed = Translator(head())
    rows = text_run("failed")
    rows.insert(-1, (RUN, 99, "error", events.encode(Error(ErrorInfo("provider_error", "boom")))))
    last = parse(failed.frames(rows))[-1]
    assert last["type"] == "response.failed" and last["response"]["status"] == "failed"
    assert last["response"]["error"] == {
        "code": "server_error",
        "message": "boom",
        "type": "provider_error",
    }
    cancelled = parse(Translator(head()).frames(text_run("cancelled", "cancelled")))[-1]
    assert cancelled["type"] == "response.failed"
    assert cancelled["response"]["status"] == "cancelled"
    capped = parse(Translator(head()).frames(text_run("completed", "max_tokens")))[-1]
    assert capped["type"] == "response.incomplete"
    assert capped["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_resumed_part_counts_only_its_own_usage() -> None:
    t = Translator(head(), after=7, base=Usage(4, 2))
    t.feed(text_run())
    assert t.finished and t.usage is not None
    assert (t.usage.input_tokens, t.usage.output_tokens) == (6, 3)
    assert t.frames(text_run()) == b""  # nothing after the response's end


def test_response_ids() -> None:
    assert response_id(RUN, 0) == RUN and response_id(RUN, 12) == f"{RUN}_12"
    assert parse_response_id(f"{RUN}_12") == (RUN, 12)
    assert parse_response_id(RUN) == (RUN, 0)
    for bad in ("x", f"{RUN}_", f"{RUN}_01", f"{RUN}_-1", f"{RUN}_1x", "a" * 26 + "!"):
        assert parse_response_id(bad) is None, bad


def test_interleaved_blocks_keep_their_own_text() -> None:
    rows = rows_of(
        MessageStart(StepInfo("m", None)),
        ContentBlockStart(0, TextBlock("")),
        ContentBlockStart(1, TextBlock("")),
        TextDelta("a1 ", 0),
        TextDelta("b1 ", 1),
        TextDelta("a2", 0),
        TextDelta("b2", 1),
        ContentBlockStop(0),
        ContentBlockStop(1),
        Done(Usage(), 1, RUN, "end_turn", "completed"),
    )
    frames = parse(Translator(head()).frames(rows))
    output = frames[-1]["response"]["output"]
    assert [item["content"][0]["text"] for item in output] == ["a1 a2", "b1 b2"]
    deltas = [(f["output_index"], f["delta"]) for f in frames if f["type"].endswith("text.delta")]
    assert deltas == [(0, "a1 "), (1, "b1 "), (0, "a2"), (1, "b2")]
