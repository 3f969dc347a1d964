"""The scripted provider alone: one delta per word, paced or in bursts, errors on cue."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from server.errors import ProviderError
from server.events import StepEvent, TextDelta
from server.providers.base import ProviderRequest
from server.providers.scripted import BURST, ScriptedProvider, words

REQUEST = ProviderRequest(None, None, [], [], None, None, {}, 0)


async def play(options: dict[str, object]) -> list[StepEvent]:
    return [event async for event in ScriptedProvider(options).stream(REQUEST)]


def test_words_keep_their_whitespace_and_split_long_texts_alike() -> None:
    assert list(words("a  b\nc ")) == ["a  ", "b\n", "c "]
    assert list(words("  lead")) == ["  ", "lead"]
    long = " ".join(f"w{i}" for i in range(3000))
    assert "".join(words(long)) == long and len(list(words(long))) == 3000


def test_without_a_delay_deltas_come_in_bursts_between_loop_turns() -> None:
    async def go() -> tuple[list[StepEvent], int]:
        turns = 0

        async def count() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count())
        got = await play({"script": [{"text": " ".join(["w"] * (3 * BURST))}]})
        counter.cancel()
        return got, turns

    got, turns = asyncio.run(go())
    assert [type(e).__name__ for e in got[:2]] == ["MessageStart", "ContentBlockStart"]
    assert sum(isinstance(e, TextDelta) for e in got) == 3 * BURST
    assert 2 <= turns <= 5  # a turn per burst, not per delta


class TestClock:
    """A clock that the test moves: the pacer's timers fire only when `advance` passes them,
    so paced spacing is checked on the clock's readings, not on how busy the machine is."""

    __test__ = False  # not a test class, for pytest

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.timers: list[tuple[float, Callable[..., object], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> None:
        self.timers.append((when, callback, args))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted((t for t in self.timers if t[0] <= self.now), key=lambda t: t[0])
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, callback, args in due:
            callback(*args)


async def until(condition: Callable[[], bool]) -> None:
    """Turns of the loop until `condition` holds (many turns at most: a hang fails)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def paced_arrivals(
    clock: TestClock, options: dict[str, object]
) -> list[tuple[float, StepEvent]]:
    """Plays the stream, moving the clock to each timer as the pacer sets it: each event
    with the clock's reading when it arrived."""
    got: list[tuple[float, StepEvent]] = []

    async def read() -> None:
        async for event in ScriptedProvider(options, clock=clock).stream(REQUEST):
            got.append((clock.time(), event))

    reader = asyncio.create_task(read())
    while not reader.done():
        await until(lambda: reader.done() or bool(clock.timers))
        if clock.timers:
            clock.advance(min(t[0] for t in clock.timers) - clock.now)
    await reader
    return got


def test_a_delay_paces_every_delta_and_an_error_comes_on_cue() -> None:
    clock = TestClock()
    got = asyncio.run(
        paced_arrivals(clock, {"script": [{"text": "a b c d"}], "token_delay_ms": 20})
    )
    assert clock.now - 1000.0 >= 0.080  # four deltas 20 ms apart, by the clock
    assert "".join(e.text for _, e in got if isinstance(e, TextDelta)) == "a b c d"
    failing = {"script": [{"text": "a b c", "error": {"message": "boom", "after_tokens": 2}}]}
    with pytest.raises(ProviderError, match="boom"):
        asyncio.run(play({**failing, "token_delay_ms": 0}))
    with pytest.raises(ProviderError, match="boom"):
        asyncio.run(paced_arrivals(TestClock(), {**failing, "token_delay_ms": 5}))


def test_paced_deltas_are_due_on_a_schedule_from_the_first() -> None:
    async def go() -> None:
        clock = TestClock()
        arrivals = await paced_arrivals(
            clock, {"script": [{"text": "a b c d e f"}], "token_delay_ms": 10}
        )
        deltas = [at - 1000.0 for at, e in arrivals if isinstance(e, TextDelta)]
        assert len(deltas) == 6
        for i, at in enumerate(deltas, 1):  # due 10 ms apart, each within its millisecond
            assert i * 0.010 - 1e-6 <= at <= i * 0.010 + 0.001 + 1e-6, deltas

        # a reader that falls behind finds the deltas that fell due meanwhile all waiting
        late = TestClock()
        stream = ScriptedProvider(
            {"script": [{"text": "a b c d"}], "token_delay_ms": 10}, clock=late
        ).stream(REQUEST)
        ahead = [await stream.__anext__() for _ in range(2)]  # message and block start
        assert not any(isinstance(e, TextDelta) for e in ahead)
        pending = [asyncio.ensure_future(stream.__anext__()) for _ in range(4)]
        await until(lambda: bool(late.timers))
        assert not any(f.done() for f in pending)  # nothing before its time
        late.advance(0.0305)
        await until(lambda: sum(f.done() for f in pending) == 3)
        late.advance(0.010)
        await until(lambda: all(f.done() for f in pending))
        texts = [f.result() for f in pending]
        assert "".join(e.text for e in texts if isinstance(e, TextDelta)) == "a b c d"

    asyncio.run(go())


def test_paced_deltas_leave_no_loop_behind() -> None:
    async def go() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        # a run cancelled mid-stream leaves its next delta with the loop's pacer: still released
        cut = ScriptedProvider({"script": [{"text": "x y"}], "token_delay_ms": 50}).stream(REQUEST)
        task = asyncio.ensure_future(cut.__anext__())
        await asyncio.sleep(0)
        task.cancel()
        return loop

    loop = asyncio.run(go())
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None
