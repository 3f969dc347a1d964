"""The only code that speaks SQL. `contract.py` is the interface the rest of sessiond uses
(`Store` and the values it takes and gives); `SqliteStore` implements it on SQLite, with one
module per table family, and `PgStore` on PostgreSQL with the same modules over `pg.py`'s
connection. `open_store` picks one by what `--db` names: a `postgresql://` URL or a file."""

from __future__ import annotations

import asyncio
from typing import Any

from server.meter import Meter
from server.store.agents import Agents
from server.store.contract import (
    DEFAULT_AGENT_ID,
    AgentStore,
    Begun,
    EventBatch,
    EventStore,
    Finish,
    KeyStore,
    MessageStore,
    NewRun,
    Restorable,
    RunStore,
    SearchResult,
    SearchStore,
    SecretStore,
    SessionFilter,
    SessionStore,
    Snippet,
    Stale,
    Step,
    Store,
    StoredRun,
    TransferStore,
)
from server.store.events import Events
from server.store.keys import Keys
from server.store.kind import is_postgres
from server.store.messages import Messages
from server.store.runs import Runs
from server.store.search import Search
from server.store.secrets import Secrets
from server.store.sessions import Sessions
from server.store.sqlite import Database
from server.store.transfer import Transfer

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
    "is_postgres",
    "open_store",
]


class SqliteStore:
    """The store on one SQLite file: `db` is its writer and readers (sqlite.py)."""

    def __init__(
        self, path: str, *, event_flush_s: float = 0.2, meter: Meter | None = None
    ) -> None:
        self.db = Database(path, event_flush_s=event_flush_s, meter=meter)
        self._parts(self.db)
        self.search: SearchStore = Search(self.db)

    def _parts(self, db: Database) -> None:
        self.keys: KeyStore = Keys(self.db)
        self.secrets: SecretStore = Secrets(self.db)
        self.agents: AgentStore = Agents(self.db)
        self.sessions: SessionStore = Sessions(self.db)
        self.messages: MessageStore = Messages(self.db)
        self.runs: RunStore = Runs(self.db)
        self.events: EventStore = Events(self.db)
        self.transfer: TransferStore = Transfer(self.db)

    @property
    def commits(self) -> int:
        return self.db.commits

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def flush(self) -> None:
        await self.db.flush()

    def withdraw(self, queued: asyncio.Future[Any]) -> bool:
        return self.db.withdraw(queued)


def open_store(db: str, *, event_flush_s: float = 0.2, meter: Meter | None = None) -> SqliteStore:
    """The store `db` names, not yet opened: a PostgreSQL URL (asyncpg is loaded only then:
    it is an optional dependency), else an SQLite file."""
    if is_postgres(db):
        from server.store.pg import PgStore

        return PgStore(db, event_flush_s=event_flush_s, meter=meter)
    return SqliteStore(db, event_flush_s=event_flush_s, meter=meter)
