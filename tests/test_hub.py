"""The session channel's parts alone: wake-ups with a quiet limit, watchers, the hub."""

from __future__ import annotations

import asyncio
import gc
import weakref

from server.runs.channel import Hub
from server.runs.signals import Flag, Quiet, Signal, Ticker
from tests.waiting import until


def test_a_wait_is_woken_by_a_fire_or_ends_after_the_quiet_time() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        signal, quiet = Signal(), Quiet(0.05)
        for _ in range(5):  # waits woken in time: the one timer keeps moving on
            loop.call_later(0.02, signal.fire)
            assert await signal.next(quiet) is True
        started = loop.time()
        waiter = signal.next(quiet)
        assert await waiter is False
        assert 0.04 <= loop.time() - started < 0.5
        signal.discard(waiter)
        quiet.close()

    asyncio.run(go())


def test_a_cancelled_wait_is_skipped_by_the_next_fire() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        signal, quiet = Signal(), Quiet(5)
        signal.next(quiet).cancel()  # a follower that went away
        signal.fire()
        second = signal.next(quiet)
        loop.call_soon(signal.fire)
        assert await second is True
        quiet.close()

    asyncio.run(go())


def test_watchers_get_batches_pings_and_an_end() -> None:
    async def go() -> None:
        hub = Hub(buffer_limit=3)
        quiet = Quiet(0.02)
        watcher, slow = hub.watch("s"), hub.watch("s")
        assert await watcher.next_batch(quiet) == []  # quiet: a ping
        for seq in (1, 2):
            hub.publish("s", ("r", seq, "text_delta", b"{}"))
        assert [r[1] for r in await watcher.next_batch(quiet) or []] == [1, 2]
        for seq in (3, 4):  # the slow watcher now holds four: more than its buffer
            hub.publish("s", ("r", seq, "text_delta", b"{}"))
        assert slow.closed and not watcher.closed
        hub.leave(slow)
        hub.end_session("s")
        assert [r[1] for r in await watcher.next_batch(quiet) or []] == [3, 4]
        assert await watcher.next_batch(quiet) is None
        quiet.close()

    asyncio.run(go())


def test_a_flag_wakes_every_waiter_and_survives_a_cancelled_one() -> None:
    async def go() -> None:
        flag = Flag()
        first = asyncio.ensure_future(flag.wait())
        second = asyncio.ensure_future(flag.wait())
        cancelled = asyncio.ensure_future(flag.wait())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert not flag.is_set() and not first.done() and not second.done()
        flag.set()
        await asyncio.wait_for(asyncio.gather(first, second), 1)
        assert flag.is_set() and cancelled.cancelled()
        await asyncio.wait_for(flag.wait(), 1)  # set already: returns at once

    asyncio.run(go())


def test_a_ticker_fires_its_members_and_lets_its_loop_go() -> None:
    fired: list[float] = []

    class Member:
        def __init__(self, ticks: list[float] = fired) -> None:
            self.ticks = ticks

        def tick(self, now: float) -> None:
            self.ticks.append(now)

    async def go() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        ticker = Ticker.every(0.04)  # a tick every 10 ms
        assert Ticker.every(0.04) is ticker and ticker.period == 0.01
        member = Member()
        ticker.add(member)
        await until(lambda: len(fired) >= 2, "two ticks")  # ticks while a member is in
        ticker.discard(member)
        count = len(fired)
        later: list[float] = []
        ticker.add(Member(later))
        await until(lambda: later, "a tick after the discard")
        assert count == len(fired)  # none after
        ticker.add(Member())  # left armed at the loop's end
        return loop

    loop = weakref.ref(asyncio.run(go()))
    gc.collect()
    assert loop() is None  # the loop's tickers do not keep it alive
