"""An account survives a restart exactly: snapshot, real Postgres, load_state, restore."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import RunStarted, new_id
from engine.paper.broker import PaperBroker
from engine.settings import DatabaseSettings
from engine.store.database import migrate
from engine.store.recovery import load_state
from engine.store.writer import Writer
from tests.support.broker import FakeBook, broker_settings, mark_price, risk_settings


async def test_restore_from_the_database_is_exact(database_url: str, clock: SimClock,
                                                  tmp_path: Path) -> None:
    # Every event the broker publishes goes through the engine's own writer, after a RunStarted
    # (recovery reads the latest arena and checks each account against its committed fills).
    await migrate(database_url)
    bus = Bus()
    writer = Writer(bus, database_url, DatabaseSettings(spill_path=str(tmp_path / "spill.jsonl")),
                    clock)
    task = asyncio.create_task(writer.run())
    bus.publish(RunStarted(run_id=new_id(), started_at=clock.time(), version="test",
                           settings_hash="test", fresh=True, dry_run=False))
    book = FakeBook()
    book.set("BTCUSDT", 60_123.4, 60_123.5)
    book.set("ETHUSDT", 3_001.17, 3_001.19)
    broker = PaperBroker(broker_settings(slippage_bps=1.3), risk_settings(), bus, clock, book,
                         symbols=["BTCUSDT", "ETHUSDT"])
    broker.open_account("claude", 10_000.0)
    broker.execute("claude", [
        Action(symbol="BTCUSDT", action="open_long", size_usdt=3_333.33, leverage=7,
               stop_loss=57_000.0, take_profit=66_000.0, reason="momentum, 4h trend up"),
        Action(symbol="ETHUSDT", action="open_short", size_usdt=1_234.56, leverage=3)],
        "c1", None)
    broker.on_market(mark_price("ETHUSDT", 3_000.0, rate=0.0001, next_funding=clock.time() + 5))
    clock.set_time(clock.time() + 6)
    broker.on_market(mark_price("ETHUSDT", 3_010.7, next_funding=clock.time() + 28_800))
    broker.record_decision("claude", valid=True, holds=False, cost_usd=0.01734)
    broker.accounts["claude"].state.suspended_until = clock.time() + 600
    broker.publish_snapshots("cycle", "c1")
    snap = broker.snapshot("claude", "cycle", "c1")
    await clock.settle()
    task.cancel()  # the writer's final flush
    with pytest.raises(asyncio.CancelledError):
        await task

    state = await load_state(database_url)
    restored = PaperBroker(broker_settings(slippage_bps=1.3), risk_settings(), Bus(), clock,
                           book, symbols=["BTCUSDT", "ETHUSDT"])
    restored.on_market(mark_price("ETHUSDT", 3_010.7, next_funding=clock.time() + 28_800))
    restored.restore("claude", state.accounts["claude"])

    assert restored.accounts["claude"] == broker.accounts["claude"]
    again = restored.snapshot("claude", "cycle", "c1")
    fields = [f for f in snap.__slots__ if f != "id"]
    assert {f: getattr(again, f) for f in fields} == {f: getattr(snap, f) for f in fields}
