"""Which database a `--db` value names."""

from __future__ import annotations


def is_postgres(db: str) -> bool:
    """A PostgreSQL URL (postgresql://user@host:port/name); anything else is an SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


def shown(db: str) -> str:
    """`db` as a log line or an answer may show it: a URL without its password."""
    if not is_postgres(db):
        return db
    scheme, _, rest = db.partition("://")
    who, at, where = rest.rpartition("@")
    if not at or ":" not in who:
        return db
    return f"{scheme}://{who.split(':', 1)[0]}:***@{where}"
