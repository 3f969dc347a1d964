"""Repaired histories of recently active sessions, kept between runs.

A run needs its session's whole history; reading and repairing a long one costs far more than
the rest of a turn, and a session's history only ever grows (bench history). So the runner
keeps each active session's repaired `History` and, on the next run, reads and adds only the
messages stored since. The message count on the session row tells whether the copy is still
whole; anything unexpected (an import, a deleted and re-created id) just rebuilds it from the
database.
Bounded by the number of messages held, least recently used first out.

The runner also hands over each message it stores (`extend`), and says which message it has
just stored when it asks (`load(…, latest)`): when the counts then add up, a turn reads
nothing back at all. Only messages newer than a kept history's last are ever added to it,
so every message it holds is at or below its `last_seq`; the count check then catches any
message it missed.
"""

from __future__ import annotations

from collections import OrderedDict

from server.models import Message
from server.session import History
from server.store import Store


class Histories:
    def __init__(self, store: Store, max_messages: int = 200_000) -> None:
        self.store = store
        self.max_messages = max_messages
        self._kept: OrderedDict[str, History] = OrderedDict()
        self._held = 0

    async def load(self, session_id: str, count: int, latest: Message | None = None) -> History:
        """The history of a session holding `count` messages; `latest`, if given, is the
        newest of them."""
        history = self._take(session_id)
        if history is None and count == 1 and latest is not None:
            history = History()  # a new session: `latest` is all it holds, nothing to read
        if history is None or not await self._grow(session_id, history, count, latest):
            history = History.of(await self.store.messages.since_compaction(session_id))
            history.count = count  # what it stands for, the turns behind a summary included
        self._keep(session_id, history)
        return history

    def replace(self, session_id: str, history: History, count: int) -> None:
        """A compaction's history, standing for the session's `count` messages, in place of
        the one kept."""
        self._take(session_id)
        history.count = count
        self._keep(session_id, history)

    async def _grow(
        self, session_id: str, history: History, count: int, latest: Message | None
    ) -> bool:
        """Bring a kept history up to `count` messages; False if they do not add up."""
        if latest is not None and latest.seq > history.last_seq and count == history.count + 1:
            history.add_message(latest)  # all else is kept
            return True
        wanted = count - history.count
        if wanted < 0:
            return False
        new = await self.store.messages.page(session_id, history.last_seq, wanted + 1)
        if len(new) != wanted or any(m.role == "compaction" for m in new):
            return False  # a compaction made elsewhere: read from it
        for message in new:
            history.add_message(message)
        return True

    def extend(self, session_id: str, stored: list[Message]) -> None:
        """Messages just stored join the session's kept history, if it has one."""
        history = self._kept.get(session_id)
        if history is None:
            return
        for message in stored:
            if message.seq > history.last_seq and message.role != "compaction":
                history.add_message(message)
                self._held += 1
        self._kept.move_to_end(session_id)
        self._trim()

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
        self._trim()

    def _trim(self) -> None:
        while self._held > self.max_messages and len(self._kept) > 1:
            _, oldest = self._kept.popitem(last=False)
            self._held -= oldest.count
