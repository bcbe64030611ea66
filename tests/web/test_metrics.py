"""Metrics a Grafana user can live with, the shipped dashboard, and the operator's log lines."""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import re
from pathlib import Path
from types import SimpleNamespace

import hypothesis  # noqa: F401  (see below)
import pytest
from structlog.testing import capture_logs

import engine
import strategies
from engine import metrics
from engine.app.observe import engine_view, trader_statuses
from engine.bus import Bus
from engine.clock import SimClock
from engine.cycle import TradingCycle
from engine.decision import Action, Decision
from engine.paper.broker import PaperBroker
from engine.settings import TraderSettings
from engine.traders.decide import DecisionStep
from engine.traders.fixtures import context, llm_settings
from strategies.base import DecisionOutcome
from tests.support.broker import FakeBook, broker_settings, risk_settings, snapshot_of

DASHBOARD = Path(engine.__file__).parent / "web" / "grafana" / "arena.json"
# hypothesis is imported at collection on purpose: run alone, this module otherwise leaves it to
# hypothesis's pytest plugin at the terminal summary, where CPython 3.11.7 fails in ast.parse
# ("AST constructor recursion depth mismatch", CPython gh-106905); the full suite imports it early.


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------ the dashboard

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset", "inf", "nan", "le"}


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects (functions, labels, words removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _PROMQL_WORDS:
            continue  # a function call or a keyword
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."):
            continue  # the exponent of 1e6
        names.add(m.group(0))
    return names


def import_every_module() -> None:
    for package in (engine, strategies):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)


def test_the_query_parser_finds_metric_names_only() -> None:
    expr = ('histogram_quantile(0.95, sum by (trader, le) '
            '(rate(arena_llm_latency_seconds_bucket{valid="false"}[1h]))) / 1e6 + time() - x_y')
    assert metric_names(expr) == {"arena_llm_latency_seconds_bucket", "x_y"}


def test_every_dashboard_query_names_a_metric_the_engine_exports() -> None:
    import_every_module()
    exported = metrics.exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    assert len(exprs) >= 25
    used = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        used |= names
    assert sorted(used - exported) == []
    titles = " ".join(p["title"] for p in dashboard["panels"] if p["type"] == "row")
    assert titles == "Feed Cycles and jobs Traders LLM Writer Event loop, bus and process"


def test_the_dashboard_ships_as_package_data() -> None:
    pyproject = (Path(engine.__file__).parents[1] / "pyproject.toml").read_text()
    assert '"grafana/*.json"' in pyproject


# ------------------------------------------------------------------ the registry


def test_no_created_series_and_process_and_build_info_are_exported() -> None:
    text = metrics.render().decode()
    assert "_created" not in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds"):
        assert re.search(rf"^{name} \d", text, re.M), name
    assert re.search(rf'^arena_build_info\{{.*version="{engine.__version__}"', text, re.M)


# The text of each failure as the providers, the parser and the step word it, and its class.
REASONS = {
    "timeout: no answer within the 30s deadline": "timeout",
    "timeout: the provider did not answer in time (SDK timeout)": "timeout",
    "http 429 rate_limit_error: slow down (request_id=req_1)": "http_429",
    "http 529 overloaded_error: Overloaded (request_id=None)": "http_5xx",
    "http 500 server_error: boom (request_id=x)": "http_5xx",
    "http 400 invalid_request_error: bad (request_id=x)": "http_4xx",
    "connection error: refused": "connection",
    "truncated: stop_reason=max_tokens at max_tokens=800": "truncated",
    "refusal: no": "refusal",
    "empty answer": "parse",
    "invalid JSON: Expecting value: line 1 column 1 (char 0)": "parse",
    "no JSON object found": "parse",
    "actions.0: unknown action 'buy' for BTCUSDT; expected one of open_long": "schema",
    "no 'actions' list in the answer (keys: foo)": "schema",
    "ValueError: strategy broke": "error",
    None: "error",
}


