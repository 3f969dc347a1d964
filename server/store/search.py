"""Full-text search over message text: the FTS5 table `message_search` (schema step 2), kept
in step with the messages table by store/searchindex.py (new messages) and triggers.

A session matches when one of its messages holds every word of the query. Results are
sessions, best first: a session's score is its best message's BM25 rank, and it
comes with the snippets of its best-matching messages. The user's words are quoted before
they reach FTS5, so no input is an FTS5 syntax error; a word ending in `*` matches as a prefix.
"""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequest
from server.models import Page
from server.store.contract import SearchResult, Snippet
from server.store.pages import decode_cursor, encode_cursor
from server.store.sessions import COLUMNS, record
from server.store.sqlite import Database

SNIPPETS_PER_SESSION = 3
_OPEN, _CLOSE = "\x02", "\x03"


def match_query(q: str) -> str:
    """The words of `q` as FTS5 phrases, all required."""
    phrases = []
    for word in q.replace("\x00", " ").split():  # FTS5 reads a NUL as the query's end
        body = word.rstrip("*")
        prefix = body != word and body != ""
        body = body if prefix else word
        phrases.append('"' + body.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(phrases)


def highlighted(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """Strip snippet()'s markers, keeping where they were."""
    text: list[str] = []
    spans: list[tuple[int, int]] = []
    start: int | None = None
    size = 0
    for char in marked:
        if char == _OPEN:
            start = size
        elif char == _CLOSE and start is not None:
            spans.append((start, size))
            start = None
        elif char not in (_OPEN, _CLOSE):
            text.append(char)
            size += 1
    return "".join(text), spans


def after_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    score, session_id = decode_cursor(cursor, 2)
    if not isinstance(score, int | float) or not isinstance(session_id, str):
        raise InvalidRequest("cursor is not one this server issued", field="cursor")
    return float(score), session_id


class Search:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, tenant: str, q: str, limit: int, cursor: str | None) -> Page[SearchResult]:
        query = match_query(q)
        after = after_cursor(cursor)
        if not query:
            return Page([], None)
        columns = ", ".join(f"s.{c.strip()}" for c in COLUMNS.split(","))
        sql = (
            "WITH best AS (SELECT session_id, min(rank) AS score FROM message_search "
            "WHERE message_search MATCH ? GROUP BY session_id) "
            f"SELECT best.score, {columns} FROM best JOIN sessions s ON s.id = best.session_id "
            "WHERE s.tenant = ?"
        )
        params: list[Any] = [query, tenant]
        if after is not None:
            sql += " AND (best.score, s.id) > (?, ?)"
            params += list(after)
        rows = await self.db.fetchall(
            sql + " ORDER BY best.score, s.id LIMIT ?", (*params, limit + 1)
        )
        page = rows[:limit]
        snippets = await self._snippets(query, [row["id"] for row in page])
        data = [
            SearchResult(record(row), snippets.get(row["id"], []), round(-row["score"], 6))
            for row in page
        ]
        more = len(rows) > limit and page
        return Page(data, encode_cursor(page[-1]["score"], page[-1]["id"]) if more else None)

    async def _snippets(self, query: str, session_ids: list[str]) -> dict[str, list[Snippet]]:
        if not session_ids:
            return {}
        marks = ", ".join("?" for _ in session_ids)
        rows = await self.db.fetchall(
            "SELECT message_search.session_id, m.id, m.seq, m.role, "
            "snippet(message_search, 0, ?, ?, '…', 16) "
            "FROM message_search JOIN messages m ON m.rowid = message_search.rowid "
            f"WHERE message_search MATCH ? AND message_search.session_id IN ({marks}) "
            "ORDER BY rank",
            (_OPEN, _CLOSE, query, *session_ids),
        )
        found: dict[str, list[Snippet]] = {}
        for session_id, message_id, seq, role, marked in rows:
            kept = found.setdefault(session_id, [])
            if len(kept) < SNIPPETS_PER_SESSION:
                text, spans = highlighted(marked or "")
                kept.append(Snippet(message_id, seq, role, text, spans))
        return found
