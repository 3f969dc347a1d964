"""The threads that the file tools do their disk work in.

They have a pool of their own, not the event loop's default one: that one also serves the
rest of the server (name lookups for provider connections, bundles), which a burst of
large searches must not hold up. Nothing done in here waits on anything but the disk:
files are opened without blocking and only regular files are read or written (files.py),
so a FIFO or a device in a work_dir cannot keep one of these threads forever.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

MAX_THREADS = 8
_POOL = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="sessiond-tool")


async def run(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a tool thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, functools.partial(fn, *args))
