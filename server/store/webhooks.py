"""The webhook outbox: a row per run end to post, written in the transaction that stores the
end (`enqueue`, called from runs.py), then tried by the sender until it is delivered or
given up, each attempt kept."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgspec

from server.ids import new_ulid
from server.models import Outgoing, Page, WebhookAttempt, WebhookDelivery
from server.store.pages import decode_cursor, encode_cursor
from server.store.sqlite import Database

_encode = msgspec.json.Encoder().encode


class _Written:
    """Outbox rows this process has inserted, counted as each insert is made (one rolled back
    counts too: it costs the sender no more than a look that finds nothing). A run's end tells
    the sender to look only when this has moved, so a server without webhooks reads nothing
    for them as runs end (bench turns)."""

    count = 0


class _Payload(msgspec.Struct):
    type: str
    timestamp: str
    data: Any


def enqueue(
    conn: sqlite3.Connection, run_id: str, session_id: str, now: str, run_of: Callable[[], Any]
) -> None:
    """Queue the run's end for its session's webhook, or its agent's (the session's wins);
    nothing when neither has one (one indexed read). `run_of()` gives the run as it ended
    (a models.Run), read only when there is an endpoint."""
    row = conn.execute(
        "SELECT s.webhook_url, s.webhook_secret, a.webhook_url, a.webhook_secret "
        "FROM runs AS r JOIN sessions AS s ON s.id = r.session_id "
        "LEFT JOIN agents AS a ON a.id = r.agent_id WHERE r.id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        return
    url, secret = (row[0], row[1]) if row[0] is not None else (row[2], row[3])
    if url is None or secret is None:
        return
    run = run_of()
    kind = f"run.{run.status}"
    payload = _encode(_Payload(kind, now, run))
    unix = time.time()
    _Written.count += 1
    conn.execute(
        "INSERT INTO webhook_outbox (id, session_id, run_id, type, url, secret, payload, "
        "next_attempt_at, created_at, created_unix) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (f"msg_{new_ulid()}", session_id, run_id, kind, url, secret, payload, unix, now, unix),
    )


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix))
    return f"{stamp}.{int(unix * 1000) % 1000:03d}Z"


class Webhooks:
    def __init__(self, db: Database) -> None:
        self.db = db

    def written(self) -> int:
        return _Written.count

    async def due(self, now_unix: float, limit: int) -> list[Outgoing]:
        rows = await self.db.fetchall(
            "SELECT id, url, secret, payload, attempts, created_unix FROM webhook_outbox "
            "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now_unix, limit),
        )
        return [
            Outgoing(
                id=r[0],
                url=r[1],
                secret=r[2],
                payload=bytes(r[3]),
                attempts=r[4],
                created_unix=r[5],
            )
            for r in rows
        ]

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT min(next_attempt_at) FROM webhook_outbox WHERE status = 'pending'"
        )
        return None if row is None or row[0] is None else float(row[0])

    async def reschedule(self, base_s: float, cap_s: float) -> None:
        """What is pending, due again by these retry settings (a restart may bring others):
        the last attempt plus base * 2^(attempts-1), at most `cap_s`, times its jitter. The
        SQL is what SQLite and PostgreSQL both read (no two-argument min, no shifts)."""

        def op(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT id, attempts, last_attempt_at, jitter FROM webhook_outbox "
                "WHERE status = 'pending' AND attempts > 0 AND last_attempt_at IS NOT NULL"
            ).fetchall()
            conn.executemany(
                "UPDATE webhook_outbox SET next_attempt_at = ? WHERE id = ?",
                [
                    (last + min(cap_s, base_s * 2 ** min(attempts - 1, 40)) * jitter, rid)
                    for rid, attempts, last, jitter in rows
                ],
            )

        await self.db.write(op)

    async def attempted(
        self,
        delivery_id: str,
        attempt: WebhookAttempt,
        status: str,
        next_unix: float | None,
        jitter: float = 1.0,
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (delivery_id, attempt) DO UPDATE SET "
                "status_code = excluded.status_code, error = excluded.error, at = excluded.at",
                (delivery_id, attempt.attempt, attempt.status_code, attempt.error, attempt.at),
            )
            conn.execute(
                "UPDATE webhook_outbox SET attempts = ?, status = ?, "
                "next_attempt_at = coalesce(?, next_attempt_at), last_attempt_at = ?, "
                "jitter = ? WHERE id = ?",
                (attempt.attempt, status, next_unix, time.time(), jitter, delivery_id),
            )

        await self.db.write(op)

    async def page(self, session_id: str, limit: int, cursor: str | None) -> Page[WebhookDelivery]:
        before = str(decode_cursor(cursor, 1)[0]) if cursor else "~"
        found = await self.db.fetchall(
            "SELECT id, session_id, run_id, type, url, status, created_at, next_attempt_at "
            "FROM webhook_outbox WHERE session_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (session_id, before, limit + 1),
        )
        rows = found[:limit]
        attempts: dict[str, list[WebhookAttempt]] = {r[0]: [] for r in rows}
        if rows:
            marks = ", ".join("?" * len(rows))
            tried = await self.db.fetchall(
                "SELECT delivery_id, attempt, at, status_code, error FROM webhook_attempts "
                f"WHERE delivery_id IN ({marks}) ORDER BY delivery_id, attempt",
                tuple(attempts),
            )
            for delivery, attempt, at, code, error in tried:
                attempts[delivery].append(WebhookAttempt(attempt, at, code, error))
        data = [
            WebhookDelivery(
                id=r[0],
                session_id=r[1],
                run_id=r[2],
                type=r[3],
                url=r[4],
                status=r[5],
                attempts=attempts[r[0]],
                created_at=r[6],
                next_attempt_at=_iso(r[7]) if r[5] == "pending" else None,
            )
            for r in rows
        ]
        more = len(found) > limit and data
        return Page(data, encode_cursor(data[-1].id) if more else None)
