"""8. Provider latency.

The server's added latency over a provider: sessiond runs an `anthropic` agent whose
`base_url` is the loopback double in bench/upstream.py (ANTHROPIC_API_KEY set to a dummy in
the server's environment, and the double made the operator's endpoint for anthropic). The
double and the client share the bench process and its clock. Per turn (200, sequential,
over 10 sessions):

- first token: our first `text_delta` at the client - the double writing its first delta
- end: our `done` at the client - the double writing `message_stop`

Median and p99 of each. The baseline is the same client reading the double directly (first
`content_block_delta`, `message_stop`): the floor of the measurement itself.
"""

from __future__ import annotations

import asyncio

import msgspec

from bench import client
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, median, percentile
from bench.upstream import Upstream

NAME = "provider"
TITLE = "latency sessiond adds over a streaming provider (Anthropic double)"
BUDGET_S = 60.0
KEY = "sk-ant-bench-dummy"


class Marks:
    def __init__(self, first_kind: bytes, last_kind: bytes) -> None:
        self.first_kind = first_kind
        self.last_kind = last_kind
        self.first = 0.0
        self.last = 0.0

    def on_event(self, kind: bytes, data: bytes, t: float) -> None:
        if kind == self.first_kind and not self.first:
            self.first = t
        elif kind == self.last_kind:
            self.last = t


async def turns(
    up: Upstream, port: int, paths: list[str], count: int, marks: tuple[bytes, bytes]
) -> tuple[list[float], list[float]]:
    """(first-token latencies, end latencies) in ms over `count` turns, after one warm-up."""
    firsts: list[float] = []
    ends: list[float] = []
    conn = await client.connect(port)
    try:
        for i in range(count + 1):
            mark = Marks(*marks)
            seen = len(up.timings)
            response = await asyncio.wait_for(
                conn.stream("POST", paths[i % len(paths)], mark.on_event, JSON_BODY), 30
            )
            if response.status != 200 or not mark.first or not mark.last:
                raise RuntimeError(f"turn {i}: HTTP {response.status} {response.body[:300]!r}")
            if len(up.timings) != seen + 1:
                raise RuntimeError(f"turn {i}: the double saw {len(up.timings) - seen} requests")
            first, end = up.timings[-1]
            if i:
                firsts.append((mark.first - first) * 1000)
                ends.append((mark.last - end) * 1000)
    finally:
        conn.close()
    return firsts, ends


async def run(ctx: Context, result: Result) -> None:
    count = ctx.size(200, 10)
    up = await Upstream().start()
    try:
        root = f"http://127.0.0.1:{up.port}"
        # the double is the operator's endpoint: only such an endpoint gets the server's key
        allowed = {"ANTHROPIC_API_KEY": KEY, "SESSIOND_PROVIDER_BASE_URLS": f"anthropic={root}"}
        server = await ctx.sessiond(allowed)
        api = Api(server.port)
        body = {
            "name": "upstream",
            "provider": "anthropic",
            "model": "claude-bench",
            "options": {"base_url": root},
        }
        agent = await api.agent(msgspec.json.encode(body))
        sessions = await api.sessions(agent, ctx.size(10, 2))
        paths = [f"/sessions/{s}/message/stream" for s in sessions]
        ours = await turns(up, server.port, paths, count, (b"text_delta", b"done"))
        await ctx.stop(server)
        direct = (b"content_block_delta", b"message_stop")
        theirs = await turns(up, up.port, ["/v1/messages"], count, direct)
    finally:
        await up.close()

    for label, mine, base in (("first token", ours[0], theirs[0]), ("done", ours[1], theirs[1])):
        mid, p99 = median(mine), percentile(mine, 99)
        result.add(
            Figure(
                f"added latency, {label}, median",
                mid,
                "ms",
                median(base),
                target="< 2 ms",
                ok=mid is not None and mid < 2,
            )
        )
        result.add(
            Figure(
                f"added latency, {label}, p99",
                p99,
                "ms",
                percentile(base, 99),
                target="< 10 ms",
                ok=p99 is not None and p99 < 10,
            )
        )
    result.details |= {
        "turns": count,
        "upstream_requests": up.requests,
        "first_token_ms": [round(x, 3) for x in ours[0]],
        "done_ms": [round(x, 3) for x in ours[1]],
    }
