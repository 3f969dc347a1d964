"""A run as an OpenAI Responses object and stream: the run's own events translated into the
Responses events (`response.created` … `response.completed`), each with its
`sequence_number`, and the response object they build.

One translation serves every view of a response, so none can disagree with another: the
stream as it happens, a replay after `starting_after`, the blocking answer and
`GET /v1/responses/{id}` all translate the run's events from the response's first one.
The translation is a pure function of those events: replayed, it gives the same numbers,
ids and bytes. Item ids are made from the run's id and the seq of the event that opened the
item, so they hold across views too.

A response is a run, or, for a run that paused for client tools and was resumed, the part
of it after the pause (`after`: the seq of the pause's `done`): each request's response
holds what that request added, never the calls a client has already answered.

Text and argument deltas, nearly all of a long reply, are spliced as bytes: the escaped
JSON string of the run's event goes into the Responses event as it is (bench responses).
"""

from __future__ import annotations

import datetime
import re
from itertools import groupby
from operator import itemgetter
from typing import Any, Literal

import msgspec

from server import events
from server.events import (
    ContentBlockStart,
    ContentBlockStop,
    Done,
    Error,
    EventRow,
    MessageStart,
    ToolResult,
)
from server.models import TextBlock, ToolUseBlock, Usage


class OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class MessageItem(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    status: str
    content: list[OutputText]
    role: str = "assistant"


class FunctionCallItem(msgspec.Struct, tag="function_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str


class FunctionCallOutputItem(msgspec.Struct, tag="function_call_output", tag_field="type"):
    id: str
    call_id: str
    output: str
    status: str = "completed"


OutputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem


class FunctionTool(msgspec.Struct, tag="function", tag_field="type"):
    name: str
    parameters: dict[str, Any]
    description: str | None = None
    strict: bool = False


class Cached(msgspec.Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class Reasoning(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: Cached = msgspec.field(default_factory=Cached)
    output_tokens_details: Reasoning = msgspec.field(default_factory=Reasoning)


def usage_of(usage: Usage) -> ResponseUsage:
    total = usage.input_tokens + usage.output_tokens
    return ResponseUsage(usage.input_tokens, usage.output_tokens, total)


class ResponseError(msgspec.Struct):
    code: str  # one of OpenAI's codes; sessiond's own kind is `type`
    message: str
    type: str


class Incomplete(msgspec.Struct):
    reason: str | None


class Conversation(msgspec.Struct):
    id: str


class Head(msgspec.Struct):
    """What a response shows that its events do not say."""

    id: str
    created_at: int
    model: str
    conversation: Conversation | None
    instructions: str | None
    metadata: dict[str, str]
    tools: list[FunctionTool]


class ResponseObject(msgspec.Struct):
    id: str
    created_at: int
    status: str
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None
    conversation: Conversation | None
    error: ResponseError | None
    incomplete_details: Incomplete | None
    instructions: str | None
    metadata: dict[str, str]
    tools: list[FunctionTool]
    object: Literal["response"] = "response"
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True


def unix_of(stamp: str) -> int:
    """An RFC 3339 time (as `ids.now()` writes them) in unix seconds."""
    return int(datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def response_id(run_id: str, after: int) -> str:
    return run_id if after == 0 else f"{run_id}_{after}"


_RESPONSE_ID = re.compile(r"([0-9A-Z]{26})(?:_([1-9][0-9]{0,17}))?")


def parse_response_id(raw: str) -> tuple[str, int] | None:
    """(run id, after) from a response id; None if it cannot be one."""
    found = _RESPONSE_ID.fullmatch(raw)
    if found is None:
        return None
    return found.group(1), int(found.group(2) or 0)


# How a run's end shows: its status, the Responses event that says it.
_ENDS = {
    "completed": ("completed", b"response.completed"),
    "requires_action": ("completed", b"response.completed"),  # with the pending calls
    "failed": ("failed", b"response.failed"),
    "cancelled": ("cancelled", b"response.failed"),  # the Responses stream has no cancel event
    "interrupted": ("failed", b"response.failed"),
}
_INCOMPLETE = {"max_tokens": "max_output_tokens", "max_steps": None}
_CODES = {"rate_limited": "rate_limit_exceeded"}

_TEXT_PREFIX = len(b'{"type":"text_delta","text":')
_JSON_PREFIX = len(b'{"type":"input_json_delta","partial_json":')
_INDEX = b',"index":'
_KIND = itemgetter(2)
_TEXT_DELTA = (
    b"id: %d\nevent: response.output_text.delta\ndata: "
    b'{"type":"response.output_text.delta","item_id":"%s","output_index":%d,'
    b'"content_index":0,"delta":%s,"logprobs":[],"sequence_number":%d}\n\n'
)
_encode = msgspec.json.Encoder().encode
_decode_text = msgspec.json.Decoder(str).decode


class _Open:
    """An output item whose block is still streaming: its escaped JSON pieces so far."""

    __slots__ = ("id", "item", "output_index", "pieces")

    def __init__(self, item: MessageItem | FunctionCallItem, output_index: int) -> None:
        self.item = item
        self.id = item.id.encode()
        self.output_index = output_index
        self.pieces: list[bytes] = []

    def joined(self) -> bytes:
        """The pieces as one JSON string literal (escapes never span two pieces)."""
        return b'"' + b"".join(p[1:-1] for p in self.pieces) + b'"'


class Translator:
    """Translates one response's events, batch by batch, into Responses SSE frames (those
    numbered after `skip` only) and keeps the response they build."""

    def __init__(self, head: Head, after: int = 0, base: Usage | None = None, skip: int = -1):
        self.head = head
        self.run_id = head.id.partition("_")[0]
        self.after = after
        self.base = base or Usage()
        self.skip = skip
        self.number = 0  # the next sequence_number
        self.output: list[OutputItem] = []
        self.open: dict[bytes, _Open] = {}  # by the step's block index, as its JSON digits
        self.calls: set[str] = set()  # call ids this response made
        self.status = "in_progress"
        self.error: ResponseError | None = None
        self.incomplete: Incomplete | None = None
        self.usage: ResponseUsage | None = None
        self.finished = False
        self.started = False

    # -- the response ---------------------------------------------------------------------
    def response(self, status: str | None = None) -> ResponseObject:
        h = self.head
        return ResponseObject(
            id=h.id,
            created_at=h.created_at,
            status=status or self.status,
            model=h.model,
            output=list(self.output),
            usage=self.usage,
            conversation=h.conversation,
            error=self.error,
            incomplete_details=self.incomplete,
            instructions=h.instructions,
            metadata=h.metadata,
            tools=h.tools,
        )

    def feed(self, rows: list[EventRow]) -> None:
        """Take rows without making frames (a blocking answer, a retrieve)."""
        skip, self.skip = self.skip, 1 << 62
        try:
            self.frames(rows)
        finally:
            self.skip = skip

    # -- frames ---------------------------------------------------------------------------
    def _frame(self, kind: bytes, body: bytes) -> bytes:
        """One event: `body` is its JSON object's fields after `type`, without the braces."""
        n = self.number
        self.number = n + 1
        if n <= self.skip:
            return b""
        return b'id: %d\nevent: %s\ndata: {"type":"%s",%s,"sequence_number":%d}\n\n' % (
            n,
            kind,
            kind,
            body,
            n,
        )

    def _with_response(self, kind: bytes, status: str | None = None) -> bytes:
        return self._frame(kind, b'"response":' + _encode(self.response(status)))

    def _item(self, kind: bytes, index: int, item: OutputItem) -> bytes:
        return self._frame(kind, b'"output_index":%d,"item":%s' % (index, _encode(item)))

    def start(self) -> bytes:
        self.started = True
        return self._with_response(b"response.created") + self._with_response(
            b"response.in_progress"
        )

    def frames(self, rows: list[EventRow]) -> bytes:
        if self.finished:
            return b""  # what follows a response's end is another response's
        out: list[bytes] = [] if self.started else [self.start()]
        for kind, group in groupby(rows, _KIND):
            if kind == "text_delta":  # the bulk of a reply: a run of them at a time
                self._texts([row[3] for row in group], out)
                continue
            for _, seq, kind_, data in group:
                if kind_ == "input_json_delta":
                    cut = data.rindex(_INDEX)
                    piece = data[_JSON_PREFIX:cut]
                    item = self.open[data[cut + 9 : -1]]
                    item.pieces.append(piece)
                    where = b'"item_id":"%s","output_index":%d' % (item.id, item.output_index)
                    delta = self._frame(
                        b"response.function_call_arguments.delta", where + b',"delta":%s' % piece
                    )
                    out.append(delta)
                else:
                    out.append(self._event(seq, events.decode(data)))
                if self.finished:
                    return b"".join(out)
        return b"".join(out)

    def _texts(self, datas: list[bytes], out: list[bytes]) -> None:
        """Consecutive text deltas: spliced, with no decode and one format each."""
        cuts = [data.rindex(_INDEX) for data in datas]
        keys = {data[cut + 9 : -1] for data, cut in zip(datas, cuts, strict=True)}
        if len(keys) > 1:  # two blocks' deltas interleaved: one at a time
            for data in datas:
                self._texts([data], out)
            return
        item = self.open[keys.pop()]
        pieces = [data[_TEXT_PREFIX:cut] for data, cut in zip(datas, cuts, strict=True)]
        item.pieces += pieces
        n = self.number
        self.number = n + len(pieces)
        start = max(0, self.skip + 1 - n)
        iid, index = item.id, item.output_index
        out += [
            _TEXT_DELTA % (k, iid, index, p, k) for k, p in enumerate(pieces[start:], n + start)
        ]

    def _event(self, seq: int, event: events.Event) -> bytes:
        match event:
            case MessageStart():
                self.open = {}  # a new step: its blocks count from 0
            case ContentBlockStart(index=index, content_block=TextBlock()):
                return self._open_text(seq, index)
            case ContentBlockStart(index=index, content_block=ToolUseBlock() as block):
                return self._open_call(seq, index, block)
            case ContentBlockStop(index=index):
                return self._close(index)
            case ToolResult() as result if result.tool_use_id in self.calls:
                return self._tool_output(seq, result)
            case Error(error=info):
                code = _CODES.get(info.type, "server_error")
                self.error = ResponseError(code, info.message, info.type)
            case Done() as done:
                return self._done(done)
        return b""

    def _open_text(self, seq: int, index: int) -> bytes:
        item = MessageItem(f"msg_{self.run_id}_{seq}", "in_progress", [])
        opened = self.open[b"%d" % index] = _Open(item, len(self.output))
        self.output.append(item)
        added = self._item(b"response.output_item.added", opened.output_index, item)
        item.content.append(OutputText(""))
        part = b'"item_id":"%s","output_index":%d,"content_index":0,"part":%s' % (
            opened.id,
            opened.output_index,
            _encode(item.content[0]),
        )
        return added + self._frame(b"response.content_part.added", part)

    def _open_call(self, seq: int, index: int, block: ToolUseBlock) -> bytes:
        item = FunctionCallItem(f"fc_{self.run_id}_{seq}", block.id, block.name, "", "in_progress")
        opened = self.open[b"%d" % index] = _Open(item, len(self.output))
        if block.input:
            opened.pieces.append(_encode(_encode(block.input).decode()))
        self.output.append(item)
        self.calls.add(block.id)
        return self._item(b"response.output_item.added", opened.output_index, item)

    def _close(self, index: int) -> bytes:
        opened = self.open.pop(b"%d" % index, None)
        if opened is None:
            return b""
        joined = opened.joined()
        where = b'"item_id":"%s","output_index":%d' % (opened.id, opened.output_index)
        item = opened.item
        item.status = "completed"
        if isinstance(item, MessageItem):
            part = item.content[0]
            part.text = _decode_text(joined)
            text = self._frame(
                b"response.output_text.done",
                where + b',"content_index":0,"text":%s,"logprobs":[]' % joined,
            )
            done = self._frame(
                b"response.content_part.done",
                where + b',"content_index":0,"part":%s' % _encode(part),
            )
            return text + done + self._item(b"response.output_item.done", opened.output_index, item)
        item.arguments = _decode_text(joined) if opened.pieces else "{}"
        args = self._frame(
            b"response.function_call_arguments.done",
            where + b',"name":%s,"arguments":%s' % (_encode(item.name), _encode(item.arguments)),
        )
        return args + self._item(b"response.output_item.done", opened.output_index, item)

    def _tool_output(self, seq: int, result: ToolResult) -> bytes:
        call_id, output = result.tool_use_id, result.content
        item = FunctionCallOutputItem(f"fco_{self.run_id}_{seq}", call_id, output)
        index = len(self.output)
        self.output.append(item)
        added = self._item(b"response.output_item.added", index, item)
        return added + self._item(b"response.output_item.done", index, item)

    def _done(self, done: Done) -> bytes:
        self.finished = True
        status, kind = _ENDS.get(done.status, ("failed", b"response.failed"))
        if status == "completed" and done.stop_reason in _INCOMPLETE:
            status, kind = "incomplete", b"response.incomplete"
            self.incomplete = Incomplete(_INCOMPLETE[done.stop_reason])
        if status == "completed":
            self.error = None  # an error a step survived is not the response's
        elif self.error is None:
            self.error = ResponseError("server_error", f"the run ended {done.status}", done.status)
        self.status = status
        self.usage = usage_of(
            Usage(
                done.usage.input_tokens - self.base.input_tokens,
                done.usage.output_tokens - self.base.output_tokens,
            )
        )
        return self._with_response(kind)
