"""A session as an export: the JSON document (the session with every message and run), one
message per line (JSONL), and a Markdown transcript for people to read."""

from __future__ import annotations

import re

import msgspec

from server.models import (
    Agent,
    ContentBlock,
    Message,
    Run,
    SessionRecord,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)

VERSION = 1
_BACKTICKS = re.compile(r"`+")
_encoder = msgspec.json.Encoder()


class SessionExport(msgspec.Struct, omit_defaults=True):
    version: int
    session: SessionRecord
    runs: list[Run]
    messages: list[Message]
    agents: list[Agent] = []  # the session's agent, when asked for (with_agents)


def jsonl(messages: list[Message]) -> bytes:
    return b"".join(_encoder.encode(message) + b"\n" for message in messages)


def fenced(text: str, lang: str = "") -> str:
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def markdown(doc: SessionExport) -> str:
    names = {
        block.id: block.name
        for message in doc.messages
        for block in message.content
        if isinstance(block, ToolUseBlock)
    }
    parts = [_header(doc.session)]
    for message in doc.messages:
        parts.append(f"## {message.role.capitalize()} · {message.seq} · {message.created_at}")
        parts += [_block(block, names) for block in message.content]
    if doc.runs:
        parts.append("## Runs\n\n" + "\n".join(_run_line(run) for run in doc.runs))
    return "\n\n".join(parts) + "\n"


def _header(session: SessionRecord) -> str:
    title = session.title or session.name or f"Session {session.id}"
    facts = [
        ("id", session.id),
        ("name", session.name),
        ("agent", session.agent_id),
        ("work_dir", session.work_dir),
        ("status", session.status),
        ("tags", ", ".join(session.tags) or None),
        ("created", session.created_at),
        ("updated", session.updated_at),
        ("forked from", _fork_origin(session)),
        (
            "totals",
            f"{session.message_count} messages, {session.turn_count} turns, "
            f"{session.usage.input_tokens} input / {session.usage.output_tokens} output tokens",
        ),
    ]
    lines = [f"- **{label}**: {value}" for label, value in facts if value]
    return f"# {title}\n\n" + "\n".join(lines)


def _fork_origin(session: SessionRecord) -> str | None:
    if session.parent_id is None:
        return None
    at = session.forked_from_message_id
    return f"{session.parent_id} at message {at}" if at else session.parent_id


def _block(block: ContentBlock, names: dict[str, str]) -> str:
    match block:
        case TextBlock(text=text):
            return text
        case ToolUseBlock(id=call_id, name=name, input=input_):
            arguments = msgspec.json.format(_encoder.encode(input_), indent=2).decode()
            return f"**Tool call** `{name}` ({call_id})\n\n{fenced(arguments, 'json')}"
        case ToolResultBlock(tool_use_id=call_id, content=content, is_error=is_error):
            label = "Tool error" if is_error else "Tool result"
            name = names.get(call_id, call_id)
            return f"**{label}** from `{name}`\n\n{fenced(content)}"
    raise AssertionError(block)  # pragma: no cover


def _run_line(run: Run) -> str:
    tools = ", ".join(call.name for call in run.tool_calls) or "none"
    return (
        f"- {run.id}: {run.status}, {run.steps} steps, {run.usage.input_tokens} input / "
        f"{run.usage.output_tokens} output tokens, tools: {tools}"
    )