def test_invalid_decisions_are_classified_by_reason() -> None:
    # One test over the table (each sync test leaks an event loop in looptime's plugin).
    assert {error: metrics.invalid_reason(error) for error in REASONS} == REASONS
    assert set(REASONS.values()) <= set(metrics.INVALID_REASONS)


def test_engine_state_is_read_at_scrape_time() -> None:
    view = metrics.EngineView(
        traders={"claude": "cooldown", "gpt": "disabled"}, paused=True, stale_symbols=2,
        writer={"connected": False, "spilled_rows": 17, "errors": 3},
        bus={"writer": {"queued": 4, "dropped": 0, "backpressure": 9},
             "control.stream.1": {"queued": 2, "dropped": 5, "backpressure": 0},
             "control.stream.2": {"queued": 1, "dropped": 1, "backpressure": 0}})
    metrics.ENGINE.attach(lambda: view)
    try:
        assert sample("arena_trader_status", trader="claude", status="cooldown") == 1
        assert sample("arena_trader_status", trader="claude", status="active") == 0
        assert sample("arena_trader_status", trader="gpt", status="disabled") == 1
        assert sample("arena_paused") == 1 and sample("arena_stale_symbols") == 2
        assert sample("arena_writer_connected") == 0
        assert sample("arena_writer_spilled_rows") == 17
        assert sample("arena_writer_errors_total") == 3
        assert sample("arena_bus_queue_depth", subscriber="writer") == 4
        assert sample("arena_bus_backpressure_total", subscriber="writer") == 9
        # every browser stream in one series, never one per connection
        assert sample("arena_bus_queue_depth", subscriber="control.stream") == 3
        assert sample("arena_bus_dropped_total", subscriber="control.stream") == 6
        view = metrics.EngineView(paused=False)
        assert sample("arena_paused") == 0  # read again at the next scrape
    finally:
        metrics.ENGINE.attach(None)


def test_trader_statuses_say_which_trader_is_disabled_for_a_missing_key(clock: SimClock,
                                                                        bus: Bus) -> None:
    book = FakeBook()
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, book)
    for name in ("rules", "cool", "halted"):
        broker.open_account(name, 10_000.0)
    broker.accounts["halted"].state.stopped = True
    traders = (TraderSettings(name="rules", strategy="buy_and_hold"),
               TraderSettings(name="cool", strategy="buy_and_hold"),
               TraderSettings(name="halted", strategy="buy_and_hold"),
               TraderSettings(name="claude", strategy="llm", provider="anthropic",
                              model="claude-sonnet-4-6"),
               TraderSettings(name="off", strategy="buy_and_hold", enabled=False))
    fake_engine = SimpleNamespace(
        clock=clock, settings=SimpleNamespace(traders=traders), broker=broker,
        strategies={"rules": object(), "cool": object(), "halted": object()},
        decisions=SimpleNamespace(cooling_down=lambda: {"cool": clock.time() + 60}),
        feed=SimpleNamespace(status=lambda: {"stale": ["SOLUSDT"]}), writer=None, bus=bus,
        scheduler=SimpleNamespace(paused=False))
    assert trader_statuses(fake_engine) == {
        "rules": ("active", None), "cool": ("cooldown", None), "halted": ("stopped", None),
        "claude": ("disabled", "missing key")}
    view = engine_view(fake_engine)
    assert view.stale_symbols == 1 and view.traders["claude"] == "disabled"


# ------------------------------------------------------------------ durations and labels


class Sleeps:
    name = "decisions"

    def __init__(self, clock: SimClock, seconds: float) -> None:
        self._clock, self._seconds = clock, seconds

    async def __call__(self, ctx: object) -> None:
        await self._clock.sleep(self._seconds)


