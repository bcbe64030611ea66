"""The trading gate: open while the engine can record what it does, halted while it cannot.

The writer halts it when rows can be neither committed nor spilled durably, or when Postgres
refuses a row (engine.store.writer); it opens again by itself once either store accepts the
rows. While halted no cycle fires (engine.scheduler), no decision or trigger fill executes and
no funding is charged (engine.paper), and a replay or backtest consumes no frame, so simulated
time stands still (engine.market.replay). Prices, the page and the control API stay up.
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
        self.reason: str | None = None
        self.halts = 0  # how many times it halted since start
        self._open = asyncio.Event()
        self._open.set()
        self._listeners: list[Listener] = []

    @property
    def halted(self) -> bool:
        """Tell whether trading is halted."""
        return self.reason is not None

    def describe(self) -> str | None:
        """Return `halted: <reason>` while halted, else None (shown by /status and /health)."""
        return None if self.reason is None else f"halted: {self.reason}"

    def listen(self, listener: Listener) -> None:
        """Call `listener(halted, reason)` after each halt and each resume."""
        self._listeners.append(listener)

    def halt(self, reason: str) -> None:
        """Halt trading (again, with a new reason, if already halted)."""
        first = self.reason is None
        if self.reason == reason:
            return
        self.reason = reason
        self._open.clear()
        if first:
            self.halts += 1
            log.error("trading.halted", reason=reason)
        else:
            log.error("trading.still_halted", reason=reason)
        self._notify()

    def resume(self) -> None:
        """Let trading act again (nothing if it was not halted)."""
        if self.reason is None:
            return
        log.warning("trading.resumed", after=self.reason)
        self.reason = None
        self._open.set()
        self._notify()

    async def wait_open(self) -> None:
        """Return once trading is not halted."""
        while self.reason is not None:
            await self._open.wait()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self.reason is not None, self.reason)
