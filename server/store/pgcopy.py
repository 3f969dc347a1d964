"""`sessiond copy`: an SQLite database moved into a PostgreSQL one, every row as it is.

The copy reads the SQLite file in one read transaction (one moment of it) and writes every
table into the PostgreSQL database, migrated first and refused unless it holds no sessions,
runs or keys yet, in one transaction: the copy is whole or absent. Ids, timestamps, JSON
columns and event-log chunks go over byte for byte; the search table is rebuilt from
SQLite's (the same text for each message). The server's own secrets are not copied: they are
sealed with the SQLite file's key (`<db>.key`), and the PostgreSQL processes make their own
(a stream token issued before the move stops working, as it would at its expiry).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from server.errors import StoreError
from server.store.lock import DatabaseLock
from server.store.pg import connect, migrate
from server.store.sqlite import SCHEMA_PATH, schema_steps

# in an order the foreign keys allow
TABLES = ("agents", "sessions", "runs", "messages", "events", "api_keys")
_BATCH = 2000


class CopyError(Exception):
    pass


def _sqlite_rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> Iterator[list[tuple]]:  # type: ignore[type-arg]
    listed = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.execute(f'SELECT {listed} FROM "{table}" ORDER BY rowid')
    while batch := cursor.fetchmany(_BATCH):
        yield [tuple(row) for row in batch]


async def copy(sqlite_path: str, url: str) -> dict[str, int]:
    """Copy the file's rows into the database at `url`; the rows copied, by table."""
    if not Path(sqlite_path).is_file():
        raise CopyError(f"{sqlite_path}: no such database file")
    lock = DatabaseLock(sqlite_path).acquire()  # no server writes to it meanwhile
    try:
        source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        try:
            version = source.execute("PRAGMA user_version").fetchone()[0]
            steps = len(schema_steps(SCHEMA_PATH.read_text()))
            if version != steps:
                raise CopyError(
                    f"{sqlite_path} is at schema step {version}, not {steps}: start this "
                    "version of sessiond on it once (or run sessiond migrate) first"
                )
            source.execute("BEGIN")  # one read transaction: one moment of the file
            return await _copy(source, url)
        finally:
            source.close()
    finally:
        lock.release()


async def _copy(source: sqlite3.Connection, url: str) -> dict[str, int]:
    target = await connect(url)
    copied: dict[str, int] = {}
    try:
        await migrate(target)
        async with target.transaction():
            for table in ("sessions", "runs", "api_keys"):
                if await target.fetchval(f"SELECT count(*) FROM {table}"):
                    raise CopyError(
                        f"the database at the URL already has {table}: copy into an empty one"
                    )
            # the built-in agent a server made there already is replaced by the file's
            await target.execute("DELETE FROM agents")
            for table in TABLES:
                copied[table] = await _copy_table(source, target, table)
            copied["message_search"] = await _copy_search(source, target)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"copy failed: {exc}") from exc
    finally:
        await target.close()
    return copied


async def _copy_table(source: sqlite3.Connection, target: asyncpg.Connection, table: str) -> int:
    theirs = [row[1] for row in source.execute(f'PRAGMA table_info("{table}")')]
    ours = await target.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1",
        table,
    )
    types = {row["column_name"]: row["data_type"] for row in ours}
    columns = [c for c in theirs if c in types]
    missing = set(types) - set(columns)
    if missing:
        raise CopyError(f"{table}: the SQLite file lacks columns {sorted(missing)}")
    count = 0
    for batch in _sqlite_rows(source, table, columns):
        rows = [_typed(row, [types[c] for c in columns]) for row in batch]
        await target.copy_records_to_table(table, records=rows, columns=columns)
        count += len(rows)
    return count


def _typed(row: tuple, types: list[str]) -> tuple:  # type: ignore[type-arg]
    values = []
    for value, kind in zip(row, types, strict=True):
        if value is not None:
            if kind == "bytea" and isinstance(value, str):
                value = value.encode()
            elif kind == "double precision":
                value = float(value)
            elif kind == "bigint":
                value = int(value)
            elif kind == "text" and not isinstance(value, str):
                value = str(value)
        values.append(value)
    return tuple(values)


async def _copy_search(source: sqlite3.Connection, target: asyncpg.Connection) -> int:
    cursor = source.execute(
        "SELECT m.id, s.session_id, s.text FROM message_search s "
        "JOIN messages m ON m.rowid = s.rowid ORDER BY m.rowid"
    )
    count = 0
    while batch := cursor.fetchmany(_BATCH):
        await target.copy_records_to_table(
            "message_search",
            records=[tuple(row) for row in batch],
            columns=["message_id", "session_id", "text"],
        )
        count += len(batch)
    return count
