"""Supervision of the engine's long-running components: no task dies silently.

`Supervised` runs one component's `run()`. A crash is logged at error (`task.crashed`, with the
exception), counted and shown by `/health` and `/status`; the component is restarted after a
jittered back-off on the engine clock (`engine.retry.Backoff`). After `max_restarts` crashes in a
row (a run that lasted `healthy_after_s` resets the count) it gives up: `task.failed` at error,
and `on_fatal` stops the engine, which then exits with code 1; so does at once a crash of one
of its `fatal_errors` kinds (the writer's `StorageFatal`: the held rows are in the last-resort
file). Cancelled while the component is
down, it runs `final` (the writer's last flush) before re-raising.

`fatal()` wraps the components of the engine's TaskGroup that are not restarted: their crash is
logged (`task.crashed`, fatal) and recorded before it ends the group, and so the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from engine.clock import Clock
from engine.retry import Backoff

log = structlog.get_logger("app")


class Supervised:
    """One component restarted with back-off on a crash, until it crashes too often."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]], clock: Clock, *,
                 on_fatal: Callable[[str], None], max_restarts: int = 5,
                 healthy_after_s: float = 60.0, backoff: Backoff | None = None,
                 final: Callable[[], Awaitable[None]] | None = None,
                 fatal_errors: tuple[type[Exception], ...] = ()) -> None:
        self.name = name
        self._run = run
        self._clock = clock
        self._on_fatal = on_fatal
        self._final = final
        self._fatal_errors = fatal_errors  # a crash of these kinds is never restarted
        self.max_restarts = max_restarts
        self.healthy_after_s = healthy_after_s
        self._backoff = backoff or Backoff(1.0, 30.0)
        self.state = "starting"  # running | restarting | failed | stopped
        self.crashes = 0  # in total
        self.restarts = 0  # in a row, since the last healthy run
        self.last_error: str | None = None
        self.last_crash_at: float | None = None

    def status(self) -> dict[str, Any]:
        """Return the state, crash counts and the last error."""
        return {"state": self.state, "crashes": self.crashes, "restarts": self.restarts,
                "last_error": self.last_error, "last_crash_at": self.last_crash_at}

    @property
    def healthy(self) -> bool:
        return self.state in ("starting", "running", "stopped")

    async def run(self) -> None:
        """Run the component until cancelled, restarting it after each crash."""
        try:
            while True:
                started = self._clock.time()
                self.state = "running"
                try:
                    await self._run()
                    raise RuntimeError(f"{self.name} returned; it must run until cancelled")
                except asyncio.CancelledError:
                    raise
                except self._fatal_errors as exc:
                    self.crashes += 1
                    self._gave_up(exc, "cannot go on")
                    return
                except Exception as exc:  # isolation boundary: a crash restarts the component
                    if self._clock.time() - started >= self.healthy_after_s:
                        self.restarts = 0
                        self._backoff.reset()
                    if not await self._crashed(exc):
                        return
        except asyncio.CancelledError:
            if self.state != "running" and self._final is not None:
                await self._final()
            self.state = "stopped"
            raise

    async def _crashed(self, exc: Exception) -> bool:
        """Record a crash; wait the back-off and return True to restart, False to give up."""
        self.crashes += 1
        self.restarts += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_crash_at = self._clock.time()
        if self.restarts > self.max_restarts:
            self._gave_up(exc, f"crashed {self.restarts} times in a row")
            return False
        delay = self._backoff.next_delay()
        self.state = "restarting"
        log.error("task.crashed", task=self.name, error=self.last_error, restart=self.restarts,
                  max_restarts=self.max_restarts, retry_in_s=round(delay, 3), exc_info=exc)
        await self._clock.sleep(delay)
        return True


    def _gave_up(self, exc: Exception, why: str) -> None:
        self.state = "failed"
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("task.failed", task=self.name, crashes=self.crashes, error=self.last_error,
                  detail=f"{why}; stopping the engine")
        self._on_fatal(f"{self.name} {why}: {self.last_error}")


async def fatal(name: str, aw: Awaitable[None], crashes: dict[str, str]) -> None:
    """Await a component whose crash ends the engine; log and record the crash first."""
    try:
        await aw
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # recorded and re-raised: the crash ends the engine
        crashes[name] = f"{type(exc).__name__}: {exc}"
        log.error("task.crashed", task=name, error=crashes[name], fatal=True, exc_info=exc)
        raise


async def last_flush(writer: Any) -> None:
    """Give a writer that is not running its shutdown flush (its `run()` flushes when cancelled)."""
    task = asyncio.create_task(writer.run(), name="writer.last_flush")
    await asyncio.sleep(0)  # let it start, so the cancellation reaches its flush
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # at shutdown: the last flush's failure is logged, not lost
        log.error("writer.last_flush_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
