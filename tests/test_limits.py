"""Per-key limits: runs started a minute and streams open at once; past either, 429
rate_limited with Retry-After, for that key alone."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import httpx
import pytest

from server.api.keys import issue
from server.api.limits import WINDOW_S, KeyLimits
from server.cli import main
from server.errors import RateLimited
from tests.conftest import app_client, make_settings
from tests.live import ThreadServer
from tests.spec import Spec
from tests.waiting import until, wait_until


def test_runs_a_minute_are_counted_per_key_over_a_sliding_window() -> None:
    clock = [1000.0]
    limits = KeyLimits(runs_per_min=3, streams=1, clock=lambda: clock[0])
    for _ in range(3):
        limits.start_run("a")
        clock[0] += 10
    with pytest.raises(RateLimited) as refused:
        limits.start_run("a")
    assert refused.value.headers["Retry-After"] == str(int(WINDOW_S - 30))
    limits.start_run("b")  # another key has its own count
    for _ in range(10):
        limits.start_run(None)  # no key (auth off): no limit
    clock[0] += 30  # the first start has left the window
    limits.start_run("a")
    with pytest.raises(RateLimited):
        limits.start_run("a")


def test_streams_open_are_counted_until_they_close() -> None:
    limits = KeyLimits(runs_per_min=10, streams=2)
    first, second = limits.open_stream("a"), limits.open_stream("a")
    with pytest.raises(RateLimited):
        limits.open_stream("a")
    with pytest.raises(RateLimited):
        limits.check_stream("a")
    limits.open_stream("b")()
    first()
    first()  # closing twice frees one place only
    third = limits.open_stream("a")
    with pytest.raises(RateLimited):
        limits.open_stream("a")
    second()
    third()
    limits.open_stream("a")


def test_a_key_past_its_runs_a_minute_gets_429(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with app_client(make_settings(tmp_path, rate_runs_per_min=2)) as client:
            keys = client.app.state.store.keys
            mine = {"authorization": f"Bearer {(await issue(keys, 'a', 'write')).key}"}
            other = {"authorization": f"Bearer {(await issue(keys, 'b', 'write')).key}"}

            async def on() -> bool:
                return (await client.get("/sessions")).status_code == 401

            await until(on, "auth on")
            sid = (await client.post("/sessions", json={}, headers=mine)).json()["id"]
            url = f"/sessions/{sid}/message"
            for _ in range(2):
                answer = await client.post(url, json={"message": "hi"}, headers=mine)
                assert answer.status_code == 200, answer.text
            refused = await client.post(url, json={"message": "hi"}, headers=mine)
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert refused.json()["error"]["type"] == "rate_limited"
            spec.check(refused, "/sessions/{session_id}/message")
            once = await client.post("/run", json={"prompt": "hi"}, headers=mine)
            assert once.status_code == 429
            spec.check(once, "/run")
            assert (
                await client.post(url, json={"message": "hi"}, headers=other)
            ).status_code == 200

    asyncio.run(go())


def test_a_key_past_its_open_streams_gets_429_until_one_closes(tmp_path: Path) -> None:
    spec = Spec()
    settings = make_settings(tmp_path, max_streams_per_key=1, ping_s=0.2)
    server = ThreadServer(settings).start()
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["keys", "create", "--name", "a", "--db", settings.db]) == 0
        key = {"authorization": f"Bearer {out.getvalue().strip()}"}
        url = server.url
        wait_until(lambda: httpx.get(f"{url}/sessions").status_code == 401, "auth on")
        sid = httpx.post(f"{url}/sessions", json={}, headers=key).json()["id"]
        channel = f"{url}/sessions/{sid}/events"

        def opens() -> bool:
            with httpx.stream("GET", channel, headers=key, timeout=30) as stream:
                if stream.status_code != 200:
                    return False
                next(stream.iter_raw())  # the stream is open (and counted) once it sends
                return True

        with httpx.stream("GET", channel, headers=key, timeout=30) as first:
            assert first.status_code == 200
            chunks = first.iter_raw()  # kept: a generator let go of closes the stream
            next(chunks)
            refused = httpx.get(channel, headers=key)
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            spec.check(refused, "/sessions/{session_id}/events")
            message = httpx.post(
                f"{url}/sessions/{sid}/message/stream", json={"message": "hi"}, headers=key
            )
            assert message.status_code == 429  # refused before a run starts
            assert httpx.get(f"{url}/sessions/{sid}/runs", headers=key).json()["data"] == []
        wait_until(opens, "a stream to open once the first has closed")
    finally:
        server.stop()
