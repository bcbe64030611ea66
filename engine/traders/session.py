"""Whole-session LLM record and replay, and the answer cache in front of the APIs.

With a session, an LLM client's call is answered, in this order, by: the recording being replayed
(`--replay FILE`, records keyed by trader, provider, model, params and prompt hash), the answer
cache (`engine.traders.cache`, keyed by provider, model, params and prompt hash), or the real API
(only with a key, and in a replay only with `--live-llm`). With none of them the trader holds:
`not_recorded: ...`. Recorded and cached answers go through the same SDK parsing as live ones:
the client's replay SDK object talks to `ReplayTransport`, an httpx transport that serves the
stored status, headers and body (or raises the stored connection error or timeout).

Latency: `latency_ms` of a live answer is wall time (`time.perf_counter`, retries included); a
replayed or cached answer keeps the latency it was recorded with. On a simulated clock (replays,
backtests) every answer, live ones included, takes effect that latency after the request: the
trader waits on the clock inside `SimClock.released()`, so the replay moves the market on meanwhile
and the fill sees the prices it would have seen live. A live call cut by the deadline is
recorded as `cancelled`; replayed, it never answers and the deadline cuts it again.

Every live or served call is written to the session recording (`--record FILE`) as one line
`{"t": <answer time>, "llm": {trader, provider, model, params, prompt_hash, asked_at, latency_ms,
attempts, source, request, response, error, gave_up}}` (see `engine.market.recording`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

from engine.clock import SimClock
from engine.redact import redact
from engine.traders.providers import LLMAnswer, LLMError, cost_usd

if TYPE_CHECKING:
    from engine.clock import Clock
    from engine.settings import ModelPrice
    from engine.traders.cache import LLMCache
    from engine.traders.prompt import Prompt
    from engine.traders.providers import LLMClient

log = structlog.get_logger("llm")

NEVER_S = 10 * 365 * 86_400.0  # a recorded call the deadline cut: it never answers
SETTLE_ROUNDS = 20  # loop turns the rest of a cycle gets before simulated time is released


def call_params(temperature: float | None, max_tokens: int,
                output: str | None = None) -> dict[str, Any]:
    """Return the request parameters that key a recorded or cached answer.

    `output` is the structured-output mode when it is not the provider's default one (absent
    otherwise, so recordings made before modes were recorded keep their keys).
    """
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if output is not None:
        params["output"] = output
    return params


def _tape_key(trader: str, provider: str, model: str, params: dict[str, Any],
              prompt_hash: str) -> str:
    return json.dumps([trader, provider, model, params, prompt_hash], sort_keys=True)


class Tape:
    """The LLM records of a recording, by trader, provider, model, params and prompt hash."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._by_key: dict[str, deque[dict[str, Any]]] = {}
        for r in records:
            key = _tape_key(r["trader"], r["provider"], r["model"], r["params"],
                            r["prompt_hash"])
            self._by_key.setdefault(key, deque()).append(r)
        self.traders = frozenset(r["trader"] for r in records)
        self.records = len(records)

    def take(self, trader: str, provider: str, model: str, params: dict[str, Any],
             prompt_hash: str) -> dict[str, Any] | None:
        """Return the next record of this call (the last one again when all were served)."""
        queue = self._by_key.get(_tape_key(trader, provider, model, params, prompt_hash))
        if not queue:
            return None
        return queue.popleft() if len(queue) > 1 else queue[0]


