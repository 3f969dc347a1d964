"""3. Blocking turns.

32 clients, each on its own keep-alive connection and its own session, send short blocking
turns (POST /sessions/{id}/message, a two-word scripted reply) back to back for 20 s; turns/s
counts the answers that came back 200 with a completed run. The baseline is the same client
against the bare app's POST /turn (decode a JSON body, answer a JSON object) for 5 s: the
framework's ceiling on this machine. Then both again for 5 s with aiohttp's client (a
ClientSession of one connection per worker), so that the figure does not rest on one client.

Auth on against auth off: a second server runs beside the first on a database of its own, on
which an admin key was made (`sessiond keys create`, as an operator would), and its 32 clients
send the key on every request. The 20 s go in four rounds of 5 s, each server in turn (ABBA
order), the idle one waiting; the auth-on figure is the median of the rounds' ratios, so a
neighbour's load that comes and goes falls on both sides alike. Each session's history grows
as the run goes on; each round's turns/s is in the details.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench import client, procs, workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, percentile, ratio

NAME = "turns"
TITLE = "32 clients doing short blocking turns for 20 s"
BUDGET_S = 90.0
CLIENTS = 32
ROUNDS = 4  # alternated rounds of each server (ABBA)
MAX_TURNS = 1_000_000  # per client: the time limit ends the loop long before


class Load:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.finished: list[float] = []
        self.errors: list[str] = []


async def worker(
    port: int, path: str, body: bytes, until: float, load: Load, headers: str = ""
) -> None:
    conn = await client.connect(port)
    try:
        for _ in range(MAX_TURNS):
            started = time.perf_counter()
            if started >= until:
                break
            try:
                response = await asyncio.wait_for(conn.request("POST", path, body, headers), 30)
            except (OSError, client.HttpError, TimeoutError) as exc:
                load.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = await client.connect(port)
                continue
            ended = time.perf_counter()
            if response.status != 200 or b'"status":"completed"' not in response.body:
                load.errors.append(f"HTTP {response.status}: {response.body[:200]!r}")
                continue
            load.latencies.append(ended - started)
            load.finished.append(ended)
    finally:
        conn.close()


async def drive(
    port: int, paths: list[str], body: bytes, seconds: float, headers: str = ""
) -> tuple[Load, float]:
    load = Load()
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(worker(port, p, body, until, load, headers) for p in paths))
    return load, time.perf_counter() - started


async def drive_aiohttp(
    port: int, paths: list[str], body: bytes, seconds: float
) -> tuple[Load, float]:
    """`drive` with aiohttp's client in place of ours: each worker a ClientSession of one
    keep-alive connection. A second client, so that no figure rests on one client alone."""
    import aiohttp

    load = Load()
    started = time.perf_counter()
    until = started + seconds
    headers = {"Content-Type": "application/json"}

    async def worker(path: str) -> None:
        url = f"http://127.0.0.1:{port}{path}"
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            while (began := time.perf_counter()) < until:
                try:
                    async with http.post(url, data=body, headers=headers) as response:
                        answer = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    load.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                ended = time.perf_counter()
                if status != 200 or (path != "/turn" and b'"status":"completed"' not in answer):
                    load.errors.append(f"HTTP {status}: {answer[:200]!r}")
                    continue
                load.latencies.append(ended - began)
                load.finished.append(ended)

    await asyncio.gather(*(worker(p) for p in paths))
    return load, time.perf_counter() - started


WRITER_CPU = b"sessiond_db_writer_cpu_seconds_total "


async def writer_cpu_s(port: int, headers: str = "") -> float | None:
    """The server's database writer thread's CPU seconds so far, from GET /metrics."""
    response = await client.call(port, "GET", "/metrics", headers=headers)
    for line in response.body.splitlines():
        if line.startswith(WRITER_CPU):
            return float(line[len(WRITER_CPU) :])
    return None


class Side:
    """One server's share of the alternated rounds."""

    def __init__(self, server: procs.Child, paths: list[str], headers: str = "") -> None:
        self.server = server
        self.paths = paths
        self.headers = headers
        self.load = Load()
        self.elapsed = 0.0
        self.cpu = 0.0
        self.writer_cpu: float | None = 0.0
        self.rates: list[float] = []

    async def round(self, seconds: float) -> None:
        cpu = self.server.cpu_s()
        writer = await writer_cpu_s(self.server.port, self.headers)
        load, elapsed = await drive(self.server.port, self.paths, JSON_BODY, seconds, self.headers)
        self.cpu += self.server.cpu_s() - cpu
        writer_after = await writer_cpu_s(self.server.port, self.headers)
        if writer is None or writer_after is None or self.writer_cpu is None:
            self.writer_cpu = None
        else:
            self.writer_cpu += writer_after - writer
        self.elapsed += elapsed
        self.load.latencies += load.latencies
        self.load.errors += load.errors
        self.rates.append(len(load.latencies) / elapsed)