async def test_cycle_duration_is_wall_time_even_on_a_simulated_clock(clock: SimClock,
                                                                     bus: Bus) -> None:
    count = sample("arena_cycle_duration_seconds_count")
    total = sample("arena_cycle_duration_seconds_sum")
    over_60 = count - sample("arena_cycle_duration_seconds_bucket", le="60.0")
    start = clock.time()
    cycle = TradingCycle([Sleeps(clock, 90)], clock, bus)
    task = asyncio.create_task(cycle("manual"))
    await clock.advance(100)
    summary = await task
    assert summary["status"] == "ok"
    assert 0 < summary["duration_s"] < 90  # 90 simulated seconds took far less wall time
    assert sample("arena_cycle_duration_seconds_count") == count + 1
    assert 0 < sample("arena_cycle_duration_seconds_sum") - total < 90
    assert count + 1 - sample("arena_cycle_duration_seconds_bucket", le="60.0") == over_60
    # a time stamp, not a duration: on the engine clock, when the cycle ended
    assert sample("arena_last_cycle_success_timestamp_seconds") == start + 90


class Answers:
    """A strategy that answers `outcome` after `delay` simulated seconds."""

    def __init__(self, name: str, model: str, outcome: DecisionOutcome | None,
                 clock: SimClock, delay: float = 0.0) -> None:
        self.name, self.provider, self.model = name, "anthropic", model
        self.timeout_seconds = 30.0
        self._outcome, self._clock, self._delay = outcome, clock, delay

    async def decide(self, ctx: object) -> DecisionOutcome:
        await self._clock.sleep(self._delay)
        assert self._outcome is not None
        return self._outcome


def answer(model: str, *, valid: bool = True, error: str | None = None, actions: tuple = (),
           latency_ms: float = 1200.0, cost: float = 0.01) -> DecisionOutcome:
    return DecisionOutcome(decision=Decision(actions=actions), raw_answer="{}", valid=valid,
                           error=error, provider="anthropic", model=model, prompt_hash="h",
                           input_tokens=1000, output_tokens=200, cost_usd=cost,
                           latency_ms=latency_ms)


async def test_llm_series_are_per_trader_and_invalid_decisions_carry_their_reason(
        clock: SimClock, bus: Bus) -> None:
    model = "claude-sonnet-4-6"
    btc = (Action(symbol="BTCUSDT", action="open_long", size_usdt=1000, leverage=2),)
    strategies_ = {
        "m_one": Answers("m_one", model, answer(model, actions=btc), clock),
        "m_two": Answers("m_two", model, answer(model, valid=False, error=(
            "http 429 rate_limit_error: slow down (request_id=r)"), cost=0.0), clock),
        "m_slow": Answers("m_slow", model, None, clock, delay=120),
    }
    before = {t: sample("arena_llm_latency_seconds_count", trader=t, model=model)
              for t in strategies_}
    wall_before = sample("arena_llm_latency_seconds_sum", trader="m_slow", model=model)
    step = DecisionStep(strategies_, llm_settings(max_consecutive_failures=1), clock, bus)
    task = asyncio.create_task(step.decide_all({n: context(n) for n in strategies_}))
    await clock.settle()
    await clock.advance(30)
    await task
    for t in strategies_:  # two traders on one model never merge
        assert sample("arena_llm_latency_seconds_count", trader=t, model=model) == before[t] + 1
    # the timeout is measured on the wall clock, not as the 30 s deadline
    assert 0 < sample("arena_llm_latency_seconds_sum", trader="m_slow", model=model) \
        - wall_before < 30
    assert sample("arena_llm_cost_usd_total", trader="m_one", model=model) >= 0.01
    assert sample("arena_llm_tokens_total", trader="m_one", model=model, kind="input") >= 1000
    assert sample("arena_decisions_total", trader="m_one", action="open_long", valid="true",
                  reason="") >= 1
    assert sample("arena_decisions_total", trader="m_two", action="hold", valid="false",
                  reason="http_429") >= 1
    assert sample("arena_decisions_total", trader="m_slow", action="hold", valid="false",
                  reason="timeout") >= 1
    # both failed once, with max_consecutive_failures=1: the next cycle is a cool-down hold
    cooled = sample("arena_decisions_total", trader="m_two", action="hold", valid="false",
                    reason="cooldown")
    await step.decide_all({"m_two": context("m_two")})
    assert sample("arena_decisions_total", trader="m_two", action="hold", valid="false",
                  reason="cooldown") == cooled + 1


