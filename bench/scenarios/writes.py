"""5. Write cost.

SQLite commits counted from outside, in the server's WAL (see bench/wal.py), for five
workloads on one server, each measured alone:

- turns, one client: 200 short blocking turns in a row on one session
- turns, 32 clients: 32 sessions x 20 short turns, concurrently (group commit at work)
- fast stream: one 20,000-delta run at zero delay
- paced stream: one 100-delta run at 25 ms a token (a model's pace)
- 100 paced streams: 100 such runs at once

The target (at most 20 commits per 1,000 events) is for the zero-latency provider: the fast
stream. The paced figures have none: a stream alone at a model's pace commits its events
every `event_flush_ms` (200 ms), the most of a streaming step a crash may lose (the
durability promise), so at 40 tokens/s it pays a commit per 8 events; concurrent streams
share those commits.

Database bytes per stored message: growth of the database file over the two turn workloads
(checkpointed and truncated before and after, so the WAL holds nothing) divided by the
messages they stored, runs and event log included. The details hold the `messages` table
with its indexes alone and every table's and index's share, from SQLite's dbstat.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable
from pathlib import Path

from bench import client, wal, workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result
from bench.scenarios import many, turns

NAME = "writes"
TITLE = "SQLite commits per turn and per 1,000 events; bytes per stored message"
BUDGET_S = 90.0
MESSAGE_OBJECTS = (
    "messages",
    "messages_by_run",
    "sqlite_autoindex_messages_1",
    "sqlite_autoindex_messages_2",
)


async def measured(ctx: Context, label: str, work: Awaitable[object]) -> int:
    watch = wal.Watch(ctx.db)
    watch.start()
    await work
    commits, reliable = await watch.stop()
    if not reliable:
        raise RuntimeError(f"{label}: the WAL was rewound during the count")
    return commits


async def sequential_turns(api: Api, session_id: str, count: int) -> None:
    for _ in range(count):
        await api.turn(session_id)


async def concurrent_turns(port: int, sessions: list[str], each: int) -> None:
    async def one(session_id: str) -> None:
        conn = await client.connect(port)
        try:
            for _ in range(each):
                response = await conn.request("POST", f"/sessions/{session_id}/message", JSON_BODY)
                if response.status != 200:
                    raise RuntimeError(f"turn: HTTP {response.status}: {response.body[:200]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(one(s) for s in sessions))


async def streams(port: int, sessions: list[str], timeout: float) -> int:
    """Stream a run on each session at once; the number of events received."""
    tallies = [many.Tally() for _ in sessions]
    paths = [f"/sessions/{s}/message/stream" for s in sessions]
    await asyncio.gather(
        *(many.one(port, p, JSON_BODY, t, timeout) for p, t in zip(paths, tallies, strict=True))
    )
    failed = [t.error or "no done" for t in tallies if t.error or t.done is None]
    if failed:
        raise RuntimeError(f"stream failed: {failed[0]}")
    return sum(len(t.deltas) + workload.TEXT_EVENTS_OVERHEAD for t in tallies)


def stored_bytes(db: Path) -> tuple[dict[str, int], int]:
    """(bytes per table and index, from dbstat; number of messages)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        (count,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    finally:
        conn.close()
    return {name: int(size) for name, size in rows}, int(count)


async def run(ctx: Context, result: Result) -> None:
    seq_turns = ctx.size(200, 10)
    clients, each = ctx.size((turns.CLIENTS, 20), (4, 3))
    fast = ctx.size(20_000, 500)
    paced, paced_ms = ctx.size((100, 25), (20, 10))
    paced_streams = ctx.size(100, 5)
    server = await ctx.sessiond()
    api = Api(server.port)
    short = await api.agent(workload.scripted_agent("short", 2))
    long = await api.agent(workload.scripted_agent("fast", fast))
    slow = await api.agent(workload.scripted_agent("paced", paced, paced_ms))
    short_sessions = await api.sessions(short, 1 + clients)
    fast_session = (await api.sessions(long, 1))[0]
    slow_sessions = await api.sessions(slow, 1 + paced_streams)
    await api.turn(short_sessions[0])  # warm-up

    size0 = wal.database_bytes(ctx.db)
    commits = await measured(ctx, "turns", sequential_turns(api, short_sessions[0], seq_turns))
    result.add(Figure("commits per turn, one client", commits / seq_turns, ""))
    commits = await measured(
        ctx, "concurrent turns", concurrent_turns(server.port, short_sessions[1:], each)
    )
    result.add(Figure(f"commits per turn, {clients} clients", commits / (clients * each), ""))
    size1 = wal.database_bytes(ctx.db)
    stored = 2 * (seq_turns + clients * each)
    result.add(Figure("database bytes per stored message", (size1 - size0) / stored, "B"))
    sizes, count = stored_bytes(ctx.db)
    messages = sum(sizes.get(name, 0) for name in MESSAGE_OBJECTS)
    result.details["messages_table_bytes_per_message"] = messages / max(1, count)
    result.details["bytes_per_message_by_object"] = {
        name: round(size / max(1, count)) for name, size in sorted(sizes.items())
    }

    for label, sessions in (
        ("fast stream", [fast_session]),
        ("paced stream", slow_sessions[:1]),
        (f"{paced_streams} paced streams", slow_sessions[1:]),
    ):
        task = asyncio.ensure_future(streams(server.port, sessions, 60.0))
        commits = await measured(ctx, label, task)
        events = task.result()
        per_k = commits / events * 1000
        result.details[f"{label}: commits, events"] = [commits, events]
        if label == "fast stream":  # the target's scenario: the zero-latency provider
            result.add(
                Figure(
                    f"commits per 1,000 events, {label}", per_k, "", target="≤ 20", ok=per_k <= 20
                )
            )
        else:  # shown for what it costs: a lone paced stream commits every event_flush_ms
            result.add(Figure(f"commits per 1,000 events, {label}", per_k, ""))
    await ctx.stop(server)