async def run(ctx: Context, result: Result) -> None:
    seconds = ctx.size(20.0, 1.0)
    base_seconds = ctx.size(5.0, 0.5)
    rounds = ctx.size(ROUNDS, 2)
    server = await ctx.sessiond()
    keyed_root = ctx.root / "auth"
    keyed_server = await ctx.sessiond(root=keyed_root)
    api = Api(server.port)
    keyed = await Api(keyed_server.port).with_auth(keyed_root / "sessiond.db")
    sides: list[Side] = []
    for side_api, child in ((api, server), (keyed, keyed_server)):
        agent = await side_api.agent(workload.scripted_agent("turns", 2))
        paths = [f"/sessions/{s}/message" for s in await side_api.sessions(agent, CLIENTS)]
        await drive(child.port, paths, JSON_BODY, 0.2, side_api.headers)  # warm-up
        sides.append(Side(child, paths, side_api.headers))
    off, on = sides
    for index in range(rounds):
        for side in (off, on) if index % 2 == 0 else (on, off):
            await side.round(seconds / rounds)
    aio_seconds = ctx.size(5.0, 0.5)
    aio_ours, aio_elapsed = await drive_aiohttp(server.port, off.paths, JSON_BODY, aio_seconds)
    result.details["turns_per_s_by_round"] = off.rates
    result.details["auth_on_turns_per_s_by_round"] = on.rates
    result.details["sessiond_rss_kb_after"] = server.rss_kb()
    await ctx.stop(server)
    await ctx.stop(keyed_server)

    baseline = await ctx.baseline()
    base_paths = ["/turn"] * CLIENTS
    await drive(baseline.port, base_paths, JSON_BODY, 0.2)
    base_cpu = baseline.cpu_s()
    theirs, base_elapsed = await drive(baseline.port, base_paths, JSON_BODY, base_seconds)
    base_cpu = baseline.cpu_s() - base_cpu
    aio_theirs, aio_base_elapsed = await drive_aiohttp(
        baseline.port, base_paths, JSON_BODY, aio_seconds
    )
    await ctx.stop(baseline)

    ours, elapsed, cpu = off.load, off.elapsed, off.cpu
    rate = len(ours.latencies) / elapsed
    base_rate = len(theirs.latencies) / base_elapsed
    result.details |= {"turns": len(ours.latencies), "errors_sample": ours.errors[:5]}
    result.add(
        Figure("turns/s", rate, "/s", base_rate, ratio(rate, base_rate), "≥ 1,000/s", rate >= 1000)
    )
    for q in (50, 99):
        mine, base = percentile(ours.latencies, q), percentile(theirs.latencies, q)
        value = None if mine is None else mine * 1000
        base_ms = None if base is None else base * 1000
        result.add(Figure(f"p{q} latency", value, "ms", base_ms, ratio(value, base_ms)))
    per_turn = cpu / max(1, len(ours.latencies)) * 1000
    base_per_turn = base_cpu / max(1, len(theirs.latencies)) * 1000
    result.add(
        Figure("server CPU per turn", per_turn, "ms", base_per_turn, ratio(per_turn, base_per_turn))
    )
    if off.writer_cpu is not None:
        writer_per_turn = off.writer_cpu / max(1, len(ours.latencies)) * 1000
        result.add(Figure("… of it the database writer thread", writer_per_turn, "ms"))
    result.add(Figure("errors", len(ours.errors), "", target="0", ok=not ours.errors))
    keyed_rate = len(on.load.latencies) / on.elapsed
    share = statistics.median([a / b for a, b in zip(on.rates, off.rates, strict=True) if b])
    result.add(
        Figure(
            "turns/s, auth on (vs off)",
            keyed_rate,
            "/s",
            rate,
            share,
            "≥ 0.95x auth off",
            share >= 0.95 and not on.load.errors,
        )
    )
    auth_cpu = on.cpu / max(1, len(on.load.latencies)) * 1000
    result.add(
        Figure("server CPU per turn, auth on", auth_cpu, "ms", per_turn, ratio(auth_cpu, per_turn))
    )
    result.details["auth_on_errors_sample"] = on.load.errors[:5]
    aio_rate = len(aio_ours.latencies) / aio_elapsed
    aio_base = len(aio_theirs.latencies) / aio_base_elapsed
    aio_share = ratio(aio_rate, aio_base)
    result.add(
        Figure(
            "turns/s, aiohttp client",
            aio_rate,
            "/s",
            aio_base,
            aio_share,
            "≥ 0.5x bare",
            aio_share is not None and aio_share >= 0.5 and not aio_ours.errors,
        )
    )
    mine, base = percentile(aio_ours.latencies, 99), percentile(aio_theirs.latencies, 99)
    p99 = ratio(mine, base)
    result.add(
        Figure(
            "p99 latency, aiohttp client",
            None if mine is None else mine * 1000,
            "ms",
            None if base is None else base * 1000,
            p99,
            "≤ 3x bare",
            p99 is not None and p99 <= 3.0,
        )
    )
    result.details["aiohttp_errors_sample"] = aio_ours.errors[:5] + aio_theirs.errors[:5]
