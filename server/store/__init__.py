"""The only code that speaks SQL. `Store` bundles the database and one object per table."""

from __future__ import annotations

from server.store.agents import Agents
from server.store.messages import Messages
from server.store.runs import Runs
from server.store.search import Search
from server.store.sessions import Sessions
from server.store.sqlite import Database
from server.store.transfer import Transfer


class Store:
    def __init__(self, path: str, *, event_flush_s: float = 0.2) -> None:
        self.db = Database(path, event_flush_s=event_flush_s)
        self.agents = Agents(self.db)
        self.sessions = Sessions(self.db)
        self.messages = Messages(self.db)
        self.runs = Runs(self.db)
        self.search = Search(self.db)
        self.transfer = Transfer(self.db)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()
