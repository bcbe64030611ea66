"""In-memory publish/subscribe of typed events.

Each subscriber has its own queue, a capacity and a declared policy for when it is full:

* ``"block"`` (the writer): never loses an event. `publish` never blocks the caller; instead the
  queue grows past its capacity, each event over it is counted as back-pressure, and producers
  that can afford to wait (the cycle, not the price path) `await bus.wait_for_capacity()`.
* ``"drop_oldest"`` (displays): the oldest queued event is dropped and counted.

Publishing is a plain function call: the price path does one dict lookup and a deque append per
subscriber, and is never held up by a slow subscriber that may drop.

A subscriber with a `handler` (the broker's trigger watch) has no task to wake: its queued events
are handed to the handler, in order, by `Bus.flush()` (in a queue the handler must not keep: it
is reused), which the loop runs once in the turn after the first of them was queued, unless
someone flushes sooner (the replay, after each record, so a record's events are handled at its
time). A subscriber task woken by a publish counts in `Bus.wakeups`, which tells the replay when
a loop turn is owed before it moves time on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Literal

import structlog

log = structlog.get_logger("bus")

Policy = Literal["block", "drop_oldest"]


class Subscription:
    """One subscriber's queue. Iterate it, or `get()` / `get_batch()` from it."""

    __slots__ = (
        "_bus",
        "_queue",
        "_spare",
        "_waiter",
        "backpressure",
        "capacity",
        "delivered",
        "dropped",
        "handler",
        "name",
        "pending",
        "policy",
        "types",
    )

    def __init__(self, bus: Bus, name: str, types: tuple[type, ...], capacity: int,
                 policy: Policy, handler: Callable[[deque[object]], None] | None = None) -> None:
        self._bus = bus
        self.handler = handler
        self.pending = False  # queued on the bus for its handler
        self.name = name
        self.types = types
        self.capacity = capacity
        self.policy: Policy = policy
        self._queue: deque[object] = deque()
        self._spare: deque[object] | None = deque()  # a handler's next queue (None: handed out)
        self._waiter: asyncio.Future[None] | None = None
        self.delivered = 0
        self.dropped = 0
        self.backpressure = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def over_capacity(self) -> bool:
        return len(self._queue) >= self.capacity

    def _over(self, queue: deque[object]) -> None:
        """A queue at its capacity takes one more event: drop the oldest, or count it."""
        if self.policy == "drop_oldest":
            queue.popleft()
            self.dropped += 1
        else:
            self.backpressure += 1

    def _put(self, event: object) -> None:
        """Queue `event` for a reading task, waking it."""
        queue = self._queue
        if len(queue) >= self.capacity:
            self._over(queue)
        queue.append(event)
        self.delivered += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            self._bus.wakeups += 1

    def _put_for_handler(self, event: object) -> None:
        """Queue `event` for the handler (the price path: every tick the broker watches)."""
        queue = self._queue
        if len(queue) >= self.capacity:
            self._over(queue)
        queue.append(event)
        self.delivered += 1
        if not self.pending:
            self.pending = True
            bus = self._bus
            bus._pending.append(self)
            if not bus._flush_scheduled:
                bus._schedule_flush()

    async def _wait(self) -> None:
        while not self._queue:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def get(self) -> object:
        """Wait for and return the next event."""
        await self._wait()
        event = self._queue.popleft()
        self._bus._notify_capacity()
        return event

    def get_nowait(self) -> object | None:
        """Return the next event, or None when the queue is empty."""
        if not self._queue:
            return None
        event = self._queue.popleft()
        self._bus._notify_capacity()
        return event

    async def get_batch(self, limit: int) -> list[object]:
        """Wait for at least one event, then return up to `limit` queued events in order."""
        await self._wait()
        return self.drain(limit)

    def drain(self, limit: int | None = None) -> list[object]:
        """Return up to `limit` (default: all) queued events without waiting."""
        queue = self._queue
        if limit is None or limit >= len(queue):
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(limit)]
        if batch:
            self._bus._notify_capacity()
        return batch

    def __aiter__(self) -> AsyncIterator[object]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[object]:
        while True:
            yield await self.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus._unsubscribe(self)


class Bus:
    """Routes each published event to the subscribers of its type."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        # event type -> the put method of each subscriber of it (bound once, called per event)
        self._routes: dict[type, tuple[Callable[[object], None], ...]] = {}
        self._capacity_waiters: list[asyncio.Future[None]] = []
        self._pending: deque[Subscription] = deque()  # handler subscriptions with events queued
        self._flush_scheduled = False
        self.wakeups = 0  # subscriber tasks woken by a publish, ever

    def subscribe(
        self,
        name: str,
        types: Iterable[type],
        *,
        capacity: int = 10_000,
        policy: Policy = "drop_oldest",
        handler: Callable[[deque[object]], None] | None = None,
    ) -> Subscription:
        """Subscribe `name` to events of the given types (exact types, not subclasses); with a
        `handler`, events go to it at the next `flush()` instead of waiting to be read."""
        sub = Subscription(self, name, tuple(types), capacity, policy, handler)
        self._subs.append(sub)
        self._routes.clear()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes.clear()
            self._notify_capacity()

    def _route(self, kind: type) -> tuple[Callable[[object], None], ...]:
        route = tuple(s._put_for_handler if s.handler is not None else s._put
                      for s in self._subs if kind in s.types)
        self._routes[kind] = route
        return route

    def publish(self, event: object) -> None:
        """Deliver `event` to every subscriber of its type. Never blocks, never raises for them."""
        route = self._routes.get(type(event))
        if route is None:
            route = self._route(type(event))
        for put in route:
            put(event)

    def publish_many(self, events: Iterable[object]) -> None:
        """Publish several events in order."""
        for event in events:
            self.publish(event)

    def flush(self) -> None:
        """Hand every event queued for a handler to it now, in order (what handlers publish
        meanwhile included)."""
        pending = self._pending
        while pending:
            sub = pending.popleft()
            sub.pending = False
            events = sub._queue
            if not events:
                continue
            # handed over whole (no copy), then reused: a handler must not keep it
            spare = sub._spare
            sub._queue, sub._spare = spare if spare is not None else deque(), None
            if self._capacity_waiters:
                self._notify_capacity()
            if sub.handler is not None:
                try:
                    sub.handler(events)
                except Exception:  # a failing handler must not stop the others
                    log.exception("bus.handler_failed", subscriber=sub.name)
            events.clear()
            sub._spare = events

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing to wait for
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    async def wait_for_capacity(self) -> None:
        """Wait until no lossless ("block") subscriber is over its capacity."""
        while any(s.policy == "block" and s.over_capacity for s in self._subs):
            fut = asyncio.get_running_loop().create_future()
            self._capacity_waiters.append(fut)
            await fut

    def _notify_capacity(self) -> None:
        if not self._capacity_waiters:
            return
        if any(s.policy == "block" and s.over_capacity for s in self._subs):
            return
        waiters, self._capacity_waiters = self._capacity_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
                self.wakeups += 1

    def stats(self) -> dict[str, dict[str, int]]:
        """Return per-subscriber queue length, deliveries, drops and back-pressure counts."""
        return {
            s.name: {
                "queued": len(s),
                "capacity": s.capacity,
                "delivered": s.delivered,
                "dropped": s.dropped,
                "backpressure": s.backpressure,
            }
            for s in self._subs
        }
