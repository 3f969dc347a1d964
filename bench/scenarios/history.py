"""4. History growth.

The latency of one short blocking turn on sessions that already hold 10, 1,000 and 10,000
messages: median of nine turns each after one warm-up; the 10-message session is the
baseline. Building 10,000 messages through turns would take thousands of them, so:

- when the server has POST /sessions/import, the bench exports an empty session
  (GET /sessions/{id}/export?format=json), puts the generated messages into that document and
  imports it: the server's own format and checks, no private knowledge;
- otherwise it writes them with sqlite3 straight into the database file while the server is
  stopped (schema.sql's `messages` table, content as the store encodes it: a JSON list of
  `{"type":"text","text":…}` blocks; the session's `last_seq` and `message_count` set to
  match), and starts sessiond again on the same file.

Messages alternate user and assistant text of about 40 words. The details name the method.
The agent's context window is set far above the largest session, so that these turns send
the whole history, as before compaction existed.

Then the largest session is compacted (POST /sessions/{id}/compact, the scripted provider's
summary) and its turns are timed again, in pairs with turns on the 10-message session (the
order alternating), the figure the median of the pairs' ratios. The provider input is now
the compaction entry and the turns after it, read from two index ranges rather than all the
rows, so a short turn on it should cost about what one on the 10-message session does
(target: within 1.5x).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from bench import client, workload
from bench.harness import Api, Context
from bench.report import Figure, Result, median, ratio

NAME = "history"
TITLE = "one short turn on sessions of 10, 1,000 and 10,000 messages, and on the 10,000 compacted"
BUDGET_S = 90.0
FILLER = " ".join(f"history{i}" for i in range(40))


def fill(db: Path, session_id: str, count: int, tag: int) -> None:
    """Append `count` messages to a session (the server must be stopped)."""
    encode = msgspec.json.encode
    rows = [
        (m["id"], session_id, m["seq"], m["role"], encode(m["content"]).decode(), m["created_at"])
        for m in generated(session_id, count, tag)
    ]
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO messages (id, session_id, seq, role, content, run_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, NULL, ?)",
                rows,
            )
            conn.execute(
                "UPDATE sessions SET last_seq = ?, message_count = ? WHERE id = ?",
                (count, count, session_id),
            )
    finally:
        conn.close()


async def timed_turns(api: Api, session_id: str, count: int) -> list[float]:
    await api.turn(session_id)  # warm-up
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await api.turn(session_id)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def alternated(
    api: Api, small: str, large: str, count: int
) -> tuple[list[float], list[float]]:
    """Turns on the two sessions in pairs, the order alternating from one pair to the next,
    so that a busy moment of the machine costs both: (large's times, small's times)."""
    await api.turn(large)  # warm-up: the first read of the compacted history
    await api.turn(small)
    larges, smalls = [], []
    for i in range(count):
        order = (large, small) if i % 2 else (small, large)
        took = {}
        for session_id in order:
            started = time.perf_counter()
            await api.turn(session_id)
            took[session_id] = (time.perf_counter() - started) * 1000
        larges.append(took[large])
        smalls.append(took[small])
    return larges, smalls


def generated(session_id: str, count: int, tag: int) -> list[dict[str, Any]]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return [
        {
            "id": f"01BENCH{tag:03d}{seq:016d}",
            "session_id": session_id,
            "seq": seq,
            "role": "user" if seq % 2 else "assistant",
            "content": [{"type": "text", "text": f"message {seq}: {FILLER}"}],
            "run_id": None,
            "created_at": stamp,
        }
        for seq in range(1, count + 1)
    ]


async def imported(api: Api, agent: str, sizes: tuple[int, ...]) -> list[str] | None:
    """Sessions of the given sizes made with POST /sessions/import; None without that route."""
    template = (await api.sessions(agent, 1))[0]
    exported = await client.call(api.port, "GET", f"/sessions/{template}/export?format=json")
    if exported.status != 200:
        return None
    doc = msgspec.json.decode(exported.body)
    made = []
    for tag, size in enumerate(sizes):
        doc["messages"] = generated(doc["session"]["id"], size, tag)
        response = await client.call(
            api.port, "POST", "/sessions/import", msgspec.json.encode(doc), timeout=120
        )
        if response.status != 201:
            raise RuntimeError(f"POST /sessions/import: HTTP {response.status}: {response.body!r}")
        made.append(msgspec.json.decode(response.body)["sessions"][0]["id"])
    return made


async def written(ctx: Context, api: Api, agent: str, sizes: tuple[int, ...]) -> list[str]:
    """Sessions of the given sizes, messages written with sqlite3 while sessiond is down."""
    sessions = await api.sessions(agent, len(sizes))
    for child in ctx.children:
        await ctx.stop(child)
    for tag, (session_id, size) in enumerate(zip(sessions, sizes, strict=True)):
        fill(ctx.db, session_id, size, tag)
    return sessions


async def run(ctx: Context, result: Result) -> None:
    sizes = ctx.size((10, 1_000, 10_000), (10, 100, 300))
    turns = ctx.size(9, 3)
    server = await ctx.sessiond()
    api = Api(server.port)
    spec = msgspec.json.decode(workload.scripted_agent("history", 2))
    spec["context_window"] = 100_000_000  # never compacts by itself here
    agent = await api.agent(msgspec.json.encode(spec))
    sessions = await imported(api, agent, sizes)
    result.details["built_by"] = "POST /sessions/import" if sessions else "sqlite3, server stopped"
    if sessions is None:
        sessions = await written(ctx, api, agent, sizes)
        server = await ctx.sessiond()
        api = Api(server.port)
    medians: dict[int, float | None] = {}
    for session_id, size in zip(sessions, sizes, strict=True):
        times = await timed_turns(api, session_id, turns)
        medians[size] = median(times)
        result.details[f"turn_ms_{size}"] = times
    compacted = await client.call(
        api.port, "POST", f"/sessions/{sessions[-1]}/compact", timeout=120
    )
    if compacted.status != 200:
        raise RuntimeError(f"POST /sessions/{{id}}/compact: HTTP {compacted.status}")
    info = msgspec.json.decode(compacted.body)["compaction"]
    result.details["compaction"] = info
    after, paired = await alternated(api, sessions[0], sessions[-1], turns)
    result.details[f"turn_ms_{sizes[-1]}_compacted"] = after
    result.details[f"turn_ms_{sizes[0]}_paired"] = paired
    await ctx.stop(server)
    # The first turn after a restart reads its history from the database: the compacted
    # session reads the entry and the turns after it, not its 10,000 rows.
    server = await ctx.sessiond()
    api = Api(server.port)
    await api.turn(sessions[1])  # the new process's own first request, on another session
    cold: dict[str, float] = {}
    for name, session_id in (("small", sessions[0]), ("compacted", sessions[-1])):
        started = time.perf_counter()
        await api.turn(session_id)
        cold[name] = (time.perf_counter() - started) * 1000
    result.details["first_turn_after_restart_ms"] = cold
    await ctx.stop(server)

    small, large = medians[sizes[0]], medians[sizes[-1]]
    for size in sizes:
        result.add(
            Figure(
                f"turn, {size:,} messages", medians[size], "ms", small, ratio(medians[size], small)
            )
        )
    squeezed, beside = median(after), median(paired)
    versus = median([big / little for big, little in zip(after, paired, strict=True)])
    result.add(
        Figure(
            f"turn, {sizes[-1]:,} messages, compacted",
            squeezed,
            "ms",
            beside,
            ratio(squeezed, beside),
        )
    )
    result.add(
        Figure(
            f"compacted {sizes[-1]:,} vs {sizes[0]}, median of pair ratios",
            versus,
            "x",
            target="≤ 1.5x",
            ok=versus is not None and versus <= 1.5,
        )
    )
    result.add(
        Figure(
            f"first turn after a restart, {sizes[-1]:,} compacted",
            cold["compacted"],
            "ms",
            cold["small"],
            ratio(cold["compacted"], cold["small"]),
        )
    )
    share = ratio(large, small)
    result.add(
        Figure(
            f"{sizes[-1]:,} vs {sizes[0]} messages",
            share,
            "x",
            target="≤ 4x",
            ok=share is not None and share <= 4,
        )
    )
