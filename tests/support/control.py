"""A hand-written ControlTarget for the control API and live page tests, plus sample data."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from engine.events import AccountSnapshot, DecisionMade, Leaderboard

TRADERS = ("claude", "deepseek", "gpt-4o", "momentum", "buy_and_hold")
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STEP = 300.0
PRICES = {"BTCUSDT": 97_000.0, "ETHUSDT": 3_350.0, "SOLUSDT": 185.0}
SYMBOLS = {"BTCUSDT": {"tick_size": 0.1, "step_size": 0.001},
           "ETHUSDT": {"tick_size": 0.01, "step_size": 0.001},
           "SOLUSDT": {"tick_size": 0.01, "step_size": 1.0},
           "XRPUSDT": {"tick_size": 0.0001, "step_size": 0.1},
           "DOGEUSDT": {"tick_size": 0.00001, "step_size": 1.0}}


class FakeTarget:
    """Records commands; `trigger` holds a lock like the engine's cycle lock."""

    def __init__(self, traders: tuple[str, ...] = TRADERS, points: int = 12, seed: int = 7) -> None:
        self.paused = False
        self.triggers = 0
        self.cycle_lock = asyncio.Lock()
        self.release = asyncio.Event()  # a triggered cycle waits on this when `hold` is set
        self.hold = False
        self.healthy = True
        self.history = equity_walk(traders, points, seed)
        self.decisions: dict[str, list[dict[str, Any]]] = {t: [] for t in traders}
        self.disabled: tuple[str, ...] = ()  # configured LLM traders without an API key
        self.baselines = {"momentum", "buy_and_hold"}
        self.arena: dict[str, Any] = {"mode": "live", "source": None}
        self.replay: dict[str, Any] | None = None  # a replay's progress, as /status carries it
        self.next_in = 120.0  # /next-run's seconds_until_next_run (engine clock)

    def status(self) -> dict[str, Any]:
        # The shape of ControlTarget.status(): feed details, price age per symbol, stale symbols.
        return {
            "state": "running",
            "paused": self.paused,
            "feed": {"connected": True, "reconnects": 0},
            "price_age_s": {"BTCUSDT": 0.4, "ETHUSDT": 1.2, "SOLUSDT": 14.5, "DOGEUSDT": None},
            "stale": ["SOLUSDT", "DOGEUSDT"],
            "jobs": [{"name": "trading_cycle", "running": self.cycle_lock.locked(),
                      "next_run": "2026-01-01T01:00:00Z"}],
            "writer": {"backlog": 3},
            "arena": self.arena,
            "replay": self.replay,
        }

    def jobs(self) -> list[dict[str, Any]]:
        return [{"name": "trading_cycle", "runs": 10, "errors": 1, "skips": 2,
                 "success_rate": 90.0, "last_duration": 2.5, "last_error": "timeout"}]

    def next_run(self) -> dict[str, Any]:
        return {"job": "trading_cycle", "next_run": START + 3600,
                "seconds_until_next_run": self.next_in}

    async def trigger(self) -> tuple[bool, str, dict[str, Any]]:
        if self.cycle_lock.locked():
            return False, "a trading cycle is already running (started by schedule)", {}
        async with self.cycle_lock:
            self.triggers += 1
            if self.hold:
                await self.release.wait()
            return True, "", {"status": "ok", "cycle_id": f"c{self.triggers}", "decisions": 5}

    def pause(self) -> bool:
        changed, self.paused = not self.paused, True
        return changed

    def resume(self) -> bool:
        changed, self.paused = self.paused, False
        return changed

    def leaderboard(self) -> dict[str, Any]:
        return {"cycle_id": "c0", "ts": self.last_ts(), "rows": leaderboard_rows(self.history)}

    def trader(self, name: str) -> dict[str, Any] | None:
        if name not in self.history:
            return None
        equity = self.history[name][-1][1]
        return {
            "name": name,
            "account": {"equity": equity, "cash": equity - 500.0, "return_pct": equity / 100 - 100},
            "positions": [sample_position(name)],
            "decisions": self.decisions[name],
        }

    def traders(self) -> list[dict[str, Any]]:
        def llm(name: str, status: str, detail: str | None) -> dict[str, Any]:
            return {"name": name, "status": status, "detail": detail, "strategy": "llm",
                    "provider": "anthropic", "model": f"{name}-model",
                    "starting_capital": 10_000.0}
        out = [llm(t, "active", None) if t not in self.baselines else
               {"name": t, "status": "active", "detail": None, "strategy": t, "provider": None,
                "model": None, "starting_capital": 10_000.0} for t in self.history]
        return out + [llm(t, "disabled", "missing key") for t in self.disabled]

    def symbols(self) -> dict[str, dict[str, float]]:
        return dict(SYMBOLS)

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.healthy, {"checks": {"feed": self.healthy, "writer": True}}

    def equity_history(self) -> dict[str, list[tuple[float, float]]]:
        return {k: list(v) for k, v in self.history.items()}

    def last_ts(self) -> float:
        return max(points[-1][0] for points in self.history.values())


