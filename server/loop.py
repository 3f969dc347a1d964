"""The tool-calling loop: provider.stream → tool calls → results → repeat.

The loop hands every event to `emit` as the provider produces it, and yields a `StepOutcome`
each time a step is complete (the assistant message, its tool results in call order, usage).
The runner persists each outcome before the loop resumes, so a step is stored before the next
one asks the model anything. Events go to a plain call rather than through the generator,
since resuming an async generator for every token is a large share of a stream's event-loop
time (bench stream).

A step's `tool_result` events travel in its outcome instead: the runner shows them once the
step is stored, so a result a client has seen is never lost to a crash (the tools may have
changed files or run commands).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from server import tools
from server.compaction import fixed_tokens
from server.errors import ProviderError, RunLimit
from server.events import (
    ContentBlockStart,
    ContentBlockStop,
    Event,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    StepEvent,
    TextDelta,
    ToolResult,
)
from server.ids import new_ulid
from server.models import (
    ContentBlock,
    PendingToolCall,
    TextBlock,
    ToolCallRecord,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Turn,
    Usage,
)
from server.providers.base import Provider, ProviderRequest
from server.session import Session
from server.tools.base import ToolContext

_decode_input = msgspec.json.Decoder(dict[str, Any]).decode


class StepOutcome(msgspec.Struct):
    step: int
    assistant: list[ContentBlock]
    results: list[ToolResultBlock]
    pending: list[PendingToolCall]
    tool_calls: list[ToolCallRecord]
    usage: Usage
    stop_reason: str | None
    final: bool
    shown: list[ToolResult] = []  # the step's tool_result events, shown once it is stored
    first_token_s: float | None = None  # from the request to its first content block


MAX_STEP_OUTPUT_BYTES = 8 * 1024 * 1024


class LoopSettings(msgspec.Struct, frozen=True):
    tool_concurrency: int = 8
    tool_timeout_s: float = 120.0
    max_step_output_bytes: int = MAX_STEP_OUTPUT_BYTES


CHUNK = 16  # deltas joined into one string as they come: a long reply held as text


# At most what an event adds to its text in the event log (its JSON, its type, a separator):
# a step's output is counted as stored, so that an upstream sending one character a delta
# cannot make the event log many times the size of the cap.
TEXT_FRAMING = 64
JSON_FRAMING = 80
BLOCK_FRAMING = 160


class Accumulator:
    """Builds the step's assistant message from its events. Each block's deltas are joined
    a CHUNK at a time, since a string object per token would cost a long reply's stream
    several times the memory (bench many: RSS per stream).

    The step's output is capped (`max_bytes`, framing included): an upstream that never
    stops ends the run when it goes over, before the delta that did is emitted or stored.
    Tool call ids are kept unique within the session (`taken`, shared across steps)."""

    def __init__(
        self, max_bytes: int = MAX_STEP_OUTPUT_BYTES, taken: set[str] | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.room = max_bytes  # bytes the step may still produce
        self.taken = set() if taken is None else taken
        self.blocks: dict[int, ContentBlock] = {}
        self.parts: dict[int, list[str]] = {}  # the latest deltas, fewer than CHUNK
        self.chunks: dict[int, list[str]] = {}  # earlier deltas, CHUNK to a string
        self.bad_input: dict[str, str] = {}
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.asked = time.monotonic()  # when the step's request went out
        self.first_at: float | None = None  # when its first content block began
        self.events = 0  # emitted so far: a step that emitted any cannot be asked again

    def first_token_s(self) -> float | None:
        return None if self.first_at is None else self.first_at - self.asked

    def add(self, event: StepEvent) -> None:
        if type(event) is TextDelta:  # nearly every event: no `match` needed
            return self._part(event.index, event.text, TEXT_FRAMING)
        if type(event) is InputJsonDelta:
            return self._part(event.index, event.partial_json, JSON_FRAMING)
        match event:
            case MessageStart(message=info):
                self.usage = Usage(info.usage.input_tokens, info.usage.output_tokens)
            case ContentBlockStart(index=index, content_block=block):
                if self.first_at is None:  # once per block, not per delta
                    self.first_at = time.monotonic()
                if type(block) is ToolUseBlock:
                    block = self._unique(event, block)
                    self._spend(BLOCK_FRAMING + len(block.id) + len(block.name))
                else:
                    self._spend(BLOCK_FRAMING)
                self.blocks[index] = block
                self.parts[index] = []
            case ContentBlockStop(index=index):
                self._close(index)
            case MessageDelta(delta=delta, usage=usage):
                self.stop_reason = delta.stop_reason
                self.usage = Usage(
                    max(usage.input_tokens, self.usage.input_tokens), usage.output_tokens
                )

    def _spend(self, size: int) -> None:
        self.room -= size
        if self.room < 0:
            self._over()

    def _over(self) -> None:
        raise RunLimit(
            f"a model step's output went over {self.max_bytes} bytes "
            "(max_step_output_bytes): the run is stopped"
        )

    def _unique(self, event: ContentBlockStart, block: ToolUseBlock) -> ToolUseBlock:
        """A tool call id the session already holds (upstreams that number calls call_1,
        call_2, … afresh) gets a fresh one, in the event too: its result, the stored history
        and every later event name the new id, and the history stays importable."""
        if block.id in self.taken:
            block = ToolUseBlock(f"toolu_{new_ulid()}", block.name, block.input)
            event.content_block = block
        self.taken.add(block.id)
        return block

    def _part(self, index: int, text: str, framing: int) -> None:
        self.room -= (len(text) if text.isascii() else len(text.encode())) + framing
        if self.room < 0:  # inline: once per delta
            self._over()
        parts = self.parts.get(index)
        if parts is None:
            self.parts[index] = parts = []
        parts.append(text)
        if len(parts) == CHUNK:
            self.chunks.setdefault(index, []).append("".join(parts))
            parts.clear()

    def _close(self, index: int) -> None:
        block = self.blocks.get(index)
        joined = "".join([*self.chunks.pop(index, ()), *self.parts.pop(index, ())])
        if isinstance(block, TextBlock):
            self.blocks[index] = TextBlock(block.text + joined)
        elif isinstance(block, ToolUseBlock):
            self.blocks[index] = ToolUseBlock(block.id, block.name, self._input(block, joined))

    def _input(self, block: ToolUseBlock, raw: str) -> dict[str, Any]:
        if not raw.strip():
            return dict(block.input)
        try:
            return _decode_input(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.bad_input[block.id] = raw
            return {}

    def content(self) -> list[ContentBlock]:
        blocks = [self.blocks[i] for i in sorted(self.blocks)]
        return [b for b in blocks if not (isinstance(b, TextBlock) and not b.text)]


Compact = Callable[[Session, bool], Awaitable[bool]]


async def run_loop(
    session: Session,
    provider: Provider,
    ctx: ToolContext,
    settings: LoopSettings,
    emit: Callable[[Event], Awaitable[None] | None],
    first_step: int = 0,
    compact: Compact | None = None,
) -> AsyncIterator[StepOutcome]:
    """`emit` may hand back something to await before the next event: the run's event log
    is too far ahead of its commits. `compact(session, forced)`, if given, is awaited before
    a step whose input would pass the session's `compact_at` (forced False), and once a run
    when the provider refuses a step's input as too long (forced True, the step then asked
    again); it says whether it replaced the session's turns."""
    agent = session.agent
    specs = tool_specs(session)
    fixed = fixed_tokens(agent.system, specs)
    client = {tool.name for tool in session.client_tools}
    taken = session.tool_ids
    retried = False  # one compaction and one retry for a refused input, never a loop
    budget = compact is not None  # off for the run once a compaction finds nothing to cut
    for step in range(first_step, agent.max_steps):
        if budget and compact and session.size // 4 + fixed > session.compact_at:
            budget = await compact(session, False)
        while True:
            acc = Accumulator(settings.max_step_output_bytes, taken)
            try:
                await _stream_step(session, provider, specs, step, acc, emit)
            except ProviderError as exc:
                if not exc.context_too_long or compact is None or retried or acc.events:
                    raise
                retried = True
                if not await compact(session, True):
                    raise
                continue
            break
        assistant = acc.content()
        calls = [b for b in assistant if isinstance(b, ToolUseBlock)]
        session.append(Turn("assistant", assistant))
        last = step == agent.max_steps - 1
        if not calls:
            yield _outcome(step, assistant, acc, [], [], [], acc.stop_reason, final=True)
            return
        pending = [PendingToolCall(c.id, c.name, c.input) for c in calls if c.name in client]
        server_calls = [c for c in calls if c.name not in client]
        results: list[ToolResultBlock] = []
        records: list[ToolCallRecord] = []
        shown: list[ToolResult] = []
        async for item in run_tools(server_calls, session, ctx, settings, acc.bad_input, step):
            if isinstance(item, ToolResult):
                shown.append(item)
            else:
                results, records = item
        if pending:
            yield _outcome(
                step, assistant, acc, results, pending, records, "requires_action", True, shown
            )
            return
        session.append(Turn("user", list(results)))
        stop = "max_steps" if last else acc.stop_reason
        yield _outcome(step, assistant, acc, results, [], records, stop, last, shown)
    return


