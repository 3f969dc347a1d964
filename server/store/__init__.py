"""The only code that speaks SQL. `contract.py` is the interface the rest of sessiond uses
(`Store` and the values it takes and gives); `SqliteStore` implements it on SQLite, with one
module per table family, and `PgStore` on PostgreSQL with the same modules over `pg.py`'s
connection. `open_store` picks one by what `--db` names: a `postgresql://` URL or a file."""

from __future__ import annotations

from server.meter import Meter
from server.store.contract import (
    DEFAULT_AGENT_ID,
    Begun,
    EventBatch,
    Finish,
    KeyStore,
    NewRun,
    Restorable,
    SearchResult,
    SecretStore,
    SessionFilter,
    Snippet,
    Stale,
    Step,
    Store,
    StoredRun,
    TicketStore,
    TransferStore,
    WebhookStore,
)
from server.store.kind import is_postgres
from server.store.tables import SqliteStore

__all__ = [
    "DEFAULT_AGENT_ID",
    "Begun",
    "EventBatch",
    "Finish",
    "KeyStore",
    "NewRun",
    "Restorable",
    "SearchResult",
    "SecretStore",
    "SessionFilter",
    "Snippet",
    "SqliteStore",
    "Stale",
    "Step",
    "Store",
    "StoredRun",
    "TicketStore",
    "TransferStore",
    "WebhookStore",
    "is_postgres",
    "open_store",
]


def open_store(
    db: str,
    *,
    event_flush_s: float = 0.2,
    meter: Meter | None = None,
    lease_timeout_s: float = 15.0,
) -> SqliteStore:
    """The store `db` names, not yet opened: a PostgreSQL URL (asyncpg is loaded only then:
    it is an optional dependency), else an SQLite file."""
    if is_postgres(db):
        from server.store.pg import PgStore

        return PgStore(
            db, event_flush_s=event_flush_s, meter=meter, lease_timeout_s=lease_timeout_s
        )
    return SqliteStore(db, event_flush_s=event_flush_s, meter=meter)
