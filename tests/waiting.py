"""Waiting for a condition to hold, polled, with a deadline that only turns a hang into a
failure: nothing here waits a fixed time for something to happen, so a loaded machine makes
a test slower, never wrong."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

TIMEOUT_S = 30.0  # generous: only a hang takes this long
POLL_S = 0.02


What = str | Callable[[], str]  # what is waited for, said in the failure (as it is then)


def wait_until(
    condition: Callable[[], Any], what: What, timeout: float = TIMEOUT_S, poll: float = POLL_S
) -> Any:
    """Poll `condition` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(gave_up(what, timeout))
        time.sleep(poll)
    return value


async def until(
    condition: Callable[[], Any | Awaitable[Any]],
    what: What,
    timeout: float = TIMEOUT_S,
    poll: float = POLL_S,
) -> Any:
    """`wait_until` for a coroutine: `condition` may be sync or async."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(gave_up(what, timeout))
        await asyncio.sleep(poll)


def gave_up(what: What, timeout: float) -> str:
    return f"gave up after {timeout:g} s waiting for {what if isinstance(what, str) else what()}"