# ------------------------------------------------------------------ fills and their log lines


def make_broker(clock: SimClock, bus: Bus) -> tuple[PaperBroker, FakeBook]:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0, 60_000.0)
    broker = PaperBroker(broker_settings(taker_fee=0.0005), risk_settings(), bus, clock, book,
                         symbols=["BTCUSDT", "ETHUSDT"])
    broker.open_account("a", 10_000.0)
    return broker, book


def test_each_fill_logs_order_filled_and_the_position_it_opened_or_closed(
        clock: SimClock, bus: Bus) -> None:
    broker, book = make_broker(clock, bus)
    with capture_logs() as logs:
        broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=1200,
                                    leverage=2)], "c1", snapshot_of(book))
        book.set("BTCUSDT", 61_000.0, 61_000.0)
        broker.execute("a", [Action(symbol="BTCUSDT", action="close")], "c2", snapshot_of(book))
    lines = [{k: v for k, v in e.items() if k != "log_level"} for e in logs
             if e["event"] in ("order.filled", "position.opened", "position.closed")]
    liquidation = lines[1].pop("liquidation_price")
    assert 29_000 < liquidation < 31_000  # 2x long: about half the entry
    assert lines == [
        {"event": "order.filled", "trader": "a", "symbol": "BTCUSDT", "side": "buy",
         "quantity": 0.02, "price": 60_000.0, "fee": 0.6, "reason": "decision",
         "realized_pnl": 0.0, "cycle_id": "c1"},
        {"event": "position.opened", "trader": "a", "symbol": "BTCUSDT", "side": "long",
         "quantity": 0.02, "entry_price": 60_000.0, "leverage": 2, "margin": 600.0,
         "stop_loss": None, "take_profit": None, "cycle_id": "c1"},
        {"event": "order.filled", "trader": "a", "symbol": "BTCUSDT", "side": "sell",
         "quantity": 0.02, "price": 61_000.0, "fee": 0.61, "reason": "decision",
         "realized_pnl": 20.0, "cycle_id": "c2"},
        {"event": "position.closed", "trader": "a", "symbol": "BTCUSDT", "side": "long",
         "quantity": 0.02, "entry_price": 60_000.0, "exit_price": 61_000.0, "pnl": 20.0,
         "fees": 1.21, "reason": "decision", "cycle_id": "c2"},
    ]


def test_a_refusal_is_logged_with_its_rule_and_counted_by_trader(clock: SimClock,
                                                                 bus: Bus) -> None:
    broker, book = make_broker(clock, bus)
    before = sample("arena_rejections_total", trader="a", rule="no_position")
    with capture_logs() as logs:
        broker.execute("a", [Action(symbol="BTCUSDT", action="close")], "c1", snapshot_of(book))
    (refused,) = [e for e in logs if e["event"] == "broker.fill_refused"]
    assert (refused["trader"], refused["rule"]) == ("a", "no_position")
    assert sample("arena_rejections_total", trader="a", rule="no_position") == before + 1


async def test_console_mode_prints_the_table_without_logging_the_rows(
        clock: SimClock, bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cycle import CycleContext
    from engine.paper.steps import PnLStep

    broker, _ = make_broker(clock, bus)
    ctx = CycleContext("c1", "manual", clock.time(), dry_run=False)
    capsys.readouterr()
    with capture_logs() as logs:
        await PnLStep(broker, console=True)(ctx)
    printed = capsys.readouterr().out
    assert printed.startswith("#  trader") and "\n1  a " in printed
    assert "{" not in printed  # no repr of a row
    assert [e for e in logs if e["event"] == "leaderboard"] == []
    with capture_logs() as logs:
        await PnLStep(broker, console=False)(ctx)
        await broker.board_published()  # logged when its refresh is done
    assert capsys.readouterr().out == ""
    assert [e["event"] for e in logs if e["event"] == "leaderboard"] == ["leaderboard"]
