"""Full-text search on PostgreSQL: `message_search` (schema.pg.sql step 2), a tsvector of
each message's text, in place of FTS5.

The same answers as search.py's, in PostgreSQL's terms: a session matches when one of its
messages holds every word of the query (each word a phrase of its parts, a word ending in
`*` a prefix); its score is its best message's `ts_rank`, and it comes with the
`ts_headline` snippets of its best-matching messages (of the text as it was split into
words: punctuation shows as spaces). The words reach PostgreSQL as
parameters of `phraseto_tsquery`, so no input is a query syntax error.
"""

from __future__ import annotations

from typing import Any

from server.models import Page
from server.store.contract import SearchResult, Snippet
from server.store.pages import encode_cursor
from server.store.search import SNIPPETS_PER_SESSION, after_cursor, highlighted
from server.store.sessions import COLUMNS, record
from server.store.sqlite import Database

_OPEN, _CLOSE = "\x02", "\x03"
_HEADLINE = f"StartSel={_OPEN}, StopSel={_CLOSE}, MaxWords=16, MinWords=4, ShortWord=0"


def query_of(q: str) -> tuple[str, list[str]]:
    """A tsquery expression over parameters $1… and the parameters: every word required."""
    parts: list[str] = []
    params: list[str] = []
    for word in q.replace("\x00", " ").split():
        body = word.rstrip("*")
        if body != word and body:
            params.append(body)
            parts.append("to_tsquery('simple', quote_literal(sessiond_words(?::text)) || ':*')")
        else:
            params.append(word)
            parts.append("phraseto_tsquery('simple', sessiond_words(?::text))")
    return " && ".join(parts), params


class PgSearch:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, tenant: str, q: str, limit: int, cursor: str | None) -> Page[SearchResult]:
        expression, words = query_of(q)
        after = after_cursor(cursor)
        if not expression:
            return Page([], None)
        columns = ", ".join(f"s.{c.strip()}" for c in COLUMNS.split(","))
        sql = (
            f"WITH query AS (SELECT {expression} AS q), "
            "best AS (SELECT session_id, -max(ts_rank(words, query.q)) AS score "
            "FROM message_search, query WHERE words @@ query.q GROUP BY session_id) "
            f"SELECT best.score, {columns} FROM best JOIN sessions s ON s.id = best.session_id "
            "WHERE s.tenant = ?"
        )
        params: list[Any] = [*words, tenant]
        if after is not None:
            sql += " AND (best.score, s.id) > (?, ?)"
            params += list(after)
        rows = await self.db.fetchall(
            sql + " ORDER BY best.score, s.id LIMIT ?", (*params, limit + 1)
        )
        page = rows[:limit]
        snippets = await self._snippets(expression, words, [row["id"] for row in page])
        data = [
            SearchResult(record(row), snippets.get(row["id"], []), round(-row["score"], 6))
            for row in page
        ]
        more = len(rows) > limit and page
        return Page(data, encode_cursor(page[-1]["score"], page[-1]["id"]) if more else None)

    async def _snippets(
        self, expression: str, words: list[str], session_ids: list[str]
    ) -> dict[str, list[Snippet]]:
        if not session_ids:
            return {}
        marks = ", ".join("?" for _ in session_ids)
        rows = await self.db.fetchall(
            f"WITH query AS (SELECT {expression} AS q) "
            "SELECT ms.session_id, m.id, m.seq, m.role, "
            "ts_headline('simple', sessiond_words(coalesce(ms.text, '')), query.q, ?) "
            "FROM message_search ms JOIN messages m ON m.id = ms.message_id, query "
            f"WHERE ms.words @@ query.q AND ms.session_id IN ({marks}) "
            "ORDER BY ts_rank(ms.words, query.q) DESC, m.id",
            (*words, _HEADLINE, *session_ids),
        )
        found: dict[str, list[Snippet]] = {}
        for session_id, message_id, seq, role, marked in rows:
            kept = found.setdefault(session_id, [])
            if len(kept) < SNIPPETS_PER_SESSION:
                text, spans = highlighted(marked or "")
                kept.append(Snippet(message_id, seq, role, text, spans))
        return found
