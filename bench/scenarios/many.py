"""2. Many streams.

1,000 sessions each stream a 200-token reply at one token per 50 ms (`token_delay_ms: 50`),
all started at once, read by our asyncio client in the bench process (its own process, the
file limit raised); the bare app serves the same schedule as the baseline. Both keep the
schedule as a model does: delta i is due i x 50 ms after the first, however late the ones
before it went out (with a sleep of 50 ms after each send instead, every delay a loaded
server adds is carried into all later deltas, and the lag measured is mostly that sum).

Delivery lag of delta i = its arrival at the client - its scheduled time. The schedule
starts where the producer started, which the client cannot see; it is taken as the earliest
start the arrivals allow, scheduled(i) = min over j of (arrival(j) - j x 50 ms) + i x 50 ms,
so the best-delivered delta of a stream has lag 0 and the rest are measured against it (on
the first delta instead, a first delta held up by the start of a thousand runs would make
every later, punctual one look early). This measures how late the server delivers what a steady
producer emits once a stream is flowing, and keeps the (separately reported) time to first
token out of it; lag measured from the request start, scheduled(i) = sent + (i + 1) x 50 ms,
is reported too. Server RSS is VmRSS
from /proc before the streams start and its highest 100 ms sample while they run.

The full run alternates ROUNDS rounds (sessiond, then the bare app, each started afresh) and
reports the median of the rounds' figures, each round's kept in the details, since on a
shared machine a single round's ratio depends on which side the host's stalls land on (see
bench/README.md). Five rounds, so that one stalled round of either side moves the median no
more than a quiet one would. A smoke run does one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import msgspec

from bench import client, procs, workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, median, percentile, ratio

NAME = "many"
TITLE = "1,000 concurrent streams, 200 tokens at 50 ms each"
BUDGET_S = 200.0
ROUNDS = 5
SAMPLES = 36_000  # RSS samples 0.1 s apart: an hour, far beyond any stream's timeout


class Tally:
    """One stream's arrivals."""

    __slots__ = ("deltas", "done", "error", "sent")

    def __init__(self) -> None:
        self.sent = 0.0
        self.deltas: list[float] = []
        self.done: bytes | None = None
        self.error: str | None = None

    def on_event(self, kind: bytes, data: bytes, t: float) -> None:
        if kind == b"text_delta":
            self.deltas.append(t)
        elif kind == b"done":
            self.done = data


async def one(port: int, path: str, body: bytes | None, tally: Tally, timeout: float) -> None:
    conn: client.Connection | None = None
    try:
        conn = await client.connect(port, timeout=timeout)
        tally.sent = time.perf_counter()
        response = await asyncio.wait_for(conn.stream("POST", path, tally.on_event, body), timeout)
        if response.status != 200:
            tally.error = f"HTTP {response.status}: {response.body[:200]!r}"
    except (OSError, client.HttpError, TimeoutError) as exc:
        tally.error = f"{type(exc).__name__}: {exc}"
    finally:
        if conn is not None:
            conn.close()


async def peak_rss(child: procs.Child, stop: asyncio.Event) -> int:
    peak = 0
    for _ in range(SAMPLES):
        if stop.is_set():
            break
        peak = max(peak, child.rss_kb())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return max(peak, child.rss_kb())


class Round(msgspec.Struct):
    """One side's figures in one round."""

    lag_ms: dict[str, float | None]
    rss_kb: dict[str, int]
    cpu: dict[str, float]
    errors: int
    errors_sample: list[str]

    def per_stream_kb(self, streams: int) -> float:
        return (self.rss_kb["peak"] - self.rss_kb["before"]) / streams


async def fan_out(
    ctx: Context,
    child: procs.Child,
    paths: list[str],
    body: bytes | None,
    tokens: int,
    delay_ms: int,
) -> Round:
    """All streams at once, and the child's figures for them."""
    await ctx.settle(0.5)
    before = child.rss_kb()
    cpu, started, mine = child.cpu_s(), time.perf_counter(), time.process_time()
    stop = asyncio.Event()
    sampler = asyncio.create_task(peak_rss(child, stop))
    tallies = [Tally() for _ in paths]
    timeout = tokens * delay_ms / 1000 * 4 + 20
    try:
        await asyncio.gather(
            *(one(child.port, p, body, t, timeout) for p, t in zip(paths, tallies, strict=True))
        )
    finally:
        stop.set()
        peak = await sampler
    cpu, wall = child.cpu_s() - cpu, time.perf_counter() - started
    client_cores = (time.process_time() - mine) / wall
    for tally in tallies:
        if tally.error is None and (tally.done is None or b'"completed"' not in tally.done):
            tally.error = f"no completed done (got {tally.done!r})"
        elif tally.error is None and len(tally.deltas) != tokens:
            tally.error = f"{len(tally.deltas)} deltas, expected {tokens}"
    errors = [t.error for t in tallies if t.error]
    return Round(
        lags(tallies, delay_ms / 1000),
        {"before": before, "peak": peak},
        {"cores": cpu / wall, "wall_s": wall, "client_cores": client_cores},
        len(errors),
        errors[:5],
    )


