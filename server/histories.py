"""Repaired histories of recently active sessions, kept between runs.

A run needs its session's whole history; reading and repairing 10,000 messages costs tens of
milliseconds, and a session's history only ever grows. So the runner keeps each active
session's repaired `History` and, on the next run, reads and adds only the messages stored
since. The message count on the session row tells whether the copy is still whole; anything
unexpected (an import, a deleted and re-created id) just rebuilds it from the database.
Bounded by the number of messages held, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict

from server.models import SessionRecord, Turn
from server.session import History
from server.store import Store


class Histories:
    def __init__(self, store: Store, max_messages: int = 200_000) -> None:
        self.store = store
        self.max_messages = max_messages
        self._kept: OrderedDict[str, History] = OrderedDict()
        self._held = 0

    async def load(self, record: SessionRecord) -> History:
        history = self._take(record.id)
        if history is not None and history.count <= record.message_count:
            wanted = record.message_count - history.count
            new = await self.store.messages.page(record.id, history.last_seq, wanted + 1)
            if len(new) == wanted:
                for message in new:
                    history.add(Turn(message.role, message.content), message.seq)
                self._keep(record.id, history)
                return history
        history = History.of(await self.store.messages.history(record.id))
        self._keep(record.id, history)
        return history

    def forget(self, session_id: str) -> None:
        self._take(session_id)

    def _take(self, session_id: str) -> History | None:
        history = self._kept.pop(session_id, None)
        if history is not None:
            self._held -= history.count
        return history

    def _keep(self, session_id: str, history: History) -> None:
        self._kept[session_id] = history
        self._held += history.count
        while self._held > self.max_messages and len(self._kept) > 1:
            _, oldest = self._kept.popitem(last=False)
            self._held -= oldest.count