async def _stream_step(
    session: Session,
    provider: Provider,
    specs: list[ToolSpec],
    step: int,
    acc: Accumulator,
    emit: Callable[[Event], Awaitable[None] | None],
) -> None:
    agent = session.agent
    request = ProviderRequest(
        model=agent.model,
        system=agent.system,
        messages=list(session.turns),
        tools=specs,
        max_tokens=agent.max_tokens,
        temperature=agent.temperature,
        options=agent.options,
        step=step,
        history_size=session.size,
    )
    acc.asked = time.monotonic()
    stream = provider.stream(request)
    try:
        add = acc.add
        async for event in stream:
            add(event)
            acc.events += 1
            pause = emit(event)
            if pause is not None:
                await pause
    finally:  # close the upstream request now, not when the generator is collected
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _outcome(
    step: int,
    assistant: list[ContentBlock],
    acc: Accumulator,
    results: list[ToolResultBlock],
    pending: list[PendingToolCall],
    records: list[ToolCallRecord],
    stop_reason: str | None,
    final: bool,
    shown: list[ToolResult] | None = None,
) -> StepOutcome:
    return StepOutcome(
        step=step,
        assistant=assistant,
        results=results,
        pending=pending,
        tool_calls=records,
        usage=acc.usage,
        stop_reason=stop_reason,
        final=final,
        shown=shown or [],
        first_token_s=acc.first_token_s(),
    )


