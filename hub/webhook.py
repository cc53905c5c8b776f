"""Webhooks (docs/protocol.md section 10): occupied and vacated events POSTed to back ends.

Where events come from: the presence backend decides them with the transition that causes them
(:mod:`hub.occupancy` in one process, the same rules in the Redis scripts) and keeps them in an
:class:`Outbox` per receiver URL: :class:`MemoryOutbox` in one process (bounded, oldest dropped
and counted), a Redis Stream with a consumer group per receiver with several nodes.

How they leave: one :class:`Deliverer` per receiver and process.

    take a batch (at most 100 events, oldest first)  ->  POST it, signed
        2xx                        ->  ack: the batch is delivered
        anything else, or no answer within 5 s
                                   ->  wait (exponential backoff), POST the same batch again

An outbox hands out at most one batch of a receiver at a time, cluster-wide, and a batch is
the next events in production order: that keeps every workspace's events in ``seq`` order. With
Redis, the node holding a batch renews its claim while it works on it; a node that dies (or
stalls longer than the takeover bound) loses the batch to another node, which sends it again:
at least once, never silently lost. Receivers dedupe by event ``id``.

Retries wait ``d/2 + uniform(0, d/2)`` with ``d = min(retry_max, retry_min * 2**(n-1))`` after
the n-th failed attempt (default 0.5 s doubling to 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from hub.occupancy import Event

__all__ = [
    "BATCH", "Batch", "Deliverer", "MemoryOutbox", "Outbox", "OutboxStats", "Webhooks",
    "encode_event", "receiver_name", "sign",
]  # fmt: skip

log = logging.getLogger(__name__)

BATCH = 100  # events in one POST at most
TIMEOUT = 5.0  # seconds a receiver has to answer (docs/protocol.md section 10)
SIGNATURE = "X-Hub-Signature-256"
# Told of every delivery attempt: its result, and whether another attempt follows.
OnResult = Callable[[str, bool], None]


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value of a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode_event(event: Event, event_id: str, time_ms: int) -> bytes:
    """One event as the JSON object a delivery carries."""
    body: dict[str, Any] = {
        "id": event_id,
        "name": event.name,
        "workspace_id": event.workspace_id,
        "seq": event.seq,
        "time_ms": time_ms,
    }
    if event.session_id is not None:
        body["session_id"] = event.session_id
    return orjson.dumps(body)


def receiver_name(url: str) -> str:
    """A receiver URL fit for a metric label or a log: no credentials, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(slots=True)
class Batch:
    """Events taken for delivery: their JSON objects in order, and what the outbox needs to
    acknowledge them. ``id`` names the delivery (kept across retries)."""

    events: list[bytes]
    handle: Any = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """``depth``: events not yet delivered; ``oldest``: the age in seconds of the oldest of
    them (0 when none); ``dropped``: events this process dropped for the bound."""

    depth: int = 0
    oldest: float = 0.0
    dropped: int = 0


class Outbox(Protocol):
    """The events waiting for one receiver."""

    keep_every: float  # seconds between claim renewals while a batch is held (inf: never)

    async def take(self) -> Batch:
        """The next batch (waits until there is one)."""
        ...

    async def keep(self, batch: Batch) -> bool:
        """Whether the batch is still this process's to deliver (renewing its claim)."""
        ...

    async def ack(self, batch: Batch) -> None:
        """The batch was delivered."""
        ...

    def stats(self) -> OutboxStats: ...


class MemoryOutbox:
    """One process's queue for one receiver: at most ``limit`` events wait (besides the batch
    in flight); past it the oldest waiting event is dropped, counted and logged. An event is
    kept as its encoded bytes only (what that costs at the bound: docs/webhooks.md, "The
    bound")."""

    keep_every = float("inf")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._waiting: deque[bytes] = deque()
        self._inflight: list[bytes] = []
        self._ready = asyncio.Event()
        self._dropped = 0
        self._logged = -10.0

    def put(self, events: Iterable[bytes]) -> None:
        """Queue encoded events."""
        waiting = self._waiting
        dropped = 0
        for event in events:
            if len(waiting) >= self.limit:
                waiting.popleft()
                dropped += 1
            waiting.append(event)
        if dropped:
            self._dropped += dropped
            now = time.monotonic()
            if now - self._logged >= 10:  # a line every 10 s at most while it lasts
                self._logged = now
                log.error(
                    "webhook queue of %s is full (%d events): dropped the oldest (%d so far)",
                    self.name,
                    self.limit,
                    self._dropped,
                )
        self._ready.set()

    async def take(self) -> Batch:
        while not self._waiting:
            self._ready.clear()
            await self._ready.wait()
        n = min(BATCH, len(self._waiting))
        self._inflight = [self._waiting.popleft() for _ in range(n)]
        return Batch(self._inflight)

    async def keep(self, batch: Batch) -> bool:
        return True

    async def ack(self, batch: Batch) -> None:
        self._inflight = []

    def stats(self) -> OutboxStats:
        first = self._inflight[0] if self._inflight else self._waiting[0] if self._waiting else None
        age = 0.0
        if first is not None:
            age = max(0.0, time.time() - orjson.loads(first)["time_ms"] / 1000)
        return OutboxStats(len(self._waiting) + len(self._inflight), age, self._dropped)


