"""13. Two processes on one PostgreSQL against one process on SQLite.

The same machine runs, in one scenario: one `sessiond serve` on an SQLite file, and two on
one PostgreSQL database (a throwaway cluster from the Debian package's binaries, as the tests
start, sharing the machine's cores, reached over its Unix socket as a client on the same host
would; or the server SESSIOND_TEST_PG_URL names).

- Turns: 32 clients, each on its own session, send short blocking turns back to back for
  10 s; on PostgreSQL half the clients talk to each process. turns/s of the pair against the
  one process on SQLite (target ≥ 0.7x), and errors (target 0).
- Many streams: 1,000 sessions stream a 200-token reply at one token per 50 ms, all at once
  (on PostgreSQL 500 to each process); the p99 delivery lag (as in `many`) of the pair
  against the one on SQLite (target ≤ 2x), and stream errors (target 0).
"""

from __future__ import annotations

import asyncio
import time

from bench import procs, workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, ratio
from bench.scenarios.many import Tally, lags, one
from bench.scenarios.turns import drive

NAME = "scale"
TITLE = "two processes on PostgreSQL beside one on SQLite: turns and 1,000 streams"
BUDGET_S = 240.0
CLIENTS = 32


def _server_url(ctx: Context) -> tuple[str, object | None]:
    import os

    given = os.environ.get("SESSIOND_TEST_PG_URL")
    if given:
        return given, None
    from tests import pg  # the tests' throwaway cluster

    bindir = pg.binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    cluster = pg.Cluster(bindir).start()
    return cluster.socket_url, cluster  # on the same host: its Unix socket, not loopback TCP


async def _turns(children: list[procs.Child], seconds: float) -> tuple[float, list[str]]:
    apis = [Api(child.port) for child in children]
    agent = await apis[0].agent(workload.scripted_agent("turns", 2))
    share = CLIENTS // len(children)
    plans = []
    for api, child in zip(apis, children, strict=True):
        paths = [f"/sessions/{s}/message" for s in await api.sessions(agent, share)]
        await drive(child.port, paths, JSON_BODY, 0.2)  # warm-up
        plans.append((child.port, paths))
    results = await asyncio.gather(*(drive(p, paths, JSON_BODY, seconds) for p, paths in plans))
    turns = sum(len(load.latencies) for load, _ in results)
    elapsed = max(e for _, e in results)
    return turns / elapsed, [e for load, _ in results for e in load.errors]


async def _streams(
    children: list[procs.Child], streams: int, tokens: int, delay_ms: int
) -> tuple[dict[str, float | None], list[str]]:
    apis = [Api(child.port) for child in children]
    agent = await apis[0].agent(workload.scripted_agent("many", tokens, delay_ms))
    share = streams // len(children)
    jobs = []
    tallies: list[Tally] = []
    timeout = tokens * delay_ms / 1000 * 4 + 20
    for api, child in zip(apis, children, strict=True):
        for sid in await api.sessions(agent, share):
            tally = Tally()
            tallies.append(tally)
            path = f"/sessions/{sid}/message/stream"
            jobs.append(one(child.port, path, JSON_BODY, tally, timeout))
    await asyncio.sleep(0.5)
    await asyncio.gather(*jobs)
    errors = []
    for tally in tallies:
        if tally.error is None and (tally.done is None or b'"completed"' not in tally.done):
            tally.error = f"no completed done (got {tally.done!r})"
        elif tally.error is None and len(tally.deltas) != tokens:
            tally.error = f"{len(tally.deltas)} deltas, expected {tokens}"
        if tally.error:
            errors.append(tally.error)
    return lags(tallies, delay_ms / 1000), errors


async def run(ctx: Context, result: Result) -> None:
    seconds = ctx.size(10.0, 1.0)
    streams, tokens, delay_ms = ctx.size(1000, 20), ctx.size(200, 20), 50
    url, cluster = _server_url(ctx)
    try:
        db = await asyncio.to_thread(_database, url)
        figures: dict[str, tuple[float, list[str], dict[str, float | None], list[str]]] = {}
        for side in ("sqlite", "postgres"):
            started = time.perf_counter()
            if side == "sqlite":
                children = [await ctx.sessiond(root=ctx.root / "sqlite")]
            else:
                env = {"SESSIOND_KEY_FILE": str(ctx.root / "pg.key")}
                children = [await ctx.sessiond(env, ctx.root / f"pg{i}", db) for i in (1, 2)]
            rate, turn_errors = await _turns(children, seconds)
            lag, stream_errors = await _streams(children, streams, tokens, delay_ms)
            for child in children:
                await ctx.stop(child)
            figures[side] = (rate, turn_errors, lag, stream_errors)
            result.details[f"{side}_seconds"] = time.perf_counter() - started
    finally:
        if cluster is not None:
            cluster.stop()  # type: ignore[attr-defined]
    (s_rate, _, s_lag, s_errors) = figures["sqlite"]
    (p_rate, p_turn_errors, p_lag, p_errors) = figures["postgres"]
    result.details |= {
        "sqlite_lag_ms": s_lag,
        "postgres_lag_ms": p_lag,
        "sqlite_turn_errors": len(figures["sqlite"][1]),
        "sqlite_stream_errors": len(s_errors),
        "errors_sample": (p_turn_errors + p_errors)[:5],
    }
    share = ratio(p_rate, s_rate)
    ok = share is not None and share >= 0.7
    result.add(Figure("turns/s, 2 x PostgreSQL", p_rate, "/s", s_rate, share, "≥ 0.7x", ok))
    result.add(Figure("turn errors", len(p_turn_errors), "", target="0", ok=not p_turn_errors))
    p99, s_p99 = p_lag["p99"], s_lag["p99"]
    lag_share = ratio(p99, s_p99)
    ok = lag_share is not None and lag_share <= 2
    result.add(Figure("p99 lag of streams", p99, "ms", s_p99, lag_share, "≤ 2x", ok))
    result.add(Figure("stream errors", len(p_errors), "", target="0", ok=not p_errors))


def _database(server_url: str) -> str:
    from tests import pg

    return pg.new_database(server_url)
