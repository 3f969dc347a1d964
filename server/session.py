"""Session: a conversation rebuilt from its stored history, ready to be sent to a model.

Whatever the history's origin (a crash mid-step, an import, rows written by an older
version), `repair` makes it one a model API accepts: every `tool_use` is answered by a
`tool_result` in the next user turn, no `tool_result` answers nothing, no turn is empty, and
turns of the same role are merged.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.models import (
    Agent,
    ClientTool,
    ContentBlock,
    Message,
    SessionRecord,
    ToolResultBlock,
    ToolUseBlock,
    Turn,
)

INTERRUPTED = "interrupted: the run stopped before this tool call returned a result"


def unanswered(turns: list[Turn]) -> list[ToolUseBlock]:
    """The tool calls of the last assistant turn that no later turn answers."""
    last = max((i for i, turn in enumerate(turns) if turn.role == "assistant"), default=None)
    if last is None:
        return []
    answered = {
        block.tool_use_id
        for turn in turns[last + 1 :]
        for block in turn.content
        if isinstance(block, ToolResultBlock)
    }
    calls = [b for b in turns[last].content if isinstance(b, ToolUseBlock)]
    return [call for call in calls if call.id not in answered]


def answer_all(calls: Iterable[ToolUseBlock], message: str) -> list[ContentBlock]:
    return [ToolResultBlock(call.id, message, is_error=True) for call in calls]


def repair(turns: list[Turn]) -> list[Turn]:
    fixed: list[Turn] = []
    open_calls: list[ToolUseBlock] = []
    for turn in turns:
        if turn.role == "assistant":
            _close(fixed, open_calls)
            open_calls = [b for b in turn.content if isinstance(b, ToolUseBlock)]
            _push(fixed, Turn("assistant", list(turn.content)))
            continue
        wanted = {call.id for call in open_calls}
        results = [b for b in turn.content if isinstance(b, ToolResultBlock)]
        answered = [r for r in results if r.tool_use_id in wanted]
        missing = [c for c in open_calls if c.id not in {r.tool_use_id for r in answered}]
        others = [b for b in turn.content if not isinstance(b, ToolResultBlock)]
        blocks: list[ContentBlock] = [*answered, *answer_all(missing, INTERRUPTED), *others]
        open_calls = []
        _push(fixed, Turn("user", blocks))
    _close(fixed, open_calls)
    return fixed


def _close(fixed: list[Turn], open_calls: list[ToolUseBlock]) -> None:
    if open_calls:
        _push(fixed, Turn("user", answer_all(open_calls, INTERRUPTED)))


def _push(fixed: list[Turn], turn: Turn) -> None:
    if not turn.content:
        return
    if fixed and fixed[-1].role == turn.role:
        fixed[-1] = Turn(turn.role, [*fixed[-1].content, *turn.content])
        return
    fixed.append(turn)


class Session:
    """One session, ready to run: its record, its agent and its repaired history."""

    def __init__(
        self,
        record: SessionRecord,
        agent: Agent,
        history: list[Message],
        client_tools: list[ClientTool] | None = None,
    ) -> None:
        self.record = record
        self.agent = agent
        self.turns = repair([Turn(m.role, m.content) for m in history])
        self.client_tools = [t for t in agent.tools if isinstance(t, ClientTool)]
        self.client_tools += client_tools or []

    @property
    def tool_names(self) -> list[str]:
        return [t for t in self.agent.tools if isinstance(t, str)]

    def append(self, turn: Turn) -> None:
        _push(self.turns, turn)
