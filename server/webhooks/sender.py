"""The sender: posts what the outbox holds, oldest due first, until each is delivered (a 2xx
answer) or given up. A failed attempt is tried again after a delay that doubles from
`retry_base_s` (at most `RETRY_CAP_S`), each drawn at random from its upper half, so that
the retries of many endpoints hit by one outage spread out; a delivery still failing
`retry_max_s` after the run's end is given up. Every attempt is recorded before the next is
made; an attempt cut off by a shutdown is not, and is made again at the next start, with
the same `webhook-id`: delivery is at least once, and a receiver tells repeats by that id.

The sender wakes when a run end wrote to the outbox (`wake`, called at every run's end, looks
at the store's count of rows written first), when an attempt is due, and every `poll_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import httpx
import msgspec

from server.errors import InvalidRequest
from server.ids import now
from server.meter import Meter
from server.models import Outgoing, WebhookAttempt
from server.sealing import unseal
from server.store import WebhookStore
from server.webhooks import signing, urls

log = logging.getLogger("sessiond.webhooks")
RETRY_CAP_S = 3600.0
BATCH = 64


class SenderSettings(msgspec.Struct, frozen=True):
    retry_max_s: float = 86400.0
    retry_base_s: float = 5.0
    poll_s: float = 5.0
    timeout_s: float = 10.0
    allow_private: bool = False
    concurrency: int = 8


def retry_delay(attempts: int, settings: SenderSettings, jitter: float) -> float:
    """Seconds before the next try after `attempts` failed ones; `jitter` from 0.5 to 1."""
    return float(min(RETRY_CAP_S, settings.retry_base_s * 2.0 ** min(attempts - 1, 40)) * jitter)


class Sender:
    def __init__(
        self,
        store: WebhookStore,
        sealing_key: bytes,
        settings: SenderSettings,
        meter: Meter | None = None,
    ) -> None:
        self.store = store
        self.sealing_key = sealing_key
        self.settings = settings
        self.meter = meter or Meter()
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s), follow_redirects=False
        )
        self._wake = asyncio.Event()
        self._seen = -1  # the store's count of outbox rows written, as of the last round
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._gate = asyncio.Semaphore(settings.concurrency)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sessiond-webhooks")

    async def _reschedule(self) -> None:
        """What is pending is due by this server's retry settings (they may have changed
        since the attempts were made)."""
        await self.store.reschedule(self.settings.retry_base_s, RETRY_CAP_S)

    def wake(self) -> None:
        """A run's end is stored: look at the outbox if it may have written to it."""
        if self.store.written() != self._seen:
            self._wake.set()

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()

    async def _loop(self) -> None:
        try:
            await self._reschedule()
        except Exception:
            log.exception("could not reschedule the pending webhook deliveries")
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the webhook sender failed a round; it goes on")
            wait = self.settings.poll_s
            due = None
            try:
                due = await self.store.next_due()
            except Exception:
                log.exception("could not read the webhook outbox")
            if due is not None and due > time.time():
                wait = min(wait, due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))
            self._wake.clear()

    async def _round(self) -> None:
        self._seen = self.store.written()
        for item in await self.store.due(time.time(), BATCH):
            if item.id in self._inflight:
                continue
            task = asyncio.create_task(self._deliver(item))
            self._inflight[item.id] = task
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        for key, held in list(self._inflight.items()):
            if held is task:
                del self._inflight[key]
        self._wake.set()  # what it leaves due (a retry) is seen at once

    async def _deliver(self, item: Outgoing) -> None:
        async with self._gate:
            number = item.attempts + 1
            code, error = await self._attempt(item)
        ok = code is not None and 200 <= code < 300
        next_unix: float | None = None
        jitter = random.uniform(0.5, 1.0)
        if ok:
            status = "delivered"
        else:
            delay = retry_delay(number, self.settings, jitter)
            if time.time() + delay - item.created_unix > self.settings.retry_max_s:
                status = "failed"
            else:
                status, next_unix = "pending", time.time() + delay
        self.meter.webhook_attempt("delivered" if ok else "retry" if next_unix else "failed")
        attempt = WebhookAttempt(number, now(), code, error)
        await self.store.attempted(item.id, attempt, status, next_unix, jitter)
        if status == "failed":
            log.warning(
                "webhook given up",
                extra={"fields": {"delivery_id": item.id, "attempts": number, "error": error}},
            )

    async def _attempt(self, item: Outgoing) -> tuple[int | None, str | None]:
        """(the receiver's status code, why it failed): one POST."""
        raw = unseal(item.secret, self.sealing_key)
        if raw is None:
            return None, "the endpoint's secret was sealed with another sealing key"
        try:
            refused = await urls.problem(item.url, self.settings.allow_private)
        except InvalidRequest as exc:
            return None, exc.message
        if refused is not None:
            return None, refused
        stamp = int(time.time())
        headers = signing.headers(raw, item.id, stamp, item.payload)
        try:
            response = await self.http.post(item.url, content=item.payload, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"the receiver answered HTTP {response.status_code}"