def lags(tallies: list[Tally], delay: float) -> dict[str, float | None]:
    anchored: list[float] = []
    from_start: list[float] = []
    first: list[float] = []
    for tally in tallies:
        if not tally.deltas:
            continue
        first.append(tally.deltas[0] - tally.sent)
        t0 = min(t - i * delay for i, t in enumerate(tally.deltas))
        for i, t in enumerate(tally.deltas):
            anchored.append(t - (t0 + i * delay))
            from_start.append(t - (tally.sent + (i + 1) * delay))
    ms = 1000.0
    return {
        "p50": _ms(percentile(anchored, 50), ms),
        "p99": _ms(percentile(anchored, 99), ms),
        "max": _ms(max(anchored, default=None), ms),
        "from_start_p50": _ms(percentile(from_start, 50), ms),
        "from_start_p99": _ms(percentile(from_start, 99), ms),
        "ttft_p50": _ms(percentile(first, 50), ms),
        "ttft_p99": _ms(percentile(first, 99), ms),
    }


def _ms(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


async def run(ctx: Context, result: Result) -> None:
    streams = ctx.size(1000, 20)
    tokens = ctx.size(200, 20)
    delay_ms = 50
    ours: list[Round] = []
    theirs: list[Round] = []
    for _ in range(ctx.size(ROUNDS, 1)):
        ours.append(await _ours(ctx, streams, tokens, delay_ms))
        theirs.append(await _theirs(ctx, streams, tokens, delay_ms))

    def mid(rounds: list[Round], key: str) -> float | None:
        values = [r.lag_ms[key] for r in rounds]
        return median([v for v in values if v is not None])

    per_stream = median([r.per_stream_kb(streams) for r in ours]) or 0.0
    base_per_stream = median([r.per_stream_kb(streams) for r in theirs])
    errors = [e for r in ours for e in r.errors_sample]
    error_count = sum(r.errors for r in ours)
    result.details |= {
        "streams": streams,
        "tokens": tokens,
        "rounds": len(ours),
        "sessiond_rounds": msgspec.to_builtins(ours),
        "baseline_rounds": msgspec.to_builtins(theirs),
        "errors_sample": errors[:5],
        "baseline_errors": sum(r.errors for r in theirs),
    }
    p99, base_p99 = mid(ours, "p99"), mid(theirs, "p99")
    share = ratio(p99, base_p99)
    result.add(Figure("p99 lag", p99, "ms", base_p99, share, "≤ 1.5x baseline", _le(share, 1.5)))
    for label, key in (
        ("p50 lag", "p50"),
        ("p99 lag from request start", "from_start_p99"),
        ("p99 time to first token", "ttft_p99"),
    ):
        mine, base = mid(ours, key), mid(theirs, key)
        result.add(Figure(label, mine, "ms", base, ratio(mine, base)))
    result.add(Figure("stream errors", error_count, "", target="0", ok=error_count == 0))
    result.add(
        Figure(
            "RSS per stream",
            per_stream,
            "KB",
            base_per_stream,
            ratio(per_stream, base_per_stream),
            "≤ 40 KB",
            per_stream <= 40,
        )
    )


async def _ours(ctx: Context, streams: int, tokens: int, delay_ms: int) -> Round:
    for suffix in ("", "-wal", "-shm"):  # each round from an empty database
        Path(f"{ctx.db}{suffix}").unlink(missing_ok=True)
    server = await ctx.sessiond()
    api = Api(server.port)
    agent = await api.agent(workload.scripted_agent("many", tokens, delay_ms))
    sessions = await api.sessions(agent, streams)
    paths = [f"/sessions/{s}/message/stream" for s in sessions]
    figures = await fan_out(ctx, server, paths, JSON_BODY, tokens, delay_ms)
    await ctx.stop(server)
    return figures


async def _theirs(ctx: Context, streams: int, tokens: int, delay_ms: int) -> Round:
    baseline = await ctx.baseline()
    paths = [f"/paced?words={tokens}&delay_ms={delay_ms}"] * streams
    figures = await fan_out(ctx, baseline, paths, b"{}", tokens, delay_ms)
    await ctx.stop(baseline)
    return figures


def _le(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit
