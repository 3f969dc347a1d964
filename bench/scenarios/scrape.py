"""9. Metrics scraped.

What a Prometheus scraper costs the server: the same server measured with `GET /metrics`
read once a second and without it. Short blocking turns as in `turns` (32 clients, each on its
own session and connection), and one-stream events/s as in `stream` but of a 100,000-delta
reply, so that a read spans a scrape or two. The rounds come in pairs, one without and one
with, in alternating order (without-with, then with-without: six pairs of 4 s of turns, six
pairs of stream reads, after a warm-up), so that the machine's drift and any order effect fall
on both; each figure is the median of the pairs' ratios (with over without), target ≥ 0.97x,
the medians of each side beside it. Every scrape is checked (200, and `sessiond_runs_total`
in its body); their count and median time are in the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator

from bench import client, workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, median
from bench.scenarios import stream, turns

NAME = "scrape"
TITLE = "turns/s and one-stream events/s with /metrics scraped once a second, against none"
BUDGET_S = 150.0
INTERVAL_S = 1.0
TARGET = 0.97
ORDERS = ((False, True), (True, False))  # each pair's order: not scraped first, then scraped


class Scrapes:
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.errors: list[str] = []


async def scraper(port: int, scrapes: Scrapes) -> None:
    conn = await client.connect(port)
    try:
        due = time.perf_counter()
        while True:
            started = time.perf_counter()
            response = await conn.request("GET", "/metrics")
            scrapes.seconds.append(time.perf_counter() - started)
            if response.status != 200 or b"sessiond_runs_total" not in response.body:
                scrapes.errors.append(f"HTTP {response.status}: {response.body[:200]!r}")
            due += INTERVAL_S
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def scraped(port: int, scrapes: Scrapes, on: bool) -> AsyncIterator[None]:
    task = asyncio.create_task(scraper(port, scrapes)) if on else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def one_read(url: str, ctx: Context) -> stream.Read:
    reader = stream.curl if shutil.which("curl") else stream.httpx_read
    read = await reader(url, ctx.root / "scrape.sse")
    if read.status != 200 or not read.completed:
        raise RuntimeError(f"{url}: HTTP {read.status}, {read.events} events, no done")
    return read


async def run(ctx: Context, result: Result) -> None:
    rounds = ctx.size(6, 1)
    seconds = ctx.size(4.0, 0.5)
    words = ctx.size(100_000, 500)
    server = await ctx.sessiond()
    api = Api(server.port)
    scrapes = Scrapes()
    rates: dict[bool, list[float]] = {False: [], True: []}
    errors: list[str] = []

    agent = await api.agent(workload.scripted_agent("scrape-turns", 2))
    paths = [f"/sessions/{s}/message" for s in await api.sessions(agent, turns.CLIENTS)]
    await turns.drive(server.port, paths, JSON_BODY, 0.5)  # warm-up
    for i in range(rounds):
        for on in ORDERS[i % 2]:
            async with scraped(server.port, scrapes, on):
                load, elapsed = await turns.drive(server.port, paths, JSON_BODY, seconds)
            rates[on].append(len(load.latencies) / elapsed)
            errors += load.errors

    long = await api.agent(workload.scripted_agent("scrape-stream", words))
    sessions = await api.sessions(long, 2 * rounds + 1)
    urls = [f"http://127.0.0.1:{server.port}/sessions/{s}/message/stream" for s in sessions]
    await one_read(urls[0], ctx)  # warm-up
    events: dict[bool, list[float]] = {False: [], True: []}
    for i in range(rounds):
        for j, on in enumerate(ORDERS[i % 2]):
            url = urls[1 + 2 * i + j]
            async with scraped(server.port, scrapes, on):
                read = await one_read(url, ctx)
            events[on].append(read.events / read.seconds)
    await ctx.stop(server)

    result.details |= {
        "turns_per_s": {"scraped": rates[True], "not_scraped": rates[False]},
        "events_per_s": {"scraped": events[True], "not_scraped": events[False]},
        "scrapes": len(scrapes.seconds),
        "scrape_ms_median": (median(scrapes.seconds) or 0) * 1000,
        "errors_sample": (errors + scrapes.errors)[:5],
    }
    for metric, unit, values in (("turns/s", "/s", rates), ("events/s", "ev/s", events)):
        with_scrapes, without = median(values[True]), median(values[False])
        pairs = [a / b for a, b in zip(values[True], values[False], strict=True) if b]
        share = median(pairs)
        result.add(
            Figure(
                f"{metric}, /metrics scraped 1/s (vs not)",
                with_scrapes,
                unit,
                without,
                share,
                f"≥ {TARGET}x not scraped",
                share is not None and share >= TARGET and not scrapes.errors,
            )
        )
    result.add(Figure("errors", len(errors), "", target="0", ok=not errors))
