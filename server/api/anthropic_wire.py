"""A run in Anthropic's Messages form: the one assistant message a reply holds, and the stream
of Anthropic events that builds it, translated from the run's own events.

A run of several steps is one message: its blocks numbered on across the steps, the steps'
own `message_start`, `message_delta` and `message_stop` folded into one of each, `usage`
the run's total. A tool the server ran is a `server_tool_use` block followed by a
`tool_result` block with its output (Anthropic's SDK keeps a block type it does not know as
its first block class with that `type`, so a client tells them apart by `type`); a call of
a client tool is a `tool_use` block, and the message then stops with `tool_use`.

Results come after the whole step that called the tools, so a stream holds back a step's
blocks that follow a server call until that call's result is out: a block's place in the
stream is its place in the blocking reply.
"""

from __future__ import annotations

from typing import Any

import msgspec

from server import events
from server.events import ContentBlockStart, EventRow, MessageStart, ToolResult
from server.models import Message, Run, TextBlock, ToolResultBlock, ToolUseBlock, Usage

# -- the reply ------------------------------------------------------------------------------


class OutText(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class OutToolUse(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class OutServerToolUse(msgspec.Struct, tag="server_tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class OutToolResult(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str
    is_error: bool


OutBlock = OutText | OutToolUse | OutServerToolUse | OutToolResult


class OutUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int


class Reply(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    role: str
    model: str
    content: list[OutBlock]
    stop_reason: str | None
    stop_sequence: None
    usage: OutUsage


_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def stop_reason_of(status: str, stop_reason: str | None) -> str:
    """Anthropic's stop reason for a run's end: a run paused for client tools stops with
    `tool_use`; the OpenAI provider's reasons are renamed; a run without one ended its turn."""
    if status == "requires_action":
        return "tool_use"
    if stop_reason is None:
        return "end_turn"
    return _STOP_REASONS.get(stop_reason, stop_reason)


def reply_of(run: Run, messages: list[Message], held: list[ToolResultBlock], model: str) -> Reply:
    """The blocking answer: every step's blocks in order, each server call with its result."""
    results = {b.tool_use_id: b for b in held}
    for message in messages:
        for block in message.content:
            if isinstance(block, ToolResultBlock):
                results[block.tool_use_id] = block
    pending = {call.id for call in run.pending_tool_calls}
    content: list[OutBlock] = []
    for message in messages:
        if message.role != "assistant":
            continue
        for block in message.content:
            if isinstance(block, TextBlock):
                content.append(OutText(block.text))
            elif isinstance(block, ToolUseBlock) and block.id in pending:
                content.append(OutToolUse(block.id, block.name, block.input))
            elif isinstance(block, ToolUseBlock):
                content.append(OutServerToolUse(block.id, block.name, block.input))
                result = results.get(block.id)
                if result is not None:
                    content.append(
                        OutToolResult(result.tool_use_id, result.content, result.is_error)
                    )
    usage = OutUsage(run.usage.input_tokens, run.usage.output_tokens)
    return Reply(
        id=run.id,
        role="assistant",
        model=model,
        content=content,
        stop_reason=stop_reason_of(run.status, run.stop_reason),
        stop_sequence=None,
        usage=usage,
    )


# -- the stream -----------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_TEXT_HEAD = len(b'{"type":"text_delta","text":')
_JSON_HEAD = len(b'{"type":"input_json_delta","partial_json":')
_INDEX = b',"index":'
_INDEX_LEN = len(_INDEX)
_TEXT_FRAME = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":%s}}\n\n'
)
_JSON_FRAME = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"input_json_delta","partial_json":%s}}\n\n'
)
_TEXT_TAIL = b"}}\n\n"
_STOP_FRAME = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class StartMessage(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    role: str
    model: str
    content: list[OutBlock]
    stop_reason: None
    stop_sequence: None
    usage: OutUsage


class _MessageStartOut(msgspec.Struct, tag="message_start", tag_field="type"):
    message: StartMessage


class _BlockStartOut(msgspec.Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: OutBlock


class _StopOut(msgspec.Struct):
    stop_reason: str
    stop_sequence: None = None


class _MessageDeltaOut(msgspec.Struct, tag="message_delta", tag_field="type"):
    delta: _StopOut
    usage: OutUsage


def _frame(kind: bytes, value: msgspec.Struct) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind, _encode(value))


# A step's event held back, as (type, native block index, its data)
Held = tuple[str, int, bytes]


class Translator:
    """Turns a run's event rows into Anthropic's stream, batch by batch (`sse.framed` calls
    it with each batch). One per stream: it keeps which blocks are out, under which index."""

    def __init__(self, message_id: str, model: str, client_tools: set[str]) -> None:
        self.message_id = message_id
        self.model = model
        self.client_tools = client_tools
        self.started = False
        self.failed = False
        self.next_index = 0
        self.live: dict[int, int] = {}  # a step's block index -> its index in the message
        self.waiting: list[str] = []  # server calls out, whose results are not yet
        self.results: dict[str, ToolResult] = {}  # results whose call is not yet first
        self.held: list[Held] = []  # the step's events after a call waiting for its result
        # the text block out now: how its deltas end (its index in the step), and how their
        # frames begin (its index in the message)
        self.text_suffix = b"\x00"
        self.text_head = b""

    def __call__(self, rows: list[EventRow]) -> bytes:
        if self.failed:
            return b""
        out: list[bytes] = []
        add = out.append
        # most events are text deltas of the text block out: framed here (bench messages)
        suffix, head, cut = self.text_suffix, self.text_head, -len(self.text_suffix)
        for _, _, kind, data in rows:
            if kind == "text_delta" and data.endswith(suffix):
                add(head)
                add(data[_TEXT_HEAD:cut])
                add(_TEXT_TAIL)
            elif not self._other(kind, data, out):
                break
            else:
                suffix, head, cut = self.text_suffix, self.text_head, -len(self.text_suffix)
        return b"".join(out)

    def _other(self, kind: str, data: bytes, out: list[bytes]) -> bool:
        """Any event but a text delta of a block that is out; False: the stream is over."""
        if kind == "text_delta" or kind == "input_json_delta":
            self._delta(kind, data, out)
        elif kind == "content_block_start":
            self._block_start(data, out)
        elif kind == "content_block_stop":
            self._block_stop(data, out)
        elif kind == "message_start":
            self._message_start(data, out)
        elif kind == "tool_result":
            self._tool_result(data, out)
        elif kind == "error":
            out.append(b"event: error\ndata: %s\n\n" % data)
            self.failed = True
            return False
        elif kind == "done":
            self._done(data, out)
        return True

    def _delta(self, kind: str, data: bytes, out: list[bytes]) -> None:
        cut = data.rindex(_INDEX)
        native = int(data[cut + _INDEX_LEN : -1])
        index = self.live.get(native)
        if index is None:
            self.held.append((kind, native, data))
        elif kind == "text_delta":
            out.append(_TEXT_FRAME % (index, data[_TEXT_HEAD:cut]))
        else:
            out.append(_JSON_FRAME % (index, data[_JSON_HEAD:cut]))

    def _message_start(self, data: bytes, out: list[bytes]) -> None:
        self.live.clear()  # each step numbers its blocks from 0
        self.text_suffix = b"\x00"
        if self.started:
            return
        event = events.decode(data)
        assert isinstance(event, MessageStart)
        self._open(event.message.usage, out)

    def _open(self, usage: Usage, out: list[bytes]) -> None:
        self.started = True
        message = StartMessage(
            id=self.message_id,
            role="assistant",
            model=self.model,
            content=[],
            stop_reason=None,
            stop_sequence=None,
            usage=OutUsage(usage.input_tokens, usage.output_tokens),
        )
        out.append(_frame(b"message_start", _MessageStartOut(message)))

    def _block_start(self, data: bytes, out: list[bytes]) -> None:
        event = events.decode(data)
        assert isinstance(event, ContentBlockStart)
        if self.waiting or self.held:
            self.held.append(("content_block_start", event.index, data))
            return
        self._emit_start(event, out)

    def _emit_start(self, event: ContentBlockStart, out: list[bytes]) -> None:
        block = event.content_block
        index = self.next_index
        self.next_index += 1
        self.live[event.index] = index
        shown: OutBlock
        if isinstance(block, ToolUseBlock) and block.name in self.client_tools:
            shown = OutToolUse(block.id, block.name, {})
        elif isinstance(block, ToolUseBlock):
            shown = OutServerToolUse(block.id, block.name, {})
            self.waiting.append(block.id)
        else:
            shown = OutText("")
            self.text_suffix = b"%s%d}" % (_INDEX, event.index)
            self.text_head = _TEXT_FRAME.split(b"%s")[0] % index
        out.append(_frame(b"content_block_start", _BlockStartOut(index, shown)))

    def _block_stop(self, data: bytes, out: list[bytes]) -> None:
        native = int(data[data.rindex(b":") + 1 : -1])
        index = self.live.get(native)
        if index is None:
            self.held.append(("content_block_stop", native, data))
        else:
            out.append(_STOP_FRAME % index)

    def _tool_result(self, data: bytes, out: list[bytes]) -> None:
        event = events.decode(data)
        assert isinstance(event, ToolResult)
        # a client's own result (or one of a call never shown) stays here unused
        self.results[event.tool_use_id] = event
        self._advance(out)

    def _advance(self, out: list[bytes]) -> None:
        """Each server call out whose result has come: its result, then what it held back."""
        while self.waiting and self.waiting[0] in self.results:
            result = self.results.pop(self.waiting.pop(0))
            block = OutToolResult(result.tool_use_id, result.content, result.is_error)
            index = self.next_index
            self.next_index += 1
            out.append(_frame(b"content_block_start", _BlockStartOut(index, block)))
            out.append(_STOP_FRAME % index)
            self._release(out)

    def _release(self, out: list[bytes], everything: bool = False) -> None:
        """Send the held events, up to the end of the next server call (or all of them)."""
        held, self.held = self.held, []
        for position, (kind, native, data) in enumerate(held):
            if kind == "content_block_start":
                event = events.decode(data)
                assert isinstance(event, ContentBlockStart)
                self._emit_start(event, out)
            elif kind == "content_block_stop":
                out.append(_STOP_FRAME % self.live[native])
                if self.waiting and not everything:
                    self.held = held[position + 1 :]
                    return
            else:
                self._delta(kind, data, out)

    def _done(self, data: bytes, out: list[bytes]) -> None:
        done = events.decode(data)
        assert isinstance(done, events.Done)
        self._advance(out)
        self._release(out, everything=True)
        if not self.started:
            self._open(Usage(), out)
        reason = stop_reason_of(done.status, done.stop_reason)
        usage = OutUsage(done.usage.input_tokens, done.usage.output_tokens)
        out.append(_frame(b"message_delta", _MessageDeltaOut(_StopOut(reason), usage)))
        out.append(_MESSAGE_STOP)
