"""The runner's kept histories: extended with new messages, rebuilt when they do not add up."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from server.histories import Histories
from server.models import SessionRecord, TextBlock, ToolUseBlock, Usage
from server.session import History
from server.store import Store
from server.store import messages as message_ops


def test_kept_history_grows_and_matches_a_fresh_one(tmp_path: Path) -> None:
    async def go() -> None:
        store = Store(str(tmp_path / "h.db"))
        await store.open()
        try:
            rec = SessionRecord(
                id="s1",
                name=None,
                agent_id="default",
                work_dir=None,
                title=None,
                tags=[],
                metadata={},
                status="idle",
                message_count=0,
                turn_count=0,
                usage=Usage(),
                parent_id=None,
                forked_from_message_id=None,
                ttl_seconds=None,
                expires_at=None,
                archived_at=None,
                created_at="n",
                updated_at="n",
            )
            await store.db.write(
                lambda conn: conn.execute(
                    "INSERT INTO agents (id, name, provider, created_at, updated_at) "
                    "VALUES ('default', 'default', 'echo', 'n', 'n')"
                )
            )
            await store.sessions.create(rec)

            def add(role: Any, blocks: list[Any]) -> Any:
                def op(conn: sqlite3.Connection) -> None:
                    message_ops.append(conn, "s1", role, blocks, None, "n")

                return op

            histories = Histories(store)
            await store.db.write(add("user", [TextBlock("one")]))
            first = await histories.load(await store.sessions.get("s1"))
            assert first.count == 1
            await store.db.write(add("assistant", [ToolUseBlock("t", "list_files", {})]))
            await store.db.write(add("user", [TextBlock("two")]))
            grown = await histories.load(await store.sessions.get("s1"))
            assert grown is first and grown.count == 3
            fresh = History.of(await store.messages.history("s1"))
            assert grown.turns() == fresh.turns()
            assert grown.turns()[2].content[0].is_error  # the open call got a result

            await store.db.write(
                lambda conn: conn.execute("UPDATE sessions SET message_count = 99 WHERE id = 's1'")
            )
            rebuilt = await histories.load(await store.sessions.get("s1"))
            assert rebuilt is not first and rebuilt.turns() == fresh.turns()
        finally:
            await store.close()

    asyncio.run(go())
