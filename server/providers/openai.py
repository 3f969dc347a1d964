"""`openai`: Chat Completions, streamed, from OpenAI or any server that speaks its dialect
(Ollama, vLLM, llama.cpp, LiteLLM… through `options.base_url`).

Chunks are normalised to our Anthropic-style step events:
- `delta.content` becomes one text block, opened at its first non-empty piece;
- each `delta.tool_calls[i]` becomes one tool_use block per upstream index, opened when the call
  first appears (blocks are numbered in order of appearance); parallel calls may interleave,
  so several blocks can be open at once and every delta names its block;
- all blocks close when `finish_reason` arrives (or at `[DONE]` if it never does);
- `finish_reason` maps to Anthropic's stop reasons: stop → end_turn, tool_calls → tool_use,
  length → max_tokens, content_filter → refusal; anything else passes through verbatim;
- usage comes from the final `include_usage` chunk; `message_start` carries input 0 because
  the prompt size is not known until then. Without that chunk, output tokens are estimated
  as the number of deltas.

A tool result marked `is_error` is sent as "Error: <content>": the tool message has no such
flag. `options.base_url` includes `/v1` (as in OpenAI's SDKs); it falls back to OPENAI_BASE_URL.
Off OpenAI's own API the key is optional (local servers need none); which key goes where:
see access.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
from server.ids import new_ulid
from server.models import TextBlock, ToolResultBlock, ToolUseBlock, Turn, Usage
from server.providers import access
from server.providers.base import ProviderContext, ProviderRequest
from server.providers.http import (
    Call,
    UpstreamApi,
    UpstreamError,
    broken_stream,
    excerpt,
    parse_options,
    relay,
    stream_error,
)

DEFAULT_URL = access.OPENAI.default_url
DEFAULT_MODEL = "gpt-4o-mini"
KEY_ENV = access.OPENAI.key_env
STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
_json = msgspec.json.Encoder()

CHAT_COMPLETIONS = UpstreamApi("openai", "/chat/completions", ("authorization", "Bearer "))


class OpenAIProvider:
    name = "openai"

    def __init__(self, options: dict[str, Any], ctx: ProviderContext) -> None:
        self.options = parse_options(options)
        self.ctx = ctx
        self.target = access.target(access.OPENAI, self.options, ctx)  # or AgentUnusable

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StepEvent]:
        call = self.call(request)
        async with aclosing(relay(self.ctx, call, StreamReader(call))) as events:
            async for event in events:
                yield event

    def call(self, request: ProviderRequest) -> Call:
        model = request.model or DEFAULT_MODEL
        return CHAT_COMPLETIONS.call(self.target, model, body(request, model))


def body(request: ProviderRequest, model: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "model": model,
        "messages": messages(request),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        result["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                },
            }
            for tool in request.tools
        ]
    if request.max_tokens is not None:
        # Not max_completion_tokens: OpenAI still accepts max_tokens, and compatible servers
        # mostly know only that.
        result["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        result["temperature"] = request.temperature
    return result


def messages(request: ProviderRequest) -> list[dict[str, Any]]:
    result = [{"role": "system", "content": request.system}] if request.system else []
    for turn in request.messages:
        result.extend(_assistant(turn) if turn.role == "assistant" else _user(turn))
    return result


def _text(turn: Turn) -> str:
    return "\n".join(block.text for block in turn.content if isinstance(block, TextBlock))


def _user(turn: Turn) -> list[dict[str, Any]]:
    result = [
        {"role": "tool", "tool_call_id": block.tool_use_id, "content": _result(block)}
        for block in turn.content
        if isinstance(block, ToolResultBlock)
    ]
    if text := _text(turn):
        result.append({"role": "user", "content": text})
    return result


def _result(block: ToolResultBlock) -> str:
    return f"Error: {block.content}" if block.is_error else block.content


def _assistant(turn: Turn) -> list[dict[str, Any]]:
    calls = [
        {
            "id": block.id,
            "type": "function",
            "function": {"name": block.name, "arguments": _json.encode(block.input).decode()},
        }
        for block in turn.content
        if isinstance(block, ToolUseBlock)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": _text(turn) or None}
    if calls:
        message["tool_calls"] = calls
    return [message] if message["content"] or calls else []


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _Function = msgspec.field(default_factory=_Function)


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: UpstreamError | str | None = None


_TEXT = -1  # the text block's key among the upstream tool-call indexes


class StreamReader:
    """Normalises one Chat Completions stream to step events, chunk by chunk."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.done = False
        self._started = False
        self._blocks: dict[int, int] = {}  # upstream key (tool index or _TEXT) -> our index
        self._open: list[int] = []
        self._no_input: set[int] = set()
        self._stop_reason: str | None = None
        self._usage: Usage | None = None
        self._deltas = 0

    def feed(self, data: str) -> list[StepEvent]:
        if self.done:
            return []
        if data.strip() == "[DONE]":
            return self._last()
        try:
            chunk = msgspec.json.decode(data, type=_Chunk)
        except msgspec.DecodeError as exc:
            raise broken_stream(
                self.call, f"unreadable chunk ({exc}): {excerpt(self.call, data)}"
            ) from exc
        if chunk.error is not None:
            raise stream_error(self.call, data)
        return self._chunk(chunk)

    def end(self) -> list[StepEvent]:
        """Called when the body ends: fine after `[DONE]` or a finish_reason, else a cut."""
        if self.done:
            return []
        if self._stop_reason is None:
            raise broken_stream(self.call, "the stream ended before finish_reason or [DONE]")
        return self._last()

    def _last(self) -> list[StepEvent]:
        self.done = True
        events = [*self._start(None), *self._close()]
        stop_reason = self._stop_reason or self._default_stop()
        usage = self._usage or Usage(0, self._deltas)
        return [*events, MessageDelta(StopInfo(stop_reason), usage), MessageStop()]

    def _default_stop(self) -> str:
        return "tool_use" if any(key != _TEXT for key in self._blocks) else "end_turn"

    def _start(self, chunk: _Chunk | None) -> list[StepEvent]:
        if self._started:
            return []
        self._started = True
        step_id = (chunk.id if chunk else None) or f"msg_{new_ulid()}"
        model = (chunk.model if chunk else None) or self.call.model
        return [MessageStart(StepInfo(step_id, model, usage=Usage(0)))]

    def _chunk(self, chunk: _Chunk) -> list[StepEvent]:
        events = self._start(chunk)
        if chunk.usage is not None:
            self._usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            if choice.index == 0 and self._stop_reason is None:
                events += self._delta(choice.delta)
                events += self._finish(choice.finish_reason)
        return events

    def _delta(self, delta: _Delta) -> list[StepEvent]:
        events: list[StepEvent] = []
        if delta.content:
            events += self._open_block(_TEXT, TextBlock(""))
            events.append(TextDelta(delta.content, self._blocks[_TEXT]))
            self._deltas += 1
        for position, call in enumerate(delta.tool_calls or []):
            events += self._tool_delta(position if call.index is None else call.index, call)
        return events

    def _tool_delta(self, key: int, call: _ToolCall) -> list[StepEvent]:
        block = ToolUseBlock(call.id or f"call_{new_ulid()}", call.function.name or "", {})
        events = self._open_block(key, block)
        index = self._blocks[key]
        if call.function.arguments:
            self._no_input.discard(index)
            events.append(InputJsonDelta(call.function.arguments, index))
            self._deltas += 1
        return events

    def _open_block(self, key: int, block: TextBlock | ToolUseBlock) -> list[StepEvent]:
        if key in self._blocks:
            return []
        index = self._blocks[key] = len(self._blocks)
        self._open.append(index)
        if isinstance(block, ToolUseBlock):
            self._no_input.add(index)
        return [ContentBlockStart(index, block)]

    def _finish(self, finish_reason: str | None) -> list[StepEvent]:
        if finish_reason is None:
            return []
        self._stop_reason = STOP_REASONS.get(finish_reason, finish_reason)
        return self._close()

    def _close(self) -> list[StepEvent]:
        events: list[StepEvent] = []
        for index in self._open:
            if index in self._no_input:
                events.append(InputJsonDelta("{}", index))
            events.append(ContentBlockStop(index))
        self._open = []
        return events
