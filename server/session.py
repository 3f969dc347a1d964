"""Session: a conversation rebuilt from its stored history, ready to be sent to a model.

Whatever the history's origin (a crash mid-step, an import, rows written by an older
version), `repair` makes it one a model API accepts: every `tool_use` is answered by a
`tool_result` in the next user turn, no `tool_result` answers nothing, no turn is empty, and
turns of the same role are merged.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from server.models import (
    Agent,
    ClientTool,
    ContentBlock,
    Message,
    SessionRecord,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Turn,
    compact_at_of,
)

INTERRUPTED = "interrupted: the run stopped before this tool call returned a result"
SUMMARY_HEAD = "[Summary of the earlier conversation, which was compacted]\n"
_json = msgspec.json.Encoder()


def size_of(turns: list[Turn]) -> int:
    """The turns' size as JSON, in characters (bytes of UTF-8): what a provider that must
    estimate its input usage counts."""
    return len(_json.encode(turns))


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


class History:
    """A repaired history that grows one stored message at a time, so a long session is
    repaired once and then only extended (the runner keeps these per active session)."""

    def __init__(self) -> None:
        self.fixed: list[Turn] = []
        self.open_calls: list[ToolUseBlock] = []
        self.last_seq = 0
        self.count = 0
        self.tool_ids: set[str] = set()  # of every call so far: an upstream may reuse one
        self._size: int | None = None  # of `fixed`, once asked for, then kept up to date

    def add(self, turn: Turn, seq: int = 0) -> None:
        self.last_seq, self.count = max(seq, self.last_seq), self.count + 1
        if self._size is not None:
            self._size += len(_json.encode(turn))
        if turn.role == "assistant":
            self._close()
            self.open_calls = [b for b in turn.content if type(b) is ToolUseBlock]
            self.tool_ids.update(call.id for call in self.open_calls)
            _push(self.fixed, turn)
        elif not self.open_calls and all(type(b) is not ToolResultBlock for b in turn.content):
            _push(self.fixed, turn)  # the common case: nothing to answer, nothing to drop
        else:
            _push(self.fixed, Turn("user", self._answer(turn.content)))

    def _answer(self, content: list[ContentBlock]) -> list[ContentBlock]:
        wanted = {call.id for call in self.open_calls}
        answered = [b for b in content if type(b) is ToolResultBlock and b.tool_use_id in wanted]
        done = {r.tool_use_id for r in answered}
        missing = [call for call in self.open_calls if call.id not in done]
        others = [b for b in content if type(b) is not ToolResultBlock]
        self.open_calls = []
        return [*answered, *answer_all(missing, INTERRUPTED), *others]

    def _close(self) -> None:
        if self.open_calls:
            _push(self.fixed, Turn("user", answer_all(self.open_calls, INTERRUPTED)))
            self.open_calls = []

    def turns(self) -> list[Turn]:
        """The history as a model may see it: calls still open get `interrupted` results."""
        out = list(self.fixed)
        if self.open_calls:
            _push(out, Turn("user", answer_all(self.open_calls, INTERRUPTED)))
        return out

    def size(self) -> int:
        """`size_of` the turns, counted once and then kept as turns are added."""
        if self._size is None:
            self._size = size_of(self.fixed)
        return self._size

    def add_message(self, message: Message) -> None:
        """A stored message joins the history; a compaction entry only as the first (the
        turns it summarises are not in the history it starts)."""
        if message.role == "compaction":
            self.add(summary_turn(message), message.seq)
        else:
            self.add(Turn(message.role, message.content), message.seq)

    @classmethod
    def of(cls, messages: Iterable[Message]) -> History:
        """The history a model sees of stored messages: from the latest compaction entry
        among them (its summary, then the turns after what it summarises), else all."""
        rows = list(messages)
        history = cls()
        latest = next((m for m in reversed(rows) if m.role == "compaction"), None)
        if latest is not None:
            through = latest.compaction.through_seq if latest.compaction else latest.seq
            history.add_message(latest)
            rows = [m for m in rows if m.seq > through and m.role != "compaction"]
        for message in rows:
            history.add_message(message)
        return history


def summary_turn(entry: Message) -> Turn:
    """A compaction entry as the model sees it: a user turn that says what it is."""
    text = "".join(b.text for b in entry.content if isinstance(b, TextBlock))
    return Turn("user", [TextBlock(SUMMARY_HEAD + text)])


def repair(turns: list[Turn]) -> list[Turn]:
    history = History()
    for turn in turns:
        history.add(turn)
    return history.turns()


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
        history: list[Message] | History,
        client_tools: list[ClientTool] | None = None,
    ) -> None:
        self.record = record
        self.agent = agent
        known = history if isinstance(history, History) else History.of(history)
        self.turns = known.turns()
        self.size = known.size()  # about size_of(self.turns): a guide, not an exact count
        self.tool_ids = set(known.tool_ids)  # kept as the history grows: no scan per run
        self.compact_at = compact_at_of(agent)  # input tokens past which a step compacts first
        self.client_tools = [t for t in agent.tools if isinstance(t, ClientTool)]
        self.client_tools += client_tools or []

    @property
    def tool_names(self) -> list[str]:
        return [t for t in self.agent.tools if isinstance(t, str)]

    def append(self, turn: Turn) -> None:
        _push(self.turns, turn)
        self.size += len(_json.encode(turn))

    def replace_history(self, history: History) -> None:
        """After a compaction: the summary and the recent turns in place of the whole."""
        self.turns = history.turns()
        self.size = history.size()
