"""The run's event union and its one wire encoding.

The loop and the runner pass these Structs around; only `frame()` knows the SSE text form.
Each event is JSON-encoded once, when the runner numbers it; replay sends the stored bytes.

Events holding only strings and numbers are `gc=False`: they cannot be part of a reference
cycle, and the collector need not count or walk the thousands a stream makes per second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, get_args

import msgspec

from server.models import ContentBlock, ErrorInfo, PendingToolCall, Usage


class StepInfo(msgspec.Struct):
    id: str
    model: str | None
    role: str = "assistant"
    usage: Usage = msgspec.field(default_factory=Usage)


class StopInfo(msgspec.Struct, gc=False):
    stop_reason: str | None


class MessageStart(msgspec.Struct, tag="message_start", tag_field="type", omit_defaults=True):
    message: StepInfo
    # the run's id, filled in by the runner (a provider does not know it): a client learns
    # it with the step's first event, in time to cancel or resume the run
    run_id: str | None = None


class ContentBlockStart(msgspec.Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: ContentBlock


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type", gc=False):
    text: str
    index: int


class InputJsonDelta(msgspec.Struct, tag="input_json_delta", tag_field="type", gc=False):
    partial_json: str
    index: int


class ContentBlockStop(msgspec.Struct, tag="content_block_stop", tag_field="type", gc=False):
    index: int


class MessageDelta(msgspec.Struct, tag="message_delta", tag_field="type"):
    delta: StopInfo
    usage: Usage


class MessageStop(msgspec.Struct, tag="message_stop", tag_field="type", gc=False):
    pass


class ToolResult(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    name: str
    content: str
    is_error: bool


class RequiresAction(msgspec.Struct, tag="requires_action", tag_field="type"):
    run_id: str
    tool_calls: list[PendingToolCall]


class Error(msgspec.Struct, tag="error", tag_field="type"):
    error: ErrorInfo


class Done(msgspec.Struct, tag="done", tag_field="type"):
    usage: Usage
    steps: int
    run_id: str
    stop_reason: str | None
    status: str


class Compaction(msgspec.Struct, tag="compaction", tag_field="type"):
    """The run compacted its session before a step: the turns up to `through_seq` are now
    the summary in message `message_id`; the input's size in tokens before and after."""

    message_id: str
    through_seq: int
    before: int
    after: int
    reason: (
        str  # "budget": the input would pass compact_at; "context_too_long": the provider said so
    )


class Ping(msgspec.Struct, tag="ping", tag_field="type", gc=False):
    pass


# What a provider yields for one model step.
StepEvent = (
    MessageStart
    | ContentBlockStart
    | TextDelta
    | InputJsonDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
)
Event = StepEvent | ToolResult | Compaction | RequiresAction | Error | Done | Ping
# One event as stored and as sent: (run_id, seq, type, data), `data` its JSON encoding.
EventRow = tuple[str, int, str, bytes]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
encode: Callable[[Event], bytes] = _encoder.encode  # the method itself: no wrapper per event
TYPES: dict[type, str] = {cls: cls.__struct_config__.tag for cls in get_args(Event)}

PING_FRAME = b'event: ping\ndata: {"type":"ping"}\n\n'


def event_type(event: Event) -> str:
    return TYPES[type(event)]


def decode(data: bytes) -> Event:
    event: Event = _decoder.decode(data)
    return event


def frame(event_id: str | int, type_: str, data: bytes) -> bytes:
    """One SSE block. msgspec JSON holds no raw newline, so one `data:` line is always enough."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (str(event_id).encode(), type_.encode(), data)


def frames(rows: Iterable[tuple[str, int, str, bytes]]) -> bytes:
    """A run's own blocks, `id:` its sequence number: `frame()` for (run_id, seq, type, data)
    rows, in one pass (a stream frames thousands of them a second)."""
    return b"".join(
        [
            b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, type_.encode(), data)
            for _, seq, type_, data in rows
        ]
    )


def retry_frame(ms: int) -> bytes:
    return b"retry: %d\n\n" % ms


_CARRY_RUN_ID = frozenset({"done", "requires_action"})


def with_run_id(type_: str, data: bytes, run_id: str) -> bytes:
    """The session channel's form of an event: the same JSON object with `run_id` added."""
    if type_ in _CARRY_RUN_ID or (type_ == "message_start" and b',"run_id":"' in data):
        return data  # (a JSON string holds no unescaped quote: the key is the event's own)
    return b'{"run_id":"%s",%s' % (run_id.encode(), data[1:])


def to_dict(event: Event) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result
