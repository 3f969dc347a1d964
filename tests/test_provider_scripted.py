"""The scripted provider alone: one delta per word, paced or in bursts, errors on cue."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

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


def test_a_delay_paces_every_delta_and_an_error_comes_on_cue() -> None:
    started = time.monotonic()
    got = asyncio.run(play({"script": [{"text": "a b c d"}], "token_delay_ms": 20}))
    assert time.monotonic() - started >= 0.075
    assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "a b c d"
    failing = {"script": [{"text": "a b c", "error": {"message": "boom", "after_tokens": 2}}]}
    for delay in (0, 5):
        with pytest.raises(ProviderError, match="boom"):
            asyncio.run(play({**failing, "token_delay_ms": delay}))


def test_paced_deltas_are_spaced_and_leave_no_loop_behind() -> None:
    async def go() -> tuple[list[float], asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        stream = ScriptedProvider({"script": [{"text": "a b c d e f"}], "token_delay_ms": 10})
        arrivals = [loop.time() async for e in stream.stream(REQUEST) if isinstance(e, TextDelta)]
        # a run cancelled mid-stream leaves its next delta with the pacer: still released
        cut = ScriptedProvider({"script": [{"text": "x y"}], "token_delay_ms": 50}).stream(REQUEST)
        task = asyncio.ensure_future(cut.__anext__())
        await asyncio.sleep(0)
        task.cancel()
        return arrivals, loop

    arrivals, loop = asyncio.run(go())
    assert len(arrivals) == 6
    assert arrivals[-1] - arrivals[0] >= 5 * 0.010 - 0.002  # due 10 ms apart (to the ms)
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None
