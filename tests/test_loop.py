"""The tool-calling loop alone, driven by a provider fed in advance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
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
    ToolResult,
)
from server.loop import CHUNK, Accumulator, LoopSettings, StepOutcome, run_loop
from server.models import Agent, TextBlock, ToolUseBlock, Usage, new_session_record
from server.providers.base import ProviderRequest
from server.session import Session
from server.tools.base import ToolContext, ToolSettings


class Fed:
    """A provider that plays steps queued in advance and keeps every request it got."""

    name = "fed"

    def __init__(self, *steps: list[StepEvent]) -> None:
        self.steps = list(steps)
        self.requests: list[ProviderRequest] = []

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StepEvent]:
        self.requests.append(request)
        for event in self.steps.pop(0):
            await asyncio.sleep(0)
            yield event


def step(*blocks: tuple[str, Any], stop: str = "end_turn") -> list[StepEvent]:
    events: list[StepEvent] = [MessageStart(StepInfo("m", "model", Usage(10, 0)))]
    for index, (kind, value) in enumerate(blocks):
        if kind == "text":
            events += [ContentBlockStart(index, TextBlock("")), TextDelta(value, index)]
        else:
            name, fragments = value
            events.append(ContentBlockStart(index, ToolUseBlock(f"t{index}", name, {})))
            events += [InputJsonDelta(f, index) for f in fragments]
        events.append(ContentBlockStop(index))
    return [*events, MessageDelta(StopInfo(stop), Usage(10, 5)), MessageStop()]


def session(tmp_path: Path, tools: list[str], max_steps: int = 16) -> Session:
    agent = Agent("a", "a", "fed", None, "sys", list(tools), max_steps, None, None, {}, "n", "n")
    record = msgspec.structs.replace(
        new_session_record("a", str(tmp_path)), id="s", created_at="n", updated_at="n"
    )
    return Session(record, agent, [])


async def drive(sess: Session, provider: Fed, settings: LoopSettings | None = None) -> list[Any]:
    # run_command included; where bubblewrap is missing, it runs unconfined here
    tools = ToolSettings(allow_run_command=True, allow_unsandboxed_commands=True)
    ctx = ToolContext(sess.record.work_dir, "s", "r", tools)
    items: list[Any] = []  # events and outcomes, in the order they came
    async for outcome in run_loop(sess, provider, ctx, settings or LoopSettings(), items.append):
        items.append(outcome)
        items += outcome.shown  # the runner shows a step's tool results once it is stored
    return items


def test_fragments_become_tool_input_and_results_are_fed_back(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    provider = Fed(
        step(
            ("text", "Looking"),
            ("tool", ("list_files", ['{"pa', 'th": ', '"."}'])),
            stop="tool_use",
        ),
        step(("text", "Done")),
    )
    sess = session(tmp_path, ["list_files"])
    items = asyncio.run(drive(sess, provider))
    outcomes = [i for i in items if isinstance(i, StepOutcome)]
    assert outcomes[0].assistant == [
        TextBlock("Looking"),
        ToolUseBlock("t1", "list_files", {"path": "."}),
    ]
    assert "f.txt" in outcomes[0].results[0].content
    assert outcomes[1].final and outcomes[1].stop_reason == "end_turn"
    second = provider.requests[1]
    assert [t.role for t in second.messages] == ["assistant", "user"]
    assert second.messages[1].content[0] == outcomes[0].results[0]
    assert second.tools[0].name == "list_files" and second.system == "sys"


def test_invalid_json_input_is_a_tool_error_the_model_sees(tmp_path: Path) -> None:
    provider = Fed(
        step(("tool", ("list_files", ['{"path": '])), stop="tool_use"), step(("text", "sorry"))
    )
    items = asyncio.run(drive(session(tmp_path, ["list_files"]), provider))
    [result] = [i for i in items if isinstance(i, ToolResult)]
    assert result.is_error and "not valid JSON" in result.content


def test_a_tool_past_its_time_is_an_error_and_the_loop_goes_on(tmp_path: Path) -> None:
    provider = Fed(
        step(("tool", ("run_command", ['{"command": "sleep 5"}'])), stop="tool_use"),
        step(("text", "ok")),
    )
    settings = LoopSettings(tool_timeout_s=0.3)
    items = asyncio.run(drive(session(tmp_path, ["run_command"]), provider, settings))
    [result] = [i for i in items if isinstance(i, ToolResult)]
    assert result.is_error and "timed out after 0.3 s" in result.content
    assert [i for i in items if isinstance(i, StepOutcome)][-1].stop_reason == "end_turn"


def test_max_steps_stops_after_running_the_last_calls(tmp_path: Path) -> None:
    calls = [step(("tool", ("list_files", ["{}"])), stop="tool_use") for _ in range(2)]
    items = asyncio.run(drive(session(tmp_path, ["list_files"], max_steps=2), Fed(*calls)))
    outcomes = [i for i in items if isinstance(i, StepOutcome)]
    assert len(outcomes) == 2 and outcomes[-1].final
    assert outcomes[-1].stop_reason == "max_steps" and outcomes[-1].results


def test_interleaved_deltas_of_any_length_assemble_exactly() -> None:
    text = [f"w{i} " for i in range(3 * CHUNK + 5)]
    payload = '{"path": "' + "é" * (2 * CHUNK) + '"}'
    acc = Accumulator()
    acc.add(ContentBlockStart(0, TextBlock("")))
    acc.add(ContentBlockStart(1, ToolUseBlock("t1", "read_file", {})))
    pieces = list(payload)
    for i in range(max(len(text), len(pieces))):
        if i < len(text):
            acc.add(TextDelta(text[i], 0))
        if i < len(pieces):
            acc.add(InputJsonDelta(pieces[i], 1))
    acc.add(ContentBlockStop(1))
    acc.add(ContentBlockStop(0))
    assert acc.content() == [
        TextBlock("".join(text)),
        ToolUseBlock("t1", "read_file", {"path": "é" * (2 * CHUNK)}),
    ]
