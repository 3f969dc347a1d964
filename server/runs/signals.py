"""How every reader of live events waits for news: cheaply, since a stream waits once per
batch it sends. A run's followers (runlog.py), the session channel's watchers (channel.py) and
the SSE writer's ping and send deadlines (api/sse.py) all wait through these."""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol


class Ticker:
    """One timer for many deadlines of the same length (a stream's ping interval, its send
    timeout): every `period` it calls `tick(now)` on its members, since a timer handle per
    deadline would cost every stream two uvloop handles for the whole of its life, where here
    it is a set entry (bench idle, bench many: RSS per stream). A deadline is met at most
    `period` late, a quarter of its length at most."""

    __slots__ = ("_armed", "_members", "period")

    def __init__(self, period: float) -> None:  # keeps no reference to its loop: see `_tickers`
        self.period = period
        self._members: set[Ticking] = set()
        self._armed = False  # a flag, not the timer handle: that one refers to the loop

    @classmethod
    def every(cls, seconds: float) -> Ticker:
        """The running loop's ticker for deadlines `seconds` long."""
        loop = asyncio.get_running_loop()
        period = min(MAX_TICK_S, seconds / 4)
        mine = _tickers.get(loop)
        if mine is None:
            _tickers[loop] = mine = {}
        ticker = mine.get(period)
        if ticker is None:
            mine[period] = ticker = cls(period)
        return ticker

    def add(self, member: Ticking) -> None:
        self._members.add(member)
        if not self._armed:
            asyncio.get_running_loop().call_later(self.period, self._tick)
            self._armed = True

    def discard(self, member: Ticking) -> None:
        self._members.discard(member)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for member in list(self._members):
            member.tick(now)
        self._armed = bool(self._members)
        if self._armed:
            loop.call_later(self.period, self._tick)


class Ticking(Protocol):
    def tick(self, now: float) -> None: ...


MAX_TICK_S = 1.0
# a loop's tickers go with the loop (a value that referred to its key would keep it alive)
_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Ticker]] = (
    weakref.WeakKeyDictionary()
)


class Quiet:
    """How long a follower may wait for news: a deadline each wait moves on, watched by the
    loop's ticker for waits of this length, since a timer per wait costs a heap insert and a
    cancel for every batch sent, and a timer handle per follower (bench many)."""

    __slots__ = ("_future", "_ticker", "deadline", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = 0.0
        self._future: asyncio.Future[bool] | None = None
        self._ticker: Ticker | None = None

    def start(self) -> asyncio.Future[bool]:
        """A wait from now: its future turns False if nothing wakes it within `seconds`."""
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + self.seconds
        self._future = loop.create_future()
        if self._ticker is None:
            self._ticker = Ticker.every(self.seconds)
            self._ticker.add(self)
        return self._future

    def tick(self, now: float) -> None:
        future = self._future
        if future is not None and not future.done() and now >= self.deadline:
            future.set_result(False)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.discard(self)
            self._ticker = None


class Flag:
    """Set once, awaited by any number of tasks: an `asyncio.Event` without the Event's deque
    of waiters, since one is made for every run although few are ever waited on (bench many)."""

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self) -> None:
        if self._set:
            return
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._future)  # a waiter cancelled leaves the others waiting


class Signal:
    """Wakes every task waiting on it, each with its own `Quiet` limit: a bare future per
    wait, since `asyncio.wait_for(event.wait())` costs an Event and a Task (bench many)."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[bool]] = []

    def fire(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():  # a cancelled wait stays listed until the next fire
                    waiter.set_result(True)

    def next(self, quiet: Quiet) -> asyncio.Future[bool]:
        """True at the next fire; False once the quiet time has passed (`discard` it then)."""
        waiter = quiet.start()
        self._waiters.append(waiter)
        return waiter

    def discard(self, waiter: asyncio.Future[bool]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def waiting(self) -> bool:
        return bool(self._waiters)
