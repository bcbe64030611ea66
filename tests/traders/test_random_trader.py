"""The random trader: seeded, reproducible, its action mix honoured, sized within the risk rules."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from engine.settings import RiskSettings, Settings, SettingsError
from engine.traders.fixtures import context, snapshot
from strategies.base import registered
from strategies.random_trader import RandomTrader, build

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def trader(**params: object) -> RandomTrader:
    s = Settings.model_validate({"traders": [{"name": "rnd", "strategy": "random",
                                              "params": params}]})
    return build(s.traders[0], s)


def at(now: float, **kw: object):  # a context whose cycle instant is `now`
    snap = dataclasses.replace(snapshot(), ts=now)
    return context("rnd", snap=snap, **kw)


def test_the_random_strategy_is_registered_and_in_the_default_settings() -> None:
    assert "random" in registered()
    defaults = Settings.model_validate({})  # no file: no traders; settings.toml has one
    assert defaults.traders == ()
    from engine.settings import load_settings

    shipped = [t for t in load_settings().traders if t.strategy == "random"]
    assert [t.name for t in shipped] == ["random"]


def test_the_same_seed_and_instant_give_the_same_decision_and_another_seed_differs() -> None:
    a, b, c = trader(seed=1), trader(seed=1), trader(seed=2)
    plans_a = [a.plan(at(1_767_225_600 + 300 * i)) for i in range(50)]
    plans_b = [b.plan(at(1_767_225_600 + 300 * i)) for i in range(50)]
    plans_c = [c.plan(at(1_767_225_600 + 300 * i)) for i in range(50)]
    assert plans_a == plans_b
    assert plans_a != plans_c
    assert sum(len(p.actions) for p in plans_a) > 0


def test_the_action_mix_is_honoured_over_many_cycles() -> None:
    rnd = trader(mix={"open_long": 1, "open_short": 1, "hold": 2})
    kinds: Counter[str] = Counter()
    for i in range(400):  # flat book each time: every open draw becomes an open
        for action in rnd.plan(at(1_767_225_600 + 300 * i)).actions:
            kinds[action.action] += 1
    draws = 400 * len(SYMBOLS)
    assert set(kinds) == {"open_long", "open_short"}
    assert abs(kinds["open_long"] / draws - 0.25) < 0.04
    assert abs(kinds["open_short"] / draws - 0.25) < 0.04


def test_sizes_and_leverage_stay_within_the_params_and_the_risk_limits() -> None:
    rnd = trader(mix={"open_long": 1}, size_pct=[5, 80], max_leverage=20)
    risk = RiskSettings(max_position_pct=30.0, max_leverage=4)
    sizes, levers = [], []
    for i in range(100):
        ctx = dataclasses.replace(at(1_767_225_600 + 300 * i), risk=risk)
        for a in rnd.plan(ctx).actions:
            sizes.append(a.size_usdt)
            levers.append(a.leverage)
    assert sizes and all(500 <= s <= 3000 for s in sizes)  # 5 % to min(80, 30) % of 10,000
    assert set(levers) == {1, 2, 3, 4}


def test_a_close_needs_a_position_and_an_open_on_the_same_side_is_a_hold() -> None:
    long_btc = ({"symbol": "BTCUSDT", "side": "long"},)
    closer = trader(mix={"close": 1})
    assert [a.symbol for a in closer.plan(at(1_767_225_600, positions=long_btc)).actions] == [
        "BTCUSDT"]
    assert closer.plan(at(1_767_225_600)).actions == ()
    longer = trader(mix={"open_long": 1})
    opened = {a.symbol for a in longer.plan(at(1_767_225_600, positions=long_btc)).actions}
    assert opened == {"ETHUSDT", "SOLUSDT"}
    shorter = trader(mix={"open_short": 1})
    flipped = {a.symbol for a in shorter.plan(at(1_767_225_600, positions=long_btc)).actions}
    assert flipped == set(SYMBOLS)  # an open on the other side flips, as the broker does


def test_stale_symbols_get_no_action_and_do_not_shift_the_others_draws() -> None:
    rnd = trader(mix={"open_long": 1, "hold": 1})
    fresh = rnd.plan(at(1_767_225_600))
    snap = dataclasses.replace(snapshot(stale=("ETHUSDT",)), ts=1_767_225_600)
    stale = rnd.plan(context("rnd", snap=snap))
    assert [a for a in fresh.actions if a.symbol != "ETHUSDT"] == list(stale.actions)


@pytest.mark.parametrize(("params", "message"), [
    ({"mix": {"buy": 1}}, "unknown action buy"),
    ({"mix": {"hold": 0}}, "weights must be >= 0, some > 0"),
    ({"size_pct": [20, 5]}, "0 < low <= high"),
    ({"max_leverage": "x"}, "max_leverage integers"),
    ({"sede": 3}, "unknown random params sede"),
])
def test_bad_params_are_a_settings_error_naming_the_trader(params: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as err:
        trader(**params)
    assert "'rnd'" in str(err.value)
