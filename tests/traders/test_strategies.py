"""Building the traders from settings, and the rule-based baselines."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engine.decision import Decision
from engine.settings import Secrets, Settings, SettingsError, TraderSettings
from engine.traders.fixtures import context, snapshot
from strategies import base
from strategies.base import DecisionOutcome, register, rule_outcome
from strategies.buy_and_hold import BuyAndHold
from strategies.ema_cross import EmaCross, crossing
from strategies.llm import LLMStrategy
from strategies.registry import build_strategies

TRADERS = [
    {"name": "claude", "strategy": "llm", "provider": "anthropic", "model": "claude-sonnet-4-6"},
    {"name": "gpt", "strategy": "llm", "provider": "openai", "model": "gpt-4o"},
    {"name": "ds", "strategy": "llm", "provider": "deepseek", "model": "deepseek-chat",
     "timeout_seconds": 20},
    {"name": "bh", "strategy": "buy_and_hold"},
    {"name": "ema", "strategy": "ema_cross", "params": {"fast": 20, "slow": 50}},
    {"name": "off", "strategy": "ema_cross", "enabled": False},
]


def settings(traders=TRADERS) -> Settings:
    return Settings.model_validate({"traders": traders})


def secrets(**keys: str) -> Secrets:
    return Secrets.from_env({k.upper(): v for k, v in keys.items()})


async def close_all(strategies) -> None:
    for s in strategies.values():
        if hasattr(s, "aclose"):
            await s.aclose()


async def test_every_enabled_trader_gets_a_strategy(clock):
    built = build_strategies(settings(), secrets(anthropic_api_key="a", openai_api_key="o",
                                                 deepseek_api_key="d"), clock)
    await close_all(built)

    assert list(built) == ["claude", "gpt", "ds", "bh", "ema"]
    assert all(isinstance(built[n], LLMStrategy) for n in ("claude", "gpt", "ds"))
    assert isinstance(built["bh"], BuyAndHold) and isinstance(built["ema"], EmaCross)
    assert built["ds"].timeout_seconds == 20 and built["claude"].timeout_seconds == 60


async def test_a_trader_without_its_api_key_is_left_out_with_one_warning(clock):
    with capture_logs() as logs:
        built = build_strategies(settings(), secrets(openai_api_key="o"), clock)
    await close_all(built)

    assert list(built) == ["gpt", "bh", "ema"]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["trader"], e["reason"], e["env"]) for e in warnings] == [
        ("trader.disabled", "claude", "missing_api_key", "ANTHROPIC_API_KEY"),
        ("trader.disabled", "ds", "missing_api_key", "DEEPSEEK_API_KEY"),
    ]


async def test_baselines_need_no_keys(clock):
    built = build_strategies(settings(), secrets(), clock)
    assert list(built) == ["bh", "ema"]


def test_an_unknown_strategy_name_stops_start_up(clock):
    with pytest.raises(SettingsError, match="trader 'x': unknown strategy 'martingale'; "
                                            "expected one of llm, buy_and_hold, ema_cross"):
        build_strategies(settings([{"name": "x", "strategy": "martingale"}]), secrets(), clock)


async def test_a_new_rule_based_strategy_plugs_in_by_registering(clock, monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    class AlwaysHold:
        def __init__(self, name: str) -> None:
            self.name = name

        async def decide(self, ctx) -> DecisionOutcome:
            return rule_outcome(Decision.hold(), "always_hold")

    @register("always_hold")
    def build(trader: TraderSettings, _: Settings) -> AlwaysHold:
        return AlwaysHold(trader.name)

    built = build_strategies(settings([{"name": "h", "strategy": "always_hold"}]), secrets(),
                             clock)
    out = await built["h"].decide(context("h"))
    assert out.valid and out.decision.actions == () and out.provider == "rule"


# ---------------------------------------------------------------- buy and hold


def test_buy_and_hold_buys_each_weighted_symbol_once():
    bh = BuyAndHold("bh", {"BTCUSDT": 0.5, "ETHUSDT": 0.3, "DOGEUSDT": 0.2})
    first = bh.plan(context("bh"))

    assert [(a.symbol, a.action, a.size_usdt, a.leverage) for a in first.actions] == [
        ("BTCUSDT", "open_long", 4900.0, 1), ("ETHUSDT", "open_long", 2940.0, 1)]  # no DOGE
    held = context("bh", positions=({"symbol": "BTCUSDT", "side": "long"},
                                    {"symbol": "ETHUSDT", "side": "long"}))
    assert bh.plan(held).actions == ()


def test_buy_and_hold_waits_for_a_fresh_price():
    bh = BuyAndHold("bh", {"BTCUSDT": 0.5, "ETHUSDT": 0.5})
    plan = bh.plan(context("bh", snap=snapshot(stale=("ETHUSDT",))))
    assert [a.symbol for a in plan.actions] == ["BTCUSDT"]


def test_buy_and_hold_defaults_to_equal_weights_of_the_feed_symbols(clock):
    built = build_strategies(settings([{"name": "bh", "strategy": "buy_and_hold"}]),
                             secrets(), clock)
    weights = built["bh"].weights
    assert len(weights) == 6 and sum(weights.values()) == pytest.approx(1.0)


# ---------------------------------------------------------------- EMA cross


def ema_snap(fast: float, slow: float, price: float = 100.0):
    return snapshot({"BTCUSDT": price}, ema={"BTCUSDT": (fast, slow)})


@pytest.mark.parametrize(("prev", "cur", "expected"), [
    (None, 1.0, None), (-1.0, 1.0, "up"), (0.0, 1.0, "up"), (1.0, -1.0, "down"),
    (0.0, -0.5, "down"), (1.0, 2.0, None), (-1.0, -2.0, None),
])
def test_crossing_is_a_sign_change_of_fast_minus_slow(prev, cur, expected):
    assert crossing(prev, cur) == expected


def test_ema_cross_needs_two_observations_then_trades_the_cross():
    ema = EmaCross("ema", size_pct=20, leverage=3, atr_stop=2, atr_take=4)
    assert ema.plan(context("ema", snap=ema_snap(99, 100))).actions == ()  # first look

    [a] = ema.plan(context("ema", snap=ema_snap(101, 100))).actions
    assert (a.symbol, a.action, a.size_usdt, a.leverage) == ("BTCUSDT", "open_long", 2000, 3)
    assert (a.stop_loss, a.take_profit) == pytest.approx((98.0, 104.0))  # ATR14 = 1.0


def test_ema_cross_flips_a_long_on_a_cross_down():
    ema = EmaCross("ema")
    ema.plan(context("ema", snap=ema_snap(101, 100)))
    long = ({"symbol": "BTCUSDT", "side": "long"},)
    [a] = ema.plan(context("ema", snap=ema_snap(99, 100), positions=long)).actions
    assert a.action == "open_short"
    assert a.stop_loss > 100 > a.take_profit


def test_ema_cross_closes_a_position_against_the_trend_without_a_cross():
    ema = EmaCross("ema")
    short = ({"symbol": "BTCUSDT", "side": "short"},)
    [a] = ema.plan(context("ema", snap=ema_snap(101, 100), positions=short)).actions
    assert a.action == "close" and a.reason.startswith("trend turned against the short")


def test_ema_cross_skips_symbols_without_indicators_or_fresh_prices():
    ema = EmaCross("ema", timeframe="1h")  # not in the snapshot
    ema.plan(context("ema", snap=ema_snap(99, 100)))
    assert ema.plan(context("ema", snap=ema_snap(101, 100))).actions == ()

    stale = EmaCross("ema")
    snap = snapshot({"BTCUSDT": 100.0}, ema={"BTCUSDT": (99, 100)}, stale=("BTCUSDT",))
    stale.plan(context("ema", snap=snap))
    assert stale.plan(context("ema", snap=ema_snap(101, 100))).actions == ()  # no memory


async def test_baselines_return_valid_rule_outcomes():
    out = await BuyAndHold("bh", {"BTCUSDT": 0.5}).decide(context("bh"))
    assert (out.valid, out.provider, out.model, out.cost_usd) == (True, "rule", "buy_and_hold",
                                                                  0.0)


# ---------------------------------------------------------------- offline, in a replay


async def test_the_baselines_trade_a_replay_of_the_shipped_sample_without_keys(bus):
    from engine.clock import SimClock
    from engine.market.book import PriceBook
    from engine.market.candles import CandleStore
    from engine.market.feed import Feed
    from engine.market.recording import first_frame_time
    from engine.market.replay import Replay
    from engine.market.snapshot import take_snapshot
    from engine.traders.decide import DecisionStep
    from engine.traders.fixtures import llm_settings

    sample = Path(__file__).parents[1] / "data" / "sample.jsonl.gz"
    clock = SimClock(start=first_frame_time(sample))
    s = Settings.model_validate({"traders": [
        *TRADERS[:3], {"name": "bh", "strategy": "buy_and_hold"},
        {"name": "ema", "strategy": "ema_cross", "params": {"timeframe": "1m"}}]})
    feed = Feed(s.feed, bus, clock, PriceBook(), CandleStore(s.feed.max_candles))
    strategies = build_strategies(s, secrets(), clock)
    step = DecisionStep(strategies, llm_settings(), clock, bus)
    held: dict[str, set[str]] = {"bh": set(), "ema": set()}
    trades: dict[str, list] = {"bh": [], "ema": []}

    async def cycles() -> None:
        while True:
            await clock.sleep_until((clock.time() // 300 + 1) * 300)
            async with clock.busy():
                snap = take_snapshot(feed.book, feed.candles, s.feed, clock.time())
                ctxs = {n: dataclasses.replace(
                    context(n, snap=snap),
                    positions=tuple({"symbol": x, "side": "long"} for x in sorted(held[n])))
                    for n in strategies}
                for name, out in (await step.decide_all(ctxs)).items():
                    assert out.valid
                    trades[name] += out.decision.trades()
                    held[name] |= {a.symbol for a in out.decision.trades()
                                   if a.action == "open_long"}

    task = asyncio.create_task(cycles())
    await asyncio.sleep(0)
    await Replay(sample, feed, clock).run()
    task.cancel()

    assert list(strategies) == ["bh", "ema"]  # no keys: only the baselines
    assert {a.symbol for a in trades["bh"]} == set(s.feed.symbols)  # bought once, then held
    assert len(trades["bh"]) == len(s.feed.symbols)
    assert trades["ema"], "the EMA cross traded at least once in 1.5 h of 1m candles"
    assert all(a.stop_loss and a.take_profit for a in trades["ema"] if a.action != "close")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"fast": 5, "slow": 12}, "fast=5, slow=12"),
        ({"fast": 50, "slow": 20}, "fast=50, slow=20"),
        ({"timeframe": "3m"}, "params.timeframe': '3m'"),
    ],
)
def test_ema_cross_refuses_params_the_snapshot_cannot_serve(params: dict, expected: str) -> None:
    from engine.settings import Settings, SettingsError, TraderSettings
    from strategies.base import registered

    trader = TraderSettings(name="ema", strategy="ema_cross", params=params)
    with pytest.raises(SettingsError, match=r"bad value for 'traders\.ema\.params") as err:
        registered()["ema_cross"](trader, Settings())
    assert expected in str(err.value)