class Deliverer:
    """Delivers one receiver's outbox, batch after batch, until closed."""

    def __init__(
        self,
        url: str,
        secret: str,
        outbox: Outbox,
        http: httpx.AsyncClient,
        *,
        retry_min: float,
        retry_max: float,
        on_result: OnResult | None = None,
    ) -> None:
        self.url = url
        self.name = receiver_name(url)
        self.outbox = outbox
        self._secret = secret
        self._http = http
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._on_result = on_result or (lambda result, retry: None)
        self._lost = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        """Stop at the next turn (a cancelled Redis call may swallow its cancellation)."""
        self._stopping = True

    async def run(self) -> None:
        """Deliver until stopped or cancelled; a failing outbox (Redis away) is waited out."""
        while not self._stopping:
            try:
                batch = await self.outbox.take()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the outbox is unreachable now: try again soon
                log.debug("webhook outbox of %s: %s", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            if batch.events:
                await self._deliver(batch)
            else:
                await asyncio.sleep(0.1)  # nothing to take this time (Redis polls)

    async def _deliver(self, batch: Batch) -> None:
        self._lost.clear()
        keeper = asyncio.ensure_future(self._keep(batch))
        try:
            attempt = 0
            while not self._lost.is_set() and not self._stopping:
                if not await self._still_mine(batch):
                    break
                result = await self._post(batch)
                if result == "delivered":
                    self._on_result(result, False)
                    await self._ack(batch)
                    return
                attempt += 1
                self._on_result(result, True)
                d = min(self._retry_max, self._retry_min * 2 ** (attempt - 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), d / 2 + random.uniform(0, d / 2))
            if self._lost.is_set():
                log.warning(
                    "webhook batch %s for %s was taken over by another node", batch.id, self.name
                )
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self, batch: Batch) -> None:
        """Renew the claim on the batch while it is held; mark it lost when it is not ours."""
        every = self.outbox.keep_every
        if every == float("inf"):
            return
        while True:
            await asyncio.sleep(every)
            if not await self._still_mine(batch):
                return

    async def _still_mine(self, batch: Batch) -> bool:
        try:
            if await self.outbox.keep(batch):
                return True
        except Exception as exc:  # cannot tell now: go on; a takeover is seen on the next try
            log.debug("webhook claim renewal for %s: %s", self.name, exc)
            return True
        self._lost.set()
        return False

    async def _ack(self, batch: Batch) -> None:
        """Acknowledge, trying again while the outbox is unreachable (until stopped)."""
        while not self._stopping:
            try:
                await self.outbox.ack(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook ack for %s failed (%s): trying again", self.name, exc)
                await asyncio.sleep(0.5)

    async def _post(self, batch: Batch) -> str:
        time_ms = int(time.time() * 1000)
        head = f'{{"id":"{batch.id}","time_ms":{time_ms},"events":['.encode()
        body = head + b",".join(batch.events) + b"]}"
        headers = {
            "Content-Type": "application/json",
            SIGNATURE: sign(body, self._secret),
            "X-Hub-Delivery": batch.id,
        }
        try:
            async with asyncio.timeout(TIMEOUT):  # the whole exchange, not each read
                response = await self._http.post(self.url, content=body, headers=headers)
        except (httpx.TimeoutException, TimeoutError):
            log.warning("webhook %s: no answer within %s s", self.name, TIMEOUT)
            return "timeout"
        except httpx.HTTPError as exc:
            log.warning("webhook %s: %s", self.name, exc or type(exc).__name__)
            return "error"
        if 200 <= response.status_code < 300:
            return "delivered"
        log.warning("webhook %s answered %d", self.name, response.status_code)
        return "refused"


class Webhooks:
    """Every receiver's deliverer in this process, and what they share (one HTTP client)."""

    def __init__(
        self,
        outboxes: dict[str, Outbox],
        secret: str,
        *,
        retry_min: float,
        retry_max: float,
        on_result: OnResult | None = None,
    ) -> None:
        self.outboxes = outboxes
        self._secret = secret
        self._retry = (retry_min, retry_max)
        self._on_result = on_result
        self._http: httpx.AsyncClient | None = None
        self._deliverers: list[Deliverer] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        for url, outbox in self.outboxes.items():
            deliverer = Deliverer(
                url,
                self._secret,
                outbox,
                self._http,
                retry_min=self._retry[0],
                retry_max=self._retry[1],
                on_result=self._on_result,
            )
            self._deliverers.append(deliverer)
            self._tasks.append(asyncio.ensure_future(deliverer.run()))

    async def close(self) -> None:
        for deliverer, task in zip(self._deliverers, self._tasks, strict=True):
            deliverer.stop()
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=3)
            for task in stuck:
                log.warning("webhook deliverer %s did not stop", task.get_name())
        self._deliverers.clear()
        self._tasks.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def stats(self) -> dict[str, OutboxStats]:
        """Each receiver's queue, by :func:`receiver_name`."""
        return {receiver_name(url): outbox.stats() for url, outbox in self.outboxes.items()}
