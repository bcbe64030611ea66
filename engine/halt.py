"""The trading gate: open while the engine can record what it does, halted while it cannot.

The writer halts it when rows can be neither committed nor spilled durably, or when Postgres
refuses a row (engine.store.writer); it opens again by itself once either store accepts the
rows. While halted no cycle fires (engine.scheduler), no decision or trigger fill executes and
no funding is charged (engine.paper), and a replay or backtest consumes no frame, so simulated
time stands still (engine.market.replay). Prices, the page and the control API stay up.

A halt has a source. `storage` is this run's own writer; `recorded` is a halt a session replay
reads from its recording (a `halt` line), so trading stands still over the same interval it did
live while the recorded market goes on. Each source halts and resumes only itself; trading acts
when no source holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

log = structlog.get_logger("halt")

Listener = Callable[[bool, str | None], None]  # (halted, reason) after each change


class TradingGate:
    """Whether trading may act; `reason` says why not (e.g. `storage (row refused ...)`)."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}  # source -> why it holds trading
        self.halts = 0  # how many times it halted since start
        self._open = asyncio.Event()  # set while no source holds trading
        self._open.set()
        self._storage_clear = asyncio.Event()  # set while storage does not hold it
        self._storage_clear.set()
        self._listeners: list[Listener] = []

    @property
    def reason(self) -> str | None:
        """Return why trading is halted (every source's reason), or None while it is not."""
        return "; ".join(self._reasons.values()) if self._reasons else None

    @property
    def halted(self) -> bool:
        """Tell whether trading is halted."""
        return bool(self._reasons)

    @property
    def storage_halted(self) -> bool:
        """Tell whether this run's storage holds trading (a replay then consumes no frame)."""
        return "storage" in self._reasons

    def describe(self) -> str | None:
        """Return `halted: <reason>` while halted, else None (shown by /status and /health)."""
        return None if self.reason is None else f"halted: {self.reason}"

    def listen(self, listener: Listener) -> None:
        """Call `listener(halted, reason)` after each halt and each resume."""
        self._listeners.append(listener)

    def halt(self, reason: str, source: str = "storage") -> None:
        """Halt trading for `source` (again, with a new reason, if it already holds it)."""
        first = not self._reasons
        if self._reasons.get(source) == reason:
            return
        self._reasons[source] = reason
        self._sync()
        if first:
            self.halts += 1
            log.error("trading.halted", reason=reason)
        else:
            log.error("trading.still_halted", reason=reason)
        self._notify()

    def resume(self, source: str = "storage") -> None:
        """Release `source`'s hold (nothing if it held none); trading acts once no source holds."""
        after = self._reasons.pop(source, None)
        if after is None:
            return
        if self._reasons:
            log.warning("trading.still_halted", released=after, reason=self.reason)
        else:
            log.warning("trading.resumed", after=after)
        self._sync()
        self._notify()

    async def wait_storage(self) -> None:
        """Return once this run's storage no longer holds trading."""
        while "storage" in self._reasons:
            await self._storage_clear.wait()

    def _sync(self) -> None:
        for event, held in ((self._open, bool(self._reasons)),
                            (self._storage_clear, "storage" in self._reasons)):
            if held:
                event.clear()
            else:
                event.set()

    async def wait_open(self) -> None:
        """Return once trading is not halted."""
        while self.reason is not None:
            await self._open.wait()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self.reason is not None, self.reason)