def tool_specs(session: Session) -> list[ToolSpec]:
    specs = [tools.spec(name) for name in session.tool_names if tools.is_builtin(name)]
    specs += [ToolSpec(t.name, t.description, t.input_schema) for t in session.client_tools]
    return specs


async def run_tools(
    calls: list[ToolUseBlock],
    session: Session,
    ctx: ToolContext,
    settings: LoopSettings,
    bad_input: dict[str, str],
    step: int,
) -> AsyncIterator[ToolResult | tuple[list[ToolResultBlock], list[ToolCallRecord]]]:
    """Run one step's calls concurrently (bounded); yield each result event as it lands, then
    the results and records in call order."""
    allowed = set(session.tool_names)
    gate = asyncio.Semaphore(max(1, settings.tool_concurrency))
    done: asyncio.Queue[tuple[int, ToolResultBlock, int]] = asyncio.Queue()

    async def one(i: int, call: ToolUseBlock) -> None:
        async with gate:
            started = time.monotonic()
            content, is_error = await _call(call, allowed, ctx, settings, bad_input)
            elapsed = int((time.monotonic() - started) * 1000)
            await done.put((i, ToolResultBlock(call.id, content, is_error), elapsed))

    tasks = [asyncio.create_task(one(i, call)) for i, call in enumerate(calls)]
    slots: list[tuple[ToolResultBlock, int] | None] = [None] * len(calls)
    try:
        for _ in calls:
            i, result, elapsed = await done.get()
            slots[i] = (result, elapsed)
            yield ToolResult(result.tool_use_id, calls[i].name, result.content, result.is_error)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    results = [slot[0] for slot in slots if slot is not None]
    records = [
        ToolCallRecord(
            id=c.id,
            name=c.name,
            input=c.input,
            output_bytes=len(r.content.encode()),
            is_error=r.is_error,
            duration_ms=elapsed,
            step=step,
        )
        for c, (r, elapsed) in zip(calls, [s for s in slots if s is not None], strict=True)
    ]
    yield results, records


async def _call(
    call: ToolUseBlock,
    allowed: set[str],
    ctx: ToolContext,
    settings: LoopSettings,
    bad_input: dict[str, str],
) -> tuple[str, bool]:
    if call.id in bad_input:
        return f"the tool input was not valid JSON: {bad_input[call.id][:200]!r}", True
    if call.name not in allowed or not tools.is_builtin(call.name):
        names = ", ".join(sorted(allowed)) or "none"
        return f"unknown tool {call.name!r}; tools available to this agent: {names}", True
    # A tool with its own `timeout_s` (run_command) keeps it, so its own message wins.
    own = call.input.get("timeout_s")
    limit = settings.tool_timeout_s
    if isinstance(own, int | float) and not isinstance(own, bool):
        limit = max(limit, float(own) + 5)
    try:
        outcome = await asyncio.wait_for(tools.call(call.name, call.input, ctx), limit)
    except TimeoutError:
        return f"tool {call.name} timed out after {limit:g} s", True
    return outcome.content, outcome.is_error
