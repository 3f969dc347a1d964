"""`scripted`: a deterministic provider played from the agent's `options.script`.

Each step is `{"text"?: str, "tool_calls"?: [{"name": str, "input": object}]}`; the i-th model
call of a run plays step i and the last step repeats. Text streams one `text_delta` per word
(the whitespace after a word goes with it), tool input as several `input_json_delta`
fragments. `options.token_delay_ms` paces the deltas like a real model. A step may also be
`{"error": {"type": str, "message": str, "after_tokens"?: int}}` to rehearse provider
failures. Tests, demos, benchmarks and client authors working offline use it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec

from server.errors import InvalidRequest, ProviderError
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
from server.models import TextBlock, ToolUseBlock, Turn, Usage
from server.providers.base import ProviderRequest

_WORD = re.compile(r"\s+|\S+\s*")
_json = msgspec.json.Encoder()


class ScriptedCall(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    input: dict[str, Any] = {}


class ScriptedError(msgspec.Struct, forbid_unknown_fields=True):
    message: str
    type: str = "provider_error"
    after_tokens: int = 0


class ScriptedStep(msgspec.Struct, forbid_unknown_fields=True):
    text: str | None = None
    tool_calls: list[ScriptedCall] = []
    error: ScriptedError | None = None


class ScriptedOptions(msgspec.Struct, forbid_unknown_fields=False):
    script: list[ScriptedStep] = []
    token_delay_ms: float = 0.0


def parse_options(options: dict[str, Any]) -> ScriptedOptions:
    try:
        parsed = msgspec.convert(options, ScriptedOptions)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid scripted options: {exc}", field="options") from exc
    if parsed.token_delay_ms < 0:
        raise InvalidRequest("options.token_delay_ms must be >= 0", field="options")
    return parsed


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def estimate_tokens(request: ProviderRequest) -> int:
    """Input usage from the request's size: about four characters a token."""
    chars = len(request.system or "") + sum(len(t.name) + len(t.description) for t in request.tools)
    chars += sum(_turn_chars(turn) for turn in request.messages)
    return max(1, chars // 4)


def _turn_chars(turn: Turn) -> int:
    total = 0
    for block in turn.content:
        match block:
            case TextBlock(text=text):
                total += len(text)
            case ToolUseBlock(name=name, input=input_):
                total += len(name) + len(_json.encode(input_))
            case _:
                total += len(block.content)
    return total


def fragments(payload: str, pieces: int = 4) -> Iterator[str]:
    size = max(1, -(-len(payload) // pieces))
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


class ScriptedProvider:
    name = "scripted"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = parse_options(options)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StepEvent]:
        script = self.options.script or [ScriptedStep(text="(empty script)")]
        step = script[min(request.step, len(script) - 1)]
        async for event in play_step(step, request, self.options.token_delay_ms / 1000):
            yield event


async def play_step(
    step: ScriptedStep, request: ProviderRequest, delay_s: float
) -> AsyncIterator[StepEvent]:
    usage = Usage(input_tokens=estimate_tokens(request))
    yield MessageStart(StepInfo(id=f"msg_{new_ulid()}", model=request.model, usage=usage))
    index = 0
    if step.text is not None or not step.tool_calls:
        async for event in _text_block(index, step.text or "", usage, delay_s, step.error):
            yield event
        index += 1
    for call in step.tool_calls:
        async for event in _tool_block(index, call, usage, delay_s):
            yield event
        index += 1
    stop_reason = "tool_use" if step.tool_calls else "end_turn"
    yield MessageDelta(StopInfo(stop_reason), Usage(usage.input_tokens, usage.output_tokens))
    yield MessageStop()


async def _pace(delay_s: float) -> None:
    # A zero delay still yields to the event loop, as a real socket read would.
    await asyncio.sleep(delay_s)


async def _text_block(
    index: int, text: str, usage: Usage, delay_s: float, error: ScriptedError | None
) -> AsyncIterator[StepEvent]:
    yield ContentBlockStart(index, TextBlock(""))
    for n, word in enumerate(words(text)):
        if error is not None and n >= error.after_tokens:
            raise ProviderError(f"scripted {error.type}: {error.message}")
        await _pace(delay_s)
        usage.output_tokens += 1
        yield TextDelta(word, index)
    if error is not None:
        raise ProviderError(f"scripted {error.type}: {error.message}")
    yield ContentBlockStop(index)


async def _tool_block(
    index: int, call: ScriptedCall, usage: Usage, delay_s: float
) -> AsyncIterator[StepEvent]:
    block = ToolUseBlock(id=f"toolu_{new_ulid()}", name=call.name, input={})
    yield ContentBlockStart(index, block)
    for piece in fragments(_json.encode(call.input).decode()):
        await _pace(delay_s)
        usage.output_tokens += 1
        yield InputJsonDelta(piece, index)
    yield ContentBlockStop(index)
