"""The runner's kept histories: extended with new messages, rebuilt when they do not add up."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from server.models import Message, SessionRecord, TextBlock, ToolUseBlock, new_session_record
from server.runs.histories import Histories
from server.session import History
from server.store import SqliteStore
from server.store import messages as message_ops


def record(session_id: str) -> SessionRecord:
    fresh = new_session_record("default", None)
    return msgspec.structs.replace(fresh, id=session_id, created_at="n", updated_at="n")


def with_store(tmp_path: Path, body: Callable[[SqliteStore], Awaitable[None]]) -> None:
    async def go() -> None:
        store = SqliteStore(str(tmp_path / "h.db"))
        await store.open()
        try:
            await store.db.write(
                lambda conn: conn.execute(
                    "INSERT INTO agents (id, name, provider, created_at, updated_at) "
                    "VALUES ('default', 'default', 'echo', 'n', 'n')"
                )
            )
            await store.sessions.create(record("s1"), "default")
            await body(store)
        finally:
            await store.close()

    asyncio.run(go())


async def add(store: SqliteStore, role: Any, blocks: list[Any]) -> tuple[Message, int]:
    def op(conn: sqlite3.Connection) -> Message:
        return message_ops.append(conn, "s1", role, blocks, None, "n")

    return await store.db.write(op), await count(store)


async def count(store: SqliteStore) -> int:
    return (await store.sessions.get("s1", None)).message_count


def test_kept_history_grows_and_matches_a_fresh_one(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        histories = Histories(store)
        await add(store, "user", [TextBlock("one")])
        first = await histories.load("s1", await count(store))
        assert first.count == 1
        await add(store, "assistant", [ToolUseBlock("t", "list_files", {})])
        await add(store, "user", [TextBlock("two")])
        grown = await histories.load("s1", await count(store))
        assert grown is first and grown.count == 3
        fresh = History.of(await store.messages.history("s1"))
        assert grown.turns() == fresh.turns()
        assert grown.turns()[2].content[0].is_error  # the open call got a result

        await store.db.write(
            lambda conn: conn.execute("UPDATE sessions SET message_count = 99 WHERE id = 's1'")
        )
        rebuilt = await histories.load("s1", await count(store))
        assert rebuilt is not first and rebuilt.turns() == fresh.turns()

    with_store(tmp_path, body)


def test_stored_messages_handed_over_spare_the_reads(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        histories = Histories(store)
        user, n = await add(store, "user", [TextBlock("one")])
        kept = await histories.load("s1", n, user)
        reply, _ = await add(store, "assistant", [TextBlock("hi")])
        histories.extend("s1", [reply])
        histories.extend("s1", [reply])  # twice: added once
        user, n = await add(store, "user", [TextBlock("two")])
        fresh = History.of(await store.messages.history("s1"))

        async def no_reads(*args: Any) -> Any:
            raise AssertionError("read the database")

        store.messages.page = store.messages.history = no_reads  # type: ignore[method-assign]
        again = await histories.load("s1", n, user)
        assert again is kept and again.count == 3 and again.turns() == fresh.turns()

    with_store(tmp_path, body)


def test_a_message_not_handed_over_is_read_not_missed(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        histories = Histories(store)
        user, n = await add(store, "user", [TextBlock("one")])
        await histories.load("s1", n, user)
        await add(store, "assistant", [TextBlock("unseen")])  # stored by someone else
        late, _ = await add(store, "user", [TextBlock("late")])
        histories.extend("s1", [late])  # leaves a gap below it
        user, n = await add(store, "user", [TextBlock("three")])
        loaded = await histories.load("s1", n, user)
        fresh = History.of(await store.messages.history("s1"))
        assert loaded.count == 4 and loaded.turns() == fresh.turns()

    with_store(tmp_path, body)


def test_a_new_sessions_first_message_reads_nothing(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        histories = Histories(store)
        user, n = await add(store, "user", [TextBlock("first")])

        async def no_reads(*args: Any) -> Any:
            raise AssertionError("read the database")

        real = store.messages.history
        store.messages.page = store.messages.history = no_reads  # type: ignore[method-assign]
        kept = await histories.load("s1", n, user)
        assert n == 1 and kept.turns() == History.of(await real("s1")).turns()

    with_store(tmp_path, body)
