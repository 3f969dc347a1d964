"""Where compaction cuts a history: never between a tool call and its result, never past the
latest user message, keeping as many recent turns as fit."""

from __future__ import annotations

from typing import Any

from server.compaction import plan
from server.models import Message, TextBlock, ToolResultBlock, ToolUseBlock, new_messages
from server.providers.http import too_long
from server.session import History

Entry = tuple[Any, list[Any]]


def stored(entries: list[Entry]) -> list[Message]:
    return new_messages("s", 1, entries, None, "2026-01-01T00:00:00.000Z")


def agentic(rounds: int) -> list[Entry]:
    out: list[Entry] = []
    for i in range(rounds):
        out.append(("user", [TextBlock(f"question {i} " + "w" * 200)]))
        out.append(("assistant", [ToolUseBlock(f"t{i}", "read_file", {"path": "x" * 100})]))
        out.append(("user", [ToolResultBlock(f"t{i}", "r" * 400)]))
        out.append(("assistant", [TextBlock("answer " + "a" * 200)]))
    return out


def test_the_cut_keeps_what_fits_and_never_splits_a_call_from_its_result() -> None:
    messages = stored(agentic(50))
    for keep in (0, 300, 1_000, 5_000):
        found = plan(None, messages, 10, keep)
        assert found is not None
        first = found.kept[0]
        assert not any(isinstance(b, ToolResultBlock) for b in first.content)
        assert found.summarised + found.kept == messages
        assert found.tokens_kept == sum(m.tokens for m in found.kept)
        if keep == 0:  # everything but the latest user message and what follows
            assert [m.seq for m in found.kept] == [197, 198, 199, 200]
        else:
            assert found.tokens_kept + 10 <= keep or len(found.kept) == 4
        # the kept turns make a history a model accepts with no repair needed
        turns = History.of(found.kept).turns()
        assert len(turns) == len(found.kept)


def test_the_latest_user_message_is_never_summarised() -> None:
    """A long run after the last user message: the cut stays at that message."""
    entries: list[Entry] = [("user", [TextBlock("old")]), ("assistant", [TextBlock("ok")])]
    entries.append(("user", [TextBlock("do many things")]))
    for i in range(30):
        entries.append(("assistant", [ToolUseBlock(f"c{i}", "list_files", {})]))
        entries.append(("user", [ToolResultBlock(f"c{i}", "x" * 300)]))
    messages = stored(entries)
    found = plan(None, messages, 0, 10)
    assert found is not None
    assert [m.seq for m in found.summarised] == [1, 2]
    assert found.kept[0].content == [TextBlock("do many things")]


def test_nothing_to_cut() -> None:
    only = stored([("user", [TextBlock("hello")]), ("assistant", [TextBlock("hi")])])
    assert plan(None, only, 0, 0) is None
    assert plan(None, [], 0, 0) is None


def test_context_too_long_is_told_from_other_refusals() -> None:
    assert too_long("prompt is too long: 210000 tokens > 200000 maximum")
    assert too_long("This model's maximum context length is 128000 tokens. However, you requested")
    assert too_long("context_length_exceeded")
    assert not too_long("max_tokens: must be at most 8192")
    assert not too_long("invalid x-api-key")