def equity_walk(traders: tuple[str, ...], points: int,
                seed: int) -> dict[str, list[tuple[float, float]]]:
    """Return a deterministic random-walk equity curve per trader."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[float, float]]] = {}
    for i, name in enumerate(traders):
        drift = (i - len(traders) / 2) * 0.0004
        equity, series = 10_000.0, []
        for k in range(points):
            equity *= 1 + drift + rng.gauss(0, 0.004)
            series.append((START + k * STEP, round(equity, 2)))
        out[name] = series
    return out


def leaderboard_rows(history: dict[str, list[tuple[float, float]]]) -> tuple[dict[str, Any], ...]:
    """Return leaderboard rows shaped like engine.paper.leaderboard's, best return first."""
    ranked = sorted(history.items(), key=lambda kv: kv[1][-1][1], reverse=True)
    rows = []
    for i, (name, pts) in enumerate(ranked):
        equity = pts[-1][1]
        peak = max(eq for _, eq in pts)
        cost = 0.0 if name in ("momentum", "buy_and_hold") else round(0.35 + 0.21 * i, 4)
        rows.append({
            "trader": name, "equity": equity,
            "return_pct": round((equity / 10_000 - 1) * 100, 3),
            "net_return_pct": round(((equity - cost) / 10_000 - 1) * 100, 3),
            "realized_pnl": round((equity - 10_000) * 0.8, 2),
            "unrealized_pnl": 0.0 if i == 2 else round((equity - 10_000) * 0.2, 2),
            "fees": round(4.2 + i, 2), "funding": -0.35, "llm_cost": cost,
            "trades": 12 + 3 * i, "wins": 7 + i, "win_rate": round(100 * (7 + i) / (12 + 3 * i), 1),
            "drawdown_pct": round((peak - equity) / peak * 100, 2),
            "max_drawdown_pct": round(max(2.5, (peak - equity) / peak * 100), 2),
            "sharpe": round(1.4 - 0.55 * i, 2), "invalid_rate": 2.0 * (i % 2),
            "hold_rate": 40.0 + 5 * i, "latency_cost": 0.8, "liquidations": 0,
            "open_positions": 1, "status": "active",
        })
    return tuple(rows)


def sample_position(trader: str, symbol: str = "BTCUSDT", side: str = "long") -> dict[str, Any]:
    """Return an open position as the broker's positions view shows it."""
    price = PRICES.get(symbol, 100.0)
    sign = 1 if side == "long" else -1
    qty = round(5_000 / price, 3)
    return {"symbol": symbol, "side": side, "qty": qty, "entry_price": price,
            "mark": round(price * 1.004, 2), "leverage": 5, "margin": round(qty * price / 5, 2),
            "unrealized_pnl": round(qty * price * 0.004 * sign, 2), "roe_pct": round(2.0 * sign, 2),
            "stop_loss": price * (1 - 0.02 * sign), "take_profit": price * (1 + 0.04 * sign),
            "liquidation_price": price * (1 - 0.19 * sign),
            "open_reason": f"{trader}: breakout above resistance", "opened_at": START}


def snapshot(trader: str, equity: float, ts: float,
             positions: tuple[dict[str, Any], ...] = ()) -> AccountSnapshot:
    """Return an AccountSnapshot with the given equity (a point of the equity curve)."""
    return AccountSnapshot(
        trader=trader, cash=equity, margin=0.0, unrealized_pnl=0.0, equity=equity,
        realized_pnl=0.0, fees=0.0, funding=0.0, peak_equity=equity, drawdown_pct=0.0,
        return_pct=(equity / 10_000 - 1) * 100, positions=positions, state={}, cause="cycle",
        cycle_id="c1", ts=ts)


def decision(trader: str, reason: str, ts: float, action: str = "open_long",
             symbol: str = "ETHUSDT", model: str = "claude-sonnet-4-5") -> DecisionMade:
    """Return a valid DecisionMade with one action (none for a hold) and its reason."""
    price, sign = PRICES.get(symbol, 100.0), -1 if action == "open_short" else 1
    actions = [] if action == "hold" else [
        {"symbol": symbol, "action": action, "size_usdt": 1500.0, "leverage": 3,
         "stop_loss": round(price * (1 - 0.02 * sign), 2),
         "take_profit": round(price * (1 + 0.04 * sign), 2), "confidence": 0.7, "reason": reason}]
    return DecisionMade(
        cycle_id="c1", trader=trader, provider="anthropic", model=model,
        prompt_hash="abc", raw_answer="{...}", decision={"actions": actions, "reason": reason},
        valid=True, error=None, input_tokens=3000, output_tokens=200, cache_read_tokens=0,
        cache_write_tokens=0, cost_usd=0.012, latency_ms=2400.0, request_id="req_1", ts=ts)


def leaderboard(history: dict[str, list[tuple[float, float]]], ts: float) -> Leaderboard:
    """Return a Leaderboard event ranked from the equity history."""
    return Leaderboard(cycle_id="c1", rows=leaderboard_rows(history), ts=ts)
