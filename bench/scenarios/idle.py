"""6. Idle streams.

RSS growth per idle open SSE connection: 2,000 sessions (fewer if the file limit is lower),
one GET /sessions/{id}/events connection on each (the session channel, which stays open
between runs), opened in waves of 200; each counts as open once its `retry:` block arrived.
Server VmRSS before the first and 1 s after the last; the same against the bare app's GET
/idle (a StreamingResponse that sends `retry:` and then waits) is the baseline.
"""

from __future__ import annotations

import asyncio
import resource

from bench import client, procs
from bench.harness import Api, Context
from bench.report import Figure, Result, ratio

NAME = "idle"
TITLE = "RSS per idle open SSE connection (session channel)"
BUDGET_S = 90.0
WAVE = 200


def _ignore(kind: bytes, data: bytes, t: float) -> None:
    pass


async def hold(ctx: Context, child: procs.Child, paths: list[str]) -> tuple[int, int, int]:
    """Open every stream and keep it open; (RSS before, RSS with all open, failures)."""
    await ctx.settle(0.5)
    before = child.rss_kb()
    conns: list[client.Connection] = []
    failures = 0
    try:
        for start in range(0, len(paths), WAVE):
            opened = await asyncio.gather(
                *(open_one(child.port, p) for p in paths[start : start + WAVE]),
                return_exceptions=True,
            )
            for item in opened:
                if isinstance(item, client.Connection):
                    conns.append(item)
                else:
                    failures += 1
        await ctx.settle(1.0)
        during = child.rss_kb()
    finally:
        for conn in conns:
            conn.close()
    return before, during, failures


async def open_one(port: int, path: str) -> client.Connection:
    conn = await client.connect(port)
    try:
        stream = conn.open_stream("GET", path, _ignore)
        await asyncio.wait_for(stream.opened, 30)
        if stream.status != 200:
            raise client.HttpError(f"HTTP {stream.status}")
    except BaseException:
        conn.close()
        raise
    return conn


def capacity(wanted: int) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, min(wanted, (soft - 200) // 2))


async def run(ctx: Context, result: Result) -> None:
    count = capacity(ctx.size(2000, 50))
    server = await ctx.sessiond()
    sessions = await Api(server.port).sessions("default", count)
    before, during, failures = await hold(ctx, server, [f"/sessions/{s}/events" for s in sessions])
    await ctx.settle(0.5)
    result.details["sessiond_rss_kb"] = {
        "before": before,
        "open": during,
        "closed": server.rss_kb(),
    }
    await ctx.stop(server)

    baseline = await ctx.baseline()
    base0, base1, base_failures = await hold(ctx, baseline, ["/idle"] * count)
    await ctx.stop(baseline)

    per_conn = (during - before) / count
    base_per_conn = (base1 - base0) / count
    result.details |= {"connections": count, "baseline_rss_kb": {"before": base0, "open": base1}}
    result.add(
        Figure(
            "RSS per idle connection",
            per_conn,
            "KB",
            base_per_conn,
            ratio(per_conn, base_per_conn),
            "≤ 40 KB",
            per_conn <= 40,
        )
    )
    result.add(Figure("connections refused", failures, "", target="0", ok=failures == 0))
    result.details["baseline_failures"] = base_failures
