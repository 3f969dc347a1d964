"""Compaction: when a session's input would pass its agent's `compact_at`, the older turns are
summarised into one `compaction` entry, and the model sees the system prompt, the summary and
the recent turns from then on. Nothing is deleted: the history stays stored whole.

`plan` chooses where the recent turns begin. The cut goes before an assistant message or
before a user message that answers no tool call, so a `tool_use` and its `tool_result` are
always on the same side; it is never after the latest user message, which is always kept
whole. It keeps as many recent turns as fit in `keep` tokens (half the budget, so that the
run has room to go on), and at the least the latest user message and what follows it.

`summarise` asks a provider to write the summary: the turns to summarise (with the summary
they follow, if any) go as plain text in chunks of at most `chunk_chars`, each chunk's
request carrying the summary so far, so a history of any length is summarised within the
summariser's own window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from server.errors import ProviderError
from server.events import StepEvent, TextDelta
from server.models import (
    Agent,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Turn,
    context_window_of,
)
from server.providers.base import Provider, ProviderRequest

SUMMARY_SYSTEM = (
    "You compact a conversation between a user and an AI agent that uses tools. Write a "
    "summary that lets the agent carry on without the original turns: the user's goals and "
    "instructions, decisions made, facts and results found (file names, values, errors), "
    "what was done with which tool, and what is still open. Be concise; leave out nothing "
    "the agent needs."
)
BLOCK_CHARS = 2_000  # of one block's text in the summariser's input, at most
_json = msgspec.json.Encoder()


class Plan(msgspec.Struct):
    summarised: list[Message]  # to summarise (after the previous compaction, if any)
    kept: list[Message]  # the recent turns, kept as they are
    tokens_before: int
    tokens_kept: int


def tokens_of(messages: list[Message]) -> int:
    return sum(m.tokens for m in messages)


def fixed_tokens(system: str | None, specs: list[ToolSpec]) -> int:
    """What a request costs besides its turns: the system prompt and the tools' specs."""
    return (len(system or "") + len(_json.encode(specs))) // 4


def can_start(message: Message) -> bool:
    """The recent turns may begin here: nothing before answers a call made after."""
    if message.role == "assistant":
        return True
    return message.role == "user" and not any(type(b) is ToolResultBlock for b in message.content)


def latest_user(messages: list[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user" and can_start(messages[i]):
            return i
    return None


def plan(previous: Message | None, messages: list[Message], fixed: int, keep: int) -> Plan | None:
    """Where to cut `messages` (the turns after `previous`, the latest compaction entry),
    or None when nothing can be summarised."""
    last = latest_user(messages)
    bound = len(messages) - 1 if last is None else last
    tail = tokens_of(messages)
    cut: int | None = None
    running = tail
    for i, message in enumerate(messages[: bound + 1]):
        if i > 0 and can_start(message):
            cut = i
            if running + fixed <= keep:
                break
        running -= message.tokens
    if cut is None:
        return None
    before = fixed + tail + (previous.tokens if previous is not None else 0)
    kept = messages[cut:]
    return Plan(messages[:cut], kept, before, tokens_of(kept))


def render(message: Message) -> str:
    """A stored message as lines of plain text for the summariser."""
    lines = []
    for block in message.content:
        if type(block) is TextBlock:
            lines.append(f"[{message.role}] {_cut(block.text)}")
        elif type(block) is ToolUseBlock:
            lines.append(f"[tool call {block.name}] {_cut(_json.encode(block.input).decode())}")
        elif type(block) is ToolResultBlock:
            error = " (error)" if block.is_error else ""
            lines.append(f"[tool result{error}] {_cut(block.content)}")
    return "\n".join(lines)


def _cut(text: str) -> str:
    return text if len(text) <= BLOCK_CHARS else text[:BLOCK_CHARS] + " …(cut)"


def chunks(messages: list[Message], chunk_chars: int) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    size = 0
    for message in messages:
        text = render(message)
        if current and size + len(text) > chunk_chars:
            out.append("\n".join(current))
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        out.append("\n".join(current))
    return out


def summary_prompt(summary: str | None, chunk: str) -> str:
    head = f"The summary so far:\n{summary}\n\n" if summary else ""
    return (
        f"{head}The conversation {'goes on' if summary else 'so far'}:\n{chunk}\n\n"
        "Write the summary of all of it now, as plain text."
    )


def chunk_chars_of(agent: Agent) -> int:
    """Characters of conversation a summary request carries: about half its window."""
    return max(4_000, context_window_of(agent) * 2)


async def summarise(
    provider: Provider, agent: Agent, previous: str | None, messages: list[Message]
) -> str:
    summary = previous
    for chunk in chunks(messages, chunk_chars_of(agent)) or [""]:
        request = ProviderRequest(
            model=agent.model,
            system=SUMMARY_SYSTEM,
            messages=[Turn("user", [TextBlock(summary_prompt(summary, chunk))])],
            tools=[],
            max_tokens=agent.max_tokens,
            temperature=agent.temperature,
            options=agent.options,
            step=0,
            purpose="summary",
        )
        text = await collect_text(provider.stream(request))
        if not text.strip():
            raise ProviderError(f"provider {provider.name} wrote an empty summary")
        summary = text.strip()
    assert summary is not None
    return summary


async def collect_text(stream: AsyncIterator[StepEvent]) -> str:
    parts: list[str] = []
    try:
        async for event in stream:
            if type(event) is TextDelta:
                parts.append(event.text)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return "".join(parts)
