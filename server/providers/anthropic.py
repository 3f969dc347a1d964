"""`anthropic`: Claude through the Messages API, streamed.

Our step events are Anthropic's own stream events, so the mapping is one-to-one with two
exceptions. Blocks we do not surface (thinking, server-side tool blocks) are dropped and the
rest renumbered from 0, so the loop always sees contiguous indexes. A tool call whose input
arrived as no fragments at all gets an explicit `{}` fragment before its stop.

`options.base_url` is the API root without `/v1` (as in Anthropic's SDKs); it falls back to
ANTHROPIC_BASE_URL, then https://api.anthropic.com. Which key goes there: see access.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import msgspec

from server.events import (
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StepEvent,
    StepInfo,
    StopInfo,
    TextDelta,
)
from server.models import TextBlock, ToolResultBlock, ToolUseBlock, Turn, Usage
from server.providers import access
from server.providers.base import ProviderContext, ProviderRequest
from server.providers.http import (
    Call,
    UpstreamApi,
    broken_stream,
    excerpt,
    parse_options,
    post_json,
    relay,
    stream_error,
)

DEFAULT_URL = access.ANTHROPIC.default_url
DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_MAX_TOKENS = 4096
KEY_ENV = access.ANTHROPIC.key_env
API_VERSION = "2023-06-01"

MESSAGES = UpstreamApi(
    "anthropic", "/v1/messages", ("x-api-key", ""), {"anthropic-version": API_VERSION}
)

COUNT = UpstreamApi(
    "anthropic",
    "/v1/messages/count_tokens",
    ("x-api-key", ""),
    {"anthropic-version": API_VERSION},
)


class _Count(msgspec.Struct):
    input_tokens: int


_count = msgspec.json.Decoder(_Count)


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, options: dict[str, Any], ctx: ProviderContext) -> None:
        self.options = parse_options(options)
        self.ctx = ctx
        self.target = access.target(access.ANTHROPIC, self.options, ctx)  # or AgentUnusable

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StepEvent]:
        call = self.call(request)
        async with aclosing(relay(self.ctx, call, StreamReader(call))) as events:
            async for event in events:
                yield event

    def call(self, request: ProviderRequest) -> Call:
        model = request.model or DEFAULT_MODEL
        return MESSAGES.call(self.target, model, body(request, model))

    async def count_tokens(self, request: ProviderRequest) -> int:
        """The upstream's count of the request's input tokens."""
        model = request.model or DEFAULT_MODEL
        sent = body(request, model)
        for unused in ("stream", "max_tokens", "temperature"):
            sent.pop(unused, None)
        call = COUNT.call(self.target, model, sent)
        try:
            return _count.decode(await post_json(self.ctx, call)).input_tokens
        except msgspec.DecodeError as exc:
            raise broken_stream(call, "the token count is not the JSON expected") from exc


def body(request: ProviderRequest, model: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": [message for turn in request.messages if (message := _message(turn))],
        "stream": True,
    }
    if request.system:
        result["system"] = request.system
    if request.tools:
        result["tools"] = [
            _tool(tool.name, tool.description, tool.input_schema) for tool in request.tools
        ]
    if request.temperature is not None:
        result["temperature"] = request.temperature
    return result


def _message(turn: Turn) -> dict[str, Any] | None:
    # The API rejects empty text blocks, and wants tool results first in a user message.
    blocks = [b for b in turn.content if not (isinstance(b, TextBlock) and not b.text)]
    blocks.sort(key=lambda block: not isinstance(block, ToolResultBlock))
    return {"role": turn.role, "content": msgspec.to_builtins(blocks)} if blocks else None


def _tool(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name, "input_schema": schema}
    if description:
        tool["description"] = description
    return tool


class _Head(msgspec.Struct):
    type: str


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def input_total(self) -> int | None:
        # input_tokens leaves out the cached part of the prompt; our Usage counts all of it.
        if self.input_tokens is None:
            return None
        cached = (self.cache_creation_input_tokens or 0) + (self.cache_read_input_tokens or 0)
        return self.input_tokens + cached


class _Message(msgspec.Struct):
    id: str
    model: str | None = None
    usage: _Usage = msgspec.field(default_factory=_Usage)


class _MessageStart(msgspec.Struct):
    message: _Message


class _Block(msgspec.Struct):
    type: str
    id: str = ""
    name: str = ""
    text: str = ""


class _BlockStart(msgspec.Struct):
    index: int
    content_block: _Block


class _Delta(msgspec.Struct):
    type: str
    text: str = ""
    partial_json: str = ""


class _BlockDelta(msgspec.Struct):
    index: int
    delta: _Delta


class _BlockStop(msgspec.Struct):
    index: int


class _Stop(msgspec.Struct):
    stop_reason: str | None = None


class _MessageDelta(msgspec.Struct):
    delta: _Stop
    usage: _Usage = msgspec.field(default_factory=_Usage)


class StreamReader:
    """Maps one Messages stream to step events, event by event."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.stopped = False
        self._input_tokens = 0
        self._indexes: dict[int, int] = {}  # upstream block index -> ours
        self._no_input: set[int] = set()  # our tool blocks that have had no input fragment
        self._handlers: dict[str, Callable[[str], list[StepEvent]]] = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "content_block_stop": self._block_stop,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
            "error": self._error,
        }

    def end(self) -> list[StepEvent]:
        if not self.stopped:
            raise broken_stream(self.call, "the stream ended before message_stop")
        return []

    def feed(self, data: str) -> list[StepEvent]:
        try:
            handler = self._handlers.get(msgspec.json.decode(data, type=_Head).type)
            return handler(data) if handler and not self.stopped else []
        except msgspec.DecodeError as exc:
            raise broken_stream(
                self.call, f"unreadable event ({exc}): {excerpt(self.call, data)}"
            ) from exc

    def _message_start(self, data: str) -> list[StepEvent]:
        message = msgspec.json.decode(data, type=_MessageStart).message
        self._input_tokens = message.usage.input_total() or 0
        return [MessageStart(StepInfo(message.id, message.model, usage=Usage(self._input_tokens)))]

    def _block_start(self, data: str) -> list[StepEvent]:
        start = msgspec.json.decode(data, type=_BlockStart)
        block = start.content_block
        if block.type not in ("text", "tool_use"):
            return []
        index = self._indexes[start.index] = len(self._indexes)
        if block.type == "tool_use":
            self._no_input.add(index)
            return [ContentBlockStart(index, ToolUseBlock(block.id, block.name, {}))]
        first: list[StepEvent] = [TextDelta(block.text, index)] if block.text else []
        return [ContentBlockStart(index, TextBlock("")), *first]

    def _block_delta(self, data: str) -> list[StepEvent]:
        event = msgspec.json.decode(data, type=_BlockDelta)
        index = self._indexes.get(event.index)
        delta = event.delta
        if index is None:
            return []
        if delta.type == "text_delta" and delta.text:
            return [TextDelta(delta.text, index)]
        if delta.type == "input_json_delta" and delta.partial_json:
            self._no_input.discard(index)
            return [InputJsonDelta(delta.partial_json, index)]
        return []

    def _block_stop(self, data: str) -> list[StepEvent]:
        index = self._indexes.get(msgspec.json.decode(data, type=_BlockStop).index)
        if index is None:
            return []
        if index in self._no_input:
            self._no_input.discard(index)
            return [InputJsonDelta("{}", index), ContentBlockStop(index)]
        return [ContentBlockStop(index)]

    def _message_delta(self, data: str) -> list[StepEvent]:
        event = msgspec.json.decode(data, type=_MessageDelta)
        input_tokens = event.usage.input_total()
        usage = Usage(
            self._input_tokens if input_tokens is None else input_tokens,
            event.usage.output_tokens or 0,
        )
        return [MessageDelta(StopInfo(event.delta.stop_reason), usage)]

    def _message_stop(self, data: str) -> list[StepEvent]:
        self.stopped = True
        return [MessageStop()]

    def _error(self, data: str) -> list[StepEvent]:
        raise stream_error(self.call, data)