class LLMSession:
    """Routes LLM calls to the recording, the cache or the API, and records every one."""

    def __init__(self, clock: Clock, *, tape: Tape | None = None, recorder: Any = None,
                 cache: LLMCache | None = None,
                 prices: dict[str, ModelPrice] | None = None,
                 keep_unrecorded: bool = False) -> None:
        self.clock = clock
        # a backtest keeps the traders its recording lacks: they answer from the cache or hold
        self.keep_unrecorded = keep_unrecorded
        self.tape = tape
        self.recorder = recorder  # a FrameRecorder: the session recording (--record)
        self.cache = cache
        self.prices = dict(prices or {})
        self.simulated = isinstance(clock, SimClock)
        self.counts = {"live": 0, "replay": 0, "cache": 0, "not_recorded": 0}
        self.spent_usd = 0.0
        self.saved_usd = 0.0
        self._busy_calls = 0  # calls not yet waiting for their latency (simulated clock)
        self._all_waiting = asyncio.Event()
        self._all_waiting.set()

    def recorded(self, trader: str) -> bool:
        """Return True when the replayed recording holds calls of `trader`."""
        return self.tape is not None and trader in self.tape.traders

    def serves(self, trader: str) -> bool:
        """Return True when this session answers `trader` without an API key: its recording
        holds the trader's calls, or the session keeps unrecorded traders (a backtest)."""
        return self.keep_unrecorded or self.recorded(trader)

    async def complete(self, client: LLMClient, prompt: Prompt, *, model: str,
                       temperature: float | None, max_tokens: int,
                       deadline_seconds: float) -> LLMAnswer:
        """Answer one call from the recording, the cache or the API (see the module doc)."""
        params = call_params(temperature, max_tokens, client.output_param)
        args = (prompt, model, temperature, max_tokens, deadline_seconds)
        token = self._enter()
        try:
            if self.tape is not None:
                record = self.tape.take(client.trader, client.provider, model, params,
                                        prompt.hash)
                if record is not None:
                    return await self._serve(client, record, "replay", args, token)
            if self.cache is not None:
                record = await self.cache.get(client.provider, model, params, prompt.hash)
                if record is not None:
                    return await self._serve(client, record, "cache", args, token)
            if not client.live:
                self.counts["not_recorded"] += 1
                log.warning("llm.not_recorded", trader=client.trader, model=model,
                            prompt_hash=prompt.hash, params=params)
                raise LLMError(f"not_recorded: no recorded answer for prompt {prompt.hash[:16]}"
                               f" ({client.provider} {model}, temperature={temperature}, "
                               f"max_tokens={max_tokens})", latency_ms=0.0)
            return await self._ask(client, params, args, token)
        finally:
            self._leave(token)

    async def _ask(self, client: LLMClient, params: dict[str, Any], args: tuple[Any, ...],
                   token: list[bool]) -> LLMAnswer:
        prompt, model, temperature, max_tokens, deadline = args
        asked_at = self.clock.time()
        started = time.perf_counter()
        client.begin_capture()
        answer: LLMAnswer | None = None
        failure: LLMError | None = None
        try:
            answer = await client.ask_live(prompt, model=model, temperature=temperature,
                                           max_tokens=max_tokens, deadline_seconds=deadline)
        except LLMError as exc:
            failure = exc
        except asyncio.CancelledError:  # the deadline cut the call: replays cut it too
            self._write(self._record(client, model, params, prompt.hash, asked_at, started,
                                     error={"kind": "cancelled", "message": "deadline"}),
                        self.clock.time())
            raise
        error = None
        if failure is not None and client.captured is None:
            cause = failure.__cause__
            kind = "timeout" if str(failure).startswith("timeout") else "connection"
            inner = getattr(cause, "__cause__", None) or cause
            error = {"kind": kind, "message": redact(str(inner) if inner else str(failure))}
        record = self._record(client, model, params, prompt.hash, asked_at, started, error=error)
        latency_ms = record["latency_ms"]
        self.counts["live"] += 1
        if answer is not None:
            cost = cost_usd(self.prices.get(model), answer.usage)
            self.spent_usd += cost
            status = (record.get("response") or {}).get("status")
            if self.cache is not None and status == 200:
                await self.cache.put(record, cost)
        self._write(record, self._arrival(asked_at, latency_ms))
        await self._wait(token, asked_at + latency_ms / 1000)
        if failure is not None:
            failure.latency_ms = latency_ms
            raise failure
        assert answer is not None
        return dataclasses.replace(answer, latency_ms=latency_ms, source="live")

    def _record(self, client: LLMClient, model: str, params: dict[str, Any], prompt_hash: str,
                asked_at: float, started: float, *, error: dict[str, Any] | None
                ) -> dict[str, Any]:
        exchange = client.captured or {}
        return {"trader": client.trader, "provider": client.provider, "model": model,
                "params": params, "prompt_hash": prompt_hash, "asked_at": asked_at,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "attempts": client.attempts, "source": "live",
                "request": exchange.get("request"), "response": exchange.get("response"),
                "error": error, "gave_up": client.gave_up}

    async def _serve(self, client: LLMClient, record: dict[str, Any], source: str,
                     args: tuple[Any, ...], token: list[bool]) -> LLMAnswer:
        prompt, model, temperature, max_tokens, deadline = args
        latency_ms = float(record["latency_ms"])
        asked_at = self.clock.time()
        if (record.get("error") or {}).get("kind") == "cancelled":
            await self._wait(token, asked_at + NEVER_S)  # the deadline cut it live, and here
        self.counts[source] += 1
        if self.recorder is not None:  # a replay recorded again keeps every answer
            self._write({**{k: v for k, v in record.items() if k not in ("t", "cache_key")},
                         "asked_at": asked_at, "source": source},
                        self._arrival(asked_at, latency_ms))
        # Parsed now, while the clock is held; used once its latency has passed.
        failure: LLMError | None = None
        answer: LLMAnswer | None = None
        try:
            answer = await client.serve(record, prompt, model=model, temperature=temperature,
                                        max_tokens=max_tokens, deadline_seconds=deadline)
        except LLMError as exc:
            failure = exc
        if source == "cache" and answer is not None:
            saved = cost_usd(self.prices.get(model), answer.usage)
            self.saved_usd += saved
            log.info("llm.cache_hit", trader=client.trader, model=model,
                     prompt_hash=prompt.hash, saved_usd=saved)
            assert self.cache is not None
            await self.cache.hit(record, client.trader, saved, asked_at)
        await self._wait(token, asked_at + latency_ms / 1000)
        if failure is not None:
            failure.latency_ms = latency_ms
            raise failure
        assert answer is not None
        return dataclasses.replace(answer, latency_ms=latency_ms, source=source)

    def _arrival(self, asked_at: float, latency_ms: float) -> float:
        """Return when an answer arrives: now live; asked_at + latency on a simulated clock."""
        return asked_at + latency_ms / 1000 if self.simulated else self.clock.time()

    def _enter(self) -> list[bool]:
        self._busy_calls += 1
        self._all_waiting.clear()
        return [True]

    def _leave(self, token: list[bool]) -> None:
        if token[0]:
            token[0] = False
            self._busy_calls -= 1
            if self._busy_calls == 0:
                self._all_waiting.set()

    async def _wait(self, token: list[bool], until: float) -> None:
        """On a simulated clock, wait until `until` with the clock released (the market moves).

        Time is released only once every call of the cycle is waiting and the rest of the
        cycle's ready work (rule-based traders) has run, so what happens at which simulated time
        never depends on the order the loop ran things in: replays repeat bit for bit.
        """
        self._leave(token)
        if not self.simulated:
            return
        clock = self.clock
        assert isinstance(clock, SimClock)
        await self._all_waiting.wait()
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
        if until <= clock.time():
            return
        async with clock.released():
            await clock.sleep_until(until)

    def _write(self, record: dict[str, Any], t: float) -> None:
        if self.recorder is not None:
            self.recorder.write_record("llm", record, t)

    def summary(self) -> dict[str, Any]:
        """Return the calls by source, what live calls cost and what the cache saved."""
        return {**self.counts, "spent_usd": round(self.spent_usd, 8),
                "saved_usd": round(self.saved_usd, 8)}

    async def aclose(self) -> None:
        """Log the summary and close the cache."""
        log.info("llm.session_summary", **self.summary())
        if self.cache is not None:
            await self.cache.aclose()
