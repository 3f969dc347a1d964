"""The only code that speaks SQL. `contract.py` is the interface the rest of sessiond uses
(`Store` and the values it takes and gives); `SqliteStore` implements it on SQLite, with one
module per table family."""

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
    WebhookStore,
)
from server.store.events import Events
from server.store.keys import Keys
from server.store.messages import Messages
from server.store.runs import Runs
from server.store.search import Search
from server.store.secrets import Secrets
from server.store.sessions import Sessions
from server.store.sqlite import Database
from server.store.transfer import Transfer
from server.store.webhooks import Webhooks

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
    "WebhookStore",
]


class SqliteStore:
    """The store on one SQLite file: `db` is its writer and readers (sqlite.py)."""

    def __init__(
        self, path: str, *, event_flush_s: float = 0.2, meter: Meter | None = None
    ) -> None:
        self.db = Database(path, event_flush_s=event_flush_s, meter=meter)
        self.keys: KeyStore = Keys(self.db)
        self.secrets: SecretStore = Secrets(self.db)
        self.webhooks: WebhookStore = Webhooks(self.db)
        self.agents: AgentStore = Agents(self.db)
        self.sessions: SessionStore = Sessions(self.db)
        self.messages: MessageStore = Messages(self.db)
        self.runs: RunStore = Runs(self.db)
        self.events: EventStore = Events(self.db)
        self.search: SearchStore = Search(self.db)
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
