"""A consistent copy of a live database, with SQLite's online backup API.

The copy is made in one backup step, so inside one read transaction: under WAL the server's
writer goes on committing meanwhile, and the copy is the database as of the moment the step
began (every commit before it, none after). Stepping a few pages at a time would let the
server's writes restart the copy, over and over under a steady load.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from urllib.parse import quote

import msgspec


class Copied(msgspec.Struct, frozen=True):
    path: str
    bytes: int
    rows: dict[str, int]  # per table

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


class BackupError(Exception):
    """The copy could not be made; the message says why."""


def open_read_only(path: str) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise BackupError(f"no database at {path}")
    return sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)


def backup(source: str, target: str) -> Copied:
    destination = Path(target)
    if destination.exists():
        raise BackupError(f"{target} exists already; give a new file")
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            contextlib.closing(open_read_only(source)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)  # pages=-1: the whole database in one step
            rows = row_counts(dst)
    except sqlite3.Error as exc:
        destination.unlink(missing_ok=True)
        raise BackupError(f"backup of {source} failed: {exc}") from exc
    return Copied(str(destination), destination.stat().st_size, rows)


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows of each ordinary table (not the search index's shadow tables)."""
    names = [
        row[1]
        for row in conn.execute("PRAGMA table_list")
        if row[0] == "main" and row[2] == "table" and not row[1].startswith("sqlite_")
    ]
    return {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}
