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
import math
import re
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, Protocol

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
from server.models import TextBlock, ToolUseBlock, Usage
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
    # what a compaction's summary request gets back (the script is for the run's steps)
    summary: str = "Summary of the earlier conversation."


def parse_options(options: dict[str, Any]) -> ScriptedOptions:
    try:
        parsed = msgspec.convert(options, ScriptedOptions)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid scripted options: {exc}", field="options") from exc
    if parsed.token_delay_ms < 0:
        raise InvalidRequest("options.token_delay_ms must be >= 0", field="options")
    return parsed


def words(text: str) -> Iterator[str]:
    """The text's words, each with the whitespace after it, found one at a time as they are
    streamed: a paced reply is not held twice, as text and as words (a list of a 200-word
    reply's words was 12 KB per stream, a `finditer` scanner 1.5 KB)."""
    start, match = 0, _WORD.match
    while (found := match(text, start)) is not None:
        start = found.end()
        yield found.group()


def estimate_tokens(request: ProviderRequest) -> int:
    """Input usage from the request's size: about four characters of its JSON a token. The
    loop says the history's size, kept as it grows; encoding a long history again on every
    step cost more than the rest of a short turn."""
    chars = len(request.system or "") + sum(len(t.name) + len(t.description) for t in request.tools)
    chars += request.history_size or len(_json.encode(request.messages))
    return max(1, chars // 4)


def fragments(payload: str, pieces: int = 4) -> Iterator[str]:
    size = max(1, -(-len(payload) // pieces))
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


class PaceClock(Protocol):
    """Where paced deltas read the time and set their timers: the running event loop, or
    a clock that a test moves itself."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> object: ...


class ScriptedProvider:
    name = "scripted"

    def __init__(self, options: dict[str, Any], *, clock: PaceClock | None = None) -> None:
        self.options = parse_options(options)
        self.clock = clock

    def stream(self, request: ProviderRequest) -> AsyncIterator[StepEvent]:
        if request.purpose == "summary":
            return play_step(ScriptedStep(text=self.options.summary), request, 0.0, self.clock)
        script = self.options.script or [ScriptedStep(text="(empty script)")]
        step = script[min(request.step, len(script) - 1)]
        return play_step(step, request, self.options.token_delay_ms / 1000, self.clock)


def play_step(
    step: ScriptedStep,
    request: ProviderRequest,
    delay_s: float,
    clock: PaceClock | None = None,
) -> AsyncIterator[StepEvent]:
    """The step's events, each delta after its delay; without a delay the deltas come in
    bursts of BURST, as a fast upstream's reads deliver several at a time, with a turn of
    the event loop between bursts. `clock`: the running loop unless given."""
    events = step_events(step, request)
    return _Paced(events, delay_s, clock) if delay_s > 0 else _bursts(events)


BURST = 64
_DELTAS = (TextDelta, InputJsonDelta)


async def _bursts(events: Iterator[StepEvent]) -> AsyncIterator[StepEvent]:
    n = 0
    for event in events:
        if isinstance(event, _DELTAS):
            if n % BURST == 0:
                await asyncio.sleep(0)
            n += 1
        yield event


class _Paced:
    """Deltas one per delay, on a schedule kept from the first: delta i is due `i` delays
    after the step began, as a model produces tokens at its own pace whether or not they are
    read at once (a reader that falls behind then finds several waiting, not a slower
    model). Each `__anext__` hands out a future that the pacer completes when the delta is
    due (the other events' futures are complete at once): a thousand paced streams wake
    twenty thousand times a second, and an async generator around `asyncio.sleep` cost two
    more coroutine frames per wake."""

    def __init__(
        self,
        events: Generator[StepEvent, None, None],
        delay_s: float,
        clock: PaceClock | None = None,
    ) -> None:
        self._events = events
        self._delay_s = delay_s
        self._clock = clock
        self._due = 0.0  # when the next delta is, once the first is asked for
        self._pacer: _Pacer | None = None

    def __aiter__(self) -> _Paced:
        return self

    def __anext__(self) -> asyncio.Future[StepEvent]:
        event = next(self._events, None)
        if event is None:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StepEvent] = loop.create_future()
        if isinstance(event, _DELTAS):
            clock = self._clock or loop
            if self._pacer is None:
                self._pacer = _pacer(clock)
                self._due = clock.time()
            self._due += self._delay_s
            self._pacer.deliver(clock, self._due, future, event)
        else:
            future.set_result(event)
        return future

    async def aclose(self) -> None:
        self._events.close()


class _Pacer:
    """Completes paced deltas when they are due, on one timer per millisecond that has any:
    a timer per delta (a libuv timer and a handle each, made, queued and freed twenty
    thousand times a second for a thousand streams) was a tenth of the event loop. A delta
    goes out at most a millisecond after its time, as a timer's own slack allows anyway."""

    def __init__(self) -> None:  # keeps no reference to its clock: see `_pacers`
        self.due: dict[int, list[tuple[asyncio.Future[StepEvent], StepEvent]]] = {}

    def deliver(
        self,
        clock: PaceClock,
        when: float,
        future: asyncio.Future[StepEvent],
        event: StepEvent,
    ) -> None:
        tick = math.ceil(when * TICKS_PER_S)
        waiting = self.due.get(tick)
        if waiting is None:
            self.due[tick] = waiting = []
            clock.call_at(tick / TICKS_PER_S, self._fire, tick)
        waiting.append((future, event))

    def _fire(self, tick: int) -> None:
        for future, event in self.due.pop(tick):
            if not future.done():  # else the run was cancelled meanwhile
                future.set_result(event)


TICKS_PER_S = 1000
# a clock's (a loop's) pacer goes with it (a value that referred to its key would keep it alive)
_pacers: weakref.WeakKeyDictionary[PaceClock, _Pacer] = weakref.WeakKeyDictionary()


def _pacer(clock: PaceClock) -> _Pacer:
    pacer = _pacers.get(clock)
    if pacer is None:
        _pacers[clock] = pacer = _Pacer()
    return pacer


def step_events(step: ScriptedStep, request: ProviderRequest) -> Generator[StepEvent, None, None]:
    usage = Usage(input_tokens=estimate_tokens(request))
    yield MessageStart(StepInfo(id=f"msg_{new_ulid()}", model=request.model, usage=usage))
    index = 0
    if step.text is not None or not step.tool_calls:
        yield from _text_block(index, step.text or "", usage, step.error)
        index += 1
    for call in step.tool_calls:
        yield from _tool_block(index, call, usage)
        index += 1
    stop_reason = "tool_use" if step.tool_calls else "end_turn"
    yield MessageDelta(StopInfo(stop_reason), Usage(usage.input_tokens, usage.output_tokens))
    yield MessageStop()


def _text_block(
    index: int, text: str, usage: Usage, error: ScriptedError | None
) -> Iterator[StepEvent]:
    yield ContentBlockStart(index, TextBlock(""))
    fail_at = error.after_tokens if error is not None else -1
    for n, word in enumerate(words(text)):
        if n == fail_at:
            break
        usage.output_tokens += 1
        yield TextDelta(word, index)
    if error is not None:
        raise ProviderError(f"scripted {error.type}: {error.message}")
    yield ContentBlockStop(index)


def _tool_block(index: int, call: ScriptedCall, usage: Usage) -> Iterator[StepEvent]:
    block = ToolUseBlock(id=f"toolu_{new_ulid()}", name=call.name, input={})
    yield ContentBlockStart(index, block)
    for piece in fragments(_json.encode(call.input).decode()):
        usage.output_tokens += 1
        yield InputJsonDelta(piece, index)
    yield ContentBlockStop(index)
