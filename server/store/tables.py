"""The store's parts put together: `SqliteStore`, one object with every part of the
contract on one database (`PgStore`, in pg.py, is the same parts on PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

from server.meter import Meter
from server.store.agents import Agents
from server.store.contract import (
    AgentStore,
    ClusterStore,
    EventStore,
    KeyStore,
    LocalCluster,
    MessageStore,
    RunStore,
    SearchStore,
    SecretStore,
    SessionStore,
    TicketStore,
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
from server.store.tickets import Tickets
from server.store.transfer import Transfer
from server.store.webhooks import Webhooks


class SqliteStore:
    """The store on one SQLite file: `db` is its writer and readers (sqlite.py)."""

    def __init__(
        self, path: str, *, event_flush_s: float = 0.2, meter: Meter | None = None
    ) -> None:
        self.db = Database(path, event_flush_s=event_flush_s, meter=meter)
        self._parts(self.db)
        self.search: SearchStore = Search(self.db)

    def _parts(self, db: Database) -> None:
        self.cluster: ClusterStore = LocalCluster()
        self.keys: KeyStore = Keys(self.db)
        self.secrets: SecretStore = Secrets(self.db)
        self.webhooks: WebhookStore = Webhooks(self.db)
        self.agents: AgentStore = Agents(self.db)
        self.sessions: SessionStore = Sessions(self.db)
        self.messages: MessageStore = Messages(self.db)
        self.runs: RunStore = Runs(self.db)
        self.events: EventStore = Events(self.db)
        self.transfer: TransferStore = Transfer(self.db)
        self.tickets: TicketStore = Tickets(self.db)

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
