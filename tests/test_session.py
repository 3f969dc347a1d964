"""History repair: whatever its origin, the history sent to a model is one it accepts."""

from __future__ import annotations

from server.models import TextBlock, ToolResultBlock, ToolUseBlock, Turn
from server.session import INTERRUPTED, repair, unanswered


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
