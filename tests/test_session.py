"""History repair: whatever its origin, the history sent to a model is one it accepts."""

from __future__ import annotations

import msgspec

from server.models import (
    Agent,
    ContentBlock,
    Message,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Turn,
    new_session_record,
)
from server.session import INTERRUPTED, History, Session, repair, size_of, unanswered


def use(call_id: str) -> ToolUseBlock:
    return ToolUseBlock(call_id, "list_files", {})


def result(call_id: str, text: str = "ok") -> ToolResultBlock:
    return ToolResultBlock(call_id, text)


def test_dangling_tool_use_at_the_end_gets_an_error_result() -> None:
    turns = [Turn("user", [TextBlock("hi")]), Turn("assistant", [TextBlock("x"), use("a")])]
    fixed = repair(turns)
    assert fixed[-1] == Turn("user", [ToolResultBlock("a", INTERRUPTED, is_error=True)])
    assert unanswered(turns) == [use("a")]
    assert unanswered(fixed) == []


def test_missing_result_before_a_new_user_message_is_merged_first() -> None:
    turns = [
        Turn("user", [TextBlock("hi")]),
        Turn("assistant", [use("a"), use("b")]),
        Turn("user", [result("b")]),
        Turn("user", [TextBlock("next")]),
    ]
    fixed = repair(turns)
    assert [t.role for t in fixed] == ["user", "assistant", "user"]
    blocks = fixed[2].content
    assert blocks[0] == result("b")
    assert blocks[1] == ToolResultBlock("a", INTERRUPTED, is_error=True)
    assert blocks[2] == TextBlock("next")


def test_orphan_results_and_empty_turns_are_dropped() -> None:
    turns = [
        Turn("user", [result("ghost"), TextBlock("hi")]),
        Turn("assistant", []),
        Turn("assistant", [TextBlock("hello")]),
    ]
    assert repair(turns) == [
        Turn("user", [TextBlock("hi")]),
        Turn("assistant", [TextBlock("hello")]),
    ]


def test_a_valid_history_is_unchanged() -> None:
    turns = [
        Turn("user", [TextBlock("hi")]),
        Turn("assistant", [use("a")]),
        Turn("user", [result("a")]),
        Turn("assistant", [TextBlock("done")]),
    ]
    assert repair(turns) == turns


def test_the_kept_size_follows_the_history_as_it_grows() -> None:
    def stored(seq: int) -> Message:
        role: Role = "user" if seq % 2 else "assistant"
        content: list[ContentBlock] = [TextBlock(f"message number {seq} " * (seq % 7 + 1))]
        if role == "assistant" and seq % 4 == 0:
            content.append(use(f"c{seq}"))
        elif seq % 4 == 1 and seq > 1:
            content.insert(0, result(f"c{seq - 1}", "é" * seq))
        return Message(f"m{seq}", "s", seq, role, content, None, "t")

    history = History.of(stored(seq) for seq in range(1, 200))
    assert abs(history.size() - size_of(history.turns())) <= 200  # a comma a turn, at most
    for seq in range(200, 260):
        history.add(Turn(stored(seq).role, stored(seq).content), seq)
    assert abs(history.size() - size_of(history.turns())) <= 260
    agent = Agent("a", "a", "scripted", None, None, [], 16, None, None, {}, "t", "t")
    record = msgspec.structs.replace(
        new_session_record("a", None), id="s", message_count=259, created_at="t", updated_at="t"
    )
    session = Session(record, agent, history)
    before = session.size
    session.append(Turn("assistant", [TextBlock("x" * 5000)]))
    assert session.size - before >= 5000
    assert abs(session.size - size_of(session.turns)) <= 300
