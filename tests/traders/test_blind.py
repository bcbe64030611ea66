"""Blind prompts: relative times, aliases in a per-run order, prices rebased by a hidden k per
symbol (quantities by 1/k), answers mapped back, and the leak audit that stops the run."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from engine.broker_settings import BrokerSettings
from engine.decision import Action, Decision
from engine.traders.answers import InvalidAnswer, parse_decision
from engine.traders.blind import Blind, BlindLeak, relative
from engine.traders.fixtures import NOW, context
from engine.traders.prompt import build_prompt, trading_terms

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
REAL = {"BTCUSDT": 97000.5, "ETHUSDT": 3450.25, "SOLUSDT": 187.123}
POSITION = {"symbol": "ETHUSDT", "side": "long", "qty": 0.5, "entry_price": 3400.0,
            "mark": 3450.25, "leverage": 3, "margin": 566.67, "notional": 1725.13,
            "unrealized_pnl": 25.13, "stop_loss": 3300.0, "take_profit": 3600.0,
            "liquidation_price": 2278.4, "open_reason": "breakout", "opened_at": NOW - 1800}
FILL = {"ts": NOW - 1800, "symbol": "ETHUSDT", "side": "buy", "qty": 0.5, "price": 3400.0,
        "fee": 0.85, "realized_pnl": 0.0, "reason": "decision"}
PREVIOUS = {"cycle_id": "20251231T235500Z-abc123", "ts": NOW - 300, "actions": [
    {"symbol": "BTCUSDT", "action": "open_long", "size_usdt": 1000, "stop_loss": 95123.5,
     "take_profit": 99876.5, "refused": "stop_too_close: stop 95123.5 is within 0.1% of 97000.6"}]}


def full_context() -> object:
    terms = trading_terms(BrokerSettings(), BrokerSettings().filter_for, SYMBOLS, 8.0)
    ctx = context(positions=(POSITION,), previous=(PREVIOUS,), cycle_id="20260101T000500Z-c0ffee")
    refusals = ({"cycle_id": "20251231T235500Z-abc123", "symbol": "BTCUSDT",
                 "action": "open_long", "rule": "stop_too_close",
                 "detail": "stop 95123.5 is within 0.1% of 97000.6"},)
    return dataclasses.replace(ctx, terms=terms, recent_fills=(FILL,),
                               extra={"refusals": refusals})


def market(user: str) -> dict[str, dict[str, Any]]:
    out = {}
    for line in user.splitlines():
        m = re.match(r"^(ASSET_[A-Z]+) (\{.*\})$", line)
        if m:
            out[m.group(1)] = json.loads(m.group(2))
    return out


def test_a_blind_prompt_has_no_date_clock_time_real_symbol_or_real_price() -> None:
    blind = Blind(SYMBOLS, seed=1)
    ctx = full_context()
    prompt = blind.prompt(ctx)  # audited: raises on a leak
    text = prompt.system + "\n" + prompt.user
    plain = build_prompt(ctx)
    assert "2026-01-01" in plain.user and "BTCUSDT" in plain.system  # what is hidden
    for real in ("BTC", "ETH", "SOL", "2026", "00:00", "97000.5", "3450.25", "187.123",
                 "3400.0", "95123.5", "97000.6"):
        assert real not in text, real
    assert "Now is t." in prompt.user and '"next_funding_time":"t+60m"' in prompt.user
    assert '"opened_at":"t-30m"' in prompt.user and "cycle t-5m" in prompt.user
    assert prompt.hash != plain.hash and blind.prompts == 1


def test_every_price_field_is_rebased_by_k_and_quantities_by_one_over_k() -> None:
    blind = Blind(SYMBOLS, seed=2)
    prompt = blind.prompt(full_context())
    lines = market(prompt.user)
    assert sorted(lines) == ["ASSET_A", "ASSET_B", "ASSET_C"]
    for real, alias in blind.alias.items():
        k, got = blind.k[real], lines[alias]
        p = REAL[real]
        assert got["price"] == pytest.approx(p * k, rel=1e-5)
        ind = got["indicators"]["15m"]
        for key, value in (("ema20", p * 1.001), ("atr14", p * 0.01), ("bb_upper", None)):
            if value is not None:
                assert ind[key] == pytest.approx(value * k, rel=1e-4), key
        assert ind["rsi14"] == 55.0  # dimensionless: unchanged
        assert got["funding_rate_pct"] == 0.01 and got["change_pct"] == 1.25
        assert got["volume_24h"] == pytest.approx(1000.0 / k, rel=1e-5)
        assert got["quote_volume_24h"] == 1e8  # USDT: unchanged
        assert max(p, got["price"]) / min(p, got["price"]) >= 3  # far from every real level
    eth = blind.k["ETHUSDT"]
    pos = json.loads(next(line for line in prompt.user.splitlines() if '"side":"long"' in line
                          and '"entry_price"' in line))
    assert pos["symbol"] == blind.alias["ETHUSDT"]
    assert pos["entry_price"] == pytest.approx(3400.0 * eth, rel=1e-5)
    assert pos["liquidation_price"] == pytest.approx(2278.4 * eth, rel=1e-5)
    assert pos["qty"] * pos["entry_price"] == pytest.approx(0.5 * 3400.0, rel=1e-4)  # notional
    assert pos["margin"] == 566.67 and pos["notional"] == 1725.13  # USDT amounts
    fill = json.loads(next(line for line in prompt.user.splitlines() if '"fee"' in line))
    assert fill["qty"] * fill["price"] == pytest.approx(1700.0, rel=1e-4)
    assert '"refused":"stop_too_close"' in prompt.user  # its detail quoted real prices
    assert "(hidden in blind mode)" in prompt.user
    assert "tick_size" in prompt.system and "daily reset" in prompt.system


def test_the_alias_order_is_drawn_per_run() -> None:
    orders = {tuple(Blind(SYMBOLS, seed=s).alias.items()) for s in range(12)}
    assert len(orders) > 1
    assert Blind(SYMBOLS, seed=5).alias == Blind(SYMBOLS, seed=5).alias  # a replay's the same


def test_an_answer_in_blind_units_is_mapped_back_to_real_ones() -> None:
    blind = Blind(SYMBOLS, seed=3)
    blind.fit(REAL)
    alias, k = blind.alias["BTCUSDT"], blind.k["BTCUSDT"]
    answer = Decision(actions=(Action(symbol=alias, action="open_long", size_usdt=1000,
                                      leverage=2, stop_loss=95000 * k, take_profit=99000 * k),))
    (a,) = blind.unblind(answer).actions
    assert (a.symbol, a.size_usdt, a.leverage) == ("BTCUSDT", 1000, 2)
    assert a.stop_loss == pytest.approx(95000) and a.take_profit == pytest.approx(99000)
    assert blind.symbols(SYMBOLS) == tuple(blind.alias[s] for s in SYMBOLS)
    good = {"symbol": alias, "action": "close", "size_usdt": None, "leverage": None,
            "stop_loss": None, "take_profit": None, "confidence": 0.5, "reason": "Done."}
    (c,) = blind.unblind(parse_decision(json.dumps({"actions": [good]}),
                                        blind.symbols(SYMBOLS))).actions
    assert c.symbol == "BTCUSDT"
    with pytest.raises(InvalidAnswer, match="symbol"):  # the schema's enum is the aliases
        parse_decision(json.dumps({"actions": [{**good, "symbol": alias.replace("_", "")}]}),
                       blind.symbols(SYMBOLS))


@pytest.mark.parametrize(("text", "leak"), [
    ("the market on 2026-01-01 was calm", "date '2026-01-01'"),
    ("cycle 20260101T000500Z", "date '20260101T'"),
    ("as in March 2024", "date 'March 2024'"),
    ("funding at 08:00", "clock time '08:00'"),
    ('{"ts":1767225600}', "epoch timestamp '1767225600'"),
    ('{"ts":1767225600123}', "epoch timestamp '1767225600123'"),
    ("ASSET_A is btcusdt", "real symbol 'btcusdt'"),
    ("ASSET_A tracks BTC", "real symbol 'BTC'"),
    ('{"price":3450.25}', "real price level 3450.25"),
    ('{"equity":97000.55}', "real price level 97000.55"),  # within 0.01 % of a real quote
])
def test_the_audit_finds_each_kind_of_leak(text: str, leak: str) -> None:
    blind = Blind(SYMBOLS, seed=4)
    plain = build_prompt(full_context())
    quotes = {s: p for s, p in REAL.items()}
    assert blind.audit(text, plain.system + "\n" + plain.user, quotes) == leak


def test_a_volume_rebased_to_round_digits_is_not_an_epoch() -> None:
    blind = Blind(SYMBOLS, seed=4)
    assert blind.audit('{"volume_24h":1523460000.0}', "", {}) is None


def test_the_first_leak_stops_the_run_and_nothing_more_is_sent() -> None:
    stopped: list[str] = []
    blind = Blind(SYMBOLS, seed=5, on_leak=stopped.append)
    blind.fit(REAL)
    with pytest.raises(BlindLeak, match="clock time '12:30'"):
        blind.check("system", "user at 12:30", ("", ""), {})
    assert stopped == ["blind leak: clock time '12:30' in the user prompt"]
    with pytest.raises(BlindLeak, match="an earlier prompt leaked"):
        blind.prompt(full_context())


def test_relative_times() -> None:
    assert [relative(NOW + d, NOW) for d in (0, -40, -300, 7200, -3 * 86_400, -36_000)] == [
        "t", "t-40s", "t-5m", "t+2h", "t-3d", "t-10h"]
