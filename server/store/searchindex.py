"""Keeping `message_search` (schema step 2) in step with new messages.

Each new message gets one FTS5 row under its rowid, holding what a reader would search for:
a text block's text, a tool call's name and input, a tool result's output, one per line.
Deleted and edited messages are handled by schema.sql's triggers; new ones are indexed here
(schema step 4 has no insert trigger), deferred to the end of their commit (see sqlite.defer),
so that a commit writes one index segment, not one per message (bench turns).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from server.models import ContentBlock, TextBlock, ToolResultBlock, ToolUseBlock
from server.store import codec
from server.store.sqlite import defer

_INDEX = (
    "INSERT INTO message_search (rowid, text, session_id) "
    "SELECT rowid, ?, session_id FROM messages WHERE id = ?"
)


def text_of(content: Iterable[ContentBlock]) -> str | None:
    """The searchable text of a message's blocks (None when there is none)."""
    parts: list[str] = []
    for block in content:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolResultBlock):
            parts.append(block.content)
        elif isinstance(block, ToolUseBlock):
            parts.append(f"{block.name} {codec.text(block.input)}")
    return "\n".join(parts) if parts else None


def index(conn: sqlite3.Connection, messages: Iterable[tuple[str, Iterable[ContentBlock]]]) -> None:
    """Index messages (id, blocks) inserted in this transaction."""
    defer(conn, _INDEX, [(text_of(content), message_id) for message_id, content in messages])
