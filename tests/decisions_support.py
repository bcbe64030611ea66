"""Helpers for the decision tests: recorded LLM fixtures served by aioresponses, contexts.

A fixture file (tests/data/llm/<provider>/<name>.json) is one HTTP exchange in the format
`engine.llm.FixtureRecorder` writes with `--record-llm DIR`: the request (method, url, headers
without secrets, body) and the response (status, headers, body) exactly as the API sent them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aioresponses import CallbackResult, aioresponses

from engine.settings import LLMSettings, ProviderSettings, RiskSettings, TraderSettings
from engine.snapshot import MarketSnapshot, SymbolSnapshot
from strategies.base import TraderContext

DATA = Path(__file__).parent / "data" / "llm"
# Headers describing the original transfer, not the body we replay.
_TRANSFER_HEADERS = {"content-length", "transfer-encoding", "content-encoding", "connection"}
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
NOW = 1_767_225_600.0


def load_fixture(name: str) -> dict[str, Any]:
    """Load tests/data/llm/<name>.json (name like "anthropic/tool_call")."""
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def response_headers(fixture: Mapping[str, Any],
                     override: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the fixture's response headers for replay, with `override` applied."""
    headers = {k: v for k, v in fixture["response"]["headers"].items()
               if k.lower() not in _TRANSFER_HEADERS}
    for k, v in (override or {}).items():
        headers = {h: x for h, x in headers.items() if h.lower() != k.lower()}
        headers[k] = v
    return headers


def register_fixture(mocked: aioresponses, fixture: Mapping[str, Any] | str, *,
                     headers: Mapping[str, str] | None = None,
                     delay: Callable[[], Awaitable[None]] | None = None,
                     repeat: bool = False) -> None:
    """Serve `fixture`'s response once (or repeatedly) at its URL; `delay` is awaited first."""
    fx = load_fixture(fixture) if isinstance(fixture, str) else fixture
    body = fx["response"]["body"]
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    status = fx["response"]["status"]
    hdrs = response_headers(fx, headers)
    callback = None
    if delay is not None:
        async def callback(url: Any, **kwargs: Any) -> CallbackResult:
            await delay()
            return CallbackResult(status=status, body=text, headers=hdrs)
    mocked.add(fx["request"]["url"], fx["request"]["method"], status=status, body=text,
               headers=hdrs, callback=callback, repeat=repeat)


def sent_requests(mocked: aioresponses) -> list[dict[str, Any]]:
    """Return every request aioresponses saw, as {url, headers, json} in order."""
    out = []
    for (_, url), calls in mocked.requests.items():
        for call in calls:
            kwargs = call.kwargs
            data = kwargs.get("data")
            body = json.loads(data) if isinstance(data, bytes | str) and data else None
            out.append({"url": str(url), "headers": dict(kwargs.get("headers") or {}),
                        "json": body})
    return out


def indicators(close: float, ema20: float, ema50: float, atr14: float) -> dict[str, Any]:
    """Return one timeframe's indicator values."""
    return {"close": close, "ema20": ema20, "ema50": ema50, "sma20": ema20, "rsi14": 55.0,
            "macd": ema20 - ema50, "macd_signal": 0.0, "macd_hist": ema20 - ema50,
            "atr14": atr14, "bb_upper": close * 1.02, "bb_mid": close, "bb_lower": close * 0.98}


def snapshot(prices: Mapping[str, float] | None = None, *, stale: tuple[str, ...] = (),
             ema: Mapping[str, tuple[float, float]] | None = None,
             ts: float = NOW) -> MarketSnapshot:
    """Return a real MarketSnapshot of `prices` (default three symbols), indicators on 15m/4h."""
    prices = prices or {"BTCUSDT": 97000.5, "ETHUSDT": 3450.25, "SOLUSDT": 187.123}
    out = {}
    for sym, p in prices.items():
        fast, slow = (ema or {}).get(sym, (p * 1.001, p * 0.999))
        ind = indicators(p, fast, slow, p * 0.01)
        out[sym] = SymbolSnapshot(
            symbol=sym, price=p, bid=p - 0.1, ask=p + 0.1, last=p, mark=p, index=p,
            funding_rate=0.0001, next_funding_time=ts + 3600, change_pct=1.25,
            high_24h=p * 1.03, low_24h=p * 0.97, volume_24h=1000.0, quote_volume_24h=1e8,
            updated=ts - 1, exchange_time=ts - 1.05, age=9.0 if sym in stale else 1.0,
            stale=sym in stale, indicators=MappingProxyType({"15m": ind, "4h": ind}),
            recent_closes=MappingProxyType({"15m": (p * 0.99, p), "4h": (p * 0.98, p)}))
    return MarketSnapshot(ts=ts, symbols=MappingProxyType(out), stale=stale)


def context(trader: str = "claude", *, snap: Any = None, positions: tuple[Mapping, ...] = (),
            equity: float = 10_000.0, cycle_id: str = "c-1",
            previous: tuple[Mapping, ...] = ()) -> TraderContext:
    """Return a trader context on `snap` with a fresh 10k account."""
    snap = snap if snap is not None else snapshot()
    account = {"cash": equity, "equity": equity, "margin_used": 0.0, "return_pct": 0.0,
               "unrealized_pnl": 0.0}
    return TraderContext(trader=trader, cycle_id=cycle_id, now=snap.ts, snapshot=snap,
                         account=account, positions=positions, recent_fills=(),
                         previous_decisions=previous, risk=RiskSettings(), extra={})


def llm_settings(max_retries: int = 2, **kw: Any) -> LLMSettings:
    """Return LLM settings with the real base URLs, `max_retries` and prices for the models."""
    providers = {p: ProviderSettings(base_url=u, max_retries=max_retries) for p, u in (
        ("anthropic", "https://api.anthropic.com"), ("openai", "https://api.openai.com/v1"),
        ("deepseek", "https://api.deepseek.com"))}
    prices = {"claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_read": 0.3,
                                    "cache_write": 3.75},
              "gpt-4o": {"input": 2.5, "output": 10.0, "cache_read": 1.25},
              "deepseek-chat": {"input": 0.27, "output": 1.10, "cache_read": 0.07}}
    return LLMSettings.model_validate({"providers": providers, "prices": prices, **kw})


def trader(name: str, provider: str, model: str, **kw: Any) -> TraderSettings:
    """Return an LLM trader's settings."""
    return TraderSettings(name=name, strategy="llm", provider=provider, model=model, **kw)
