"""The paper broker on the feed's real PriceBook (NaN where a price was never received)."""

from __future__ import annotations

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action, Decision
from engine.market.book import PriceBook
from engine.paper.broker import PaperBroker
from tests.support.broker import T0, book_ticker, broker_settings, mark_price, risk_settings


def test_review_execute_and_trigger_on_the_real_price_book(clock: SimClock, bus: Bus) -> None:
    book = PriceBook()
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, book,
                         symbols=["BTCUSDT", "ETHUSDT"])
    broker.open_account("a", 10_000.0)
    buy = Decision(actions=(Action(symbol="ETHUSDT", action="open_long", size_usdt=3_000,
                                   leverage=2, stop_loss=2_900.0),))
    # never priced: stale
    _, rejected = broker.review("a", buy, None, T0, "c0")
    assert [r.rule for r in rejected] == ["price_stale"]
    for event in (book_ticker("ETHUSDT", 3_000.0, 3_000.5), mark_price("ETHUSDT", 3_000.2)):
        book.apply(event)
        broker.on_market(event)
    approved, rejected = broker.review("a", buy, None, T0, "c1")
    assert rejected == []
    broker.execute("a", approved, "c1", None)
    assert broker.positions_view("a")[0]["entry_price"] == 3_000.5
    book.apply(mark_price("ETHUSDT", 3_100.0))
    broker.mark_all()
    # 0.999 ETH (3,000 / 3,000.5 down to the step) * (3,100 - 3,000.5) = 99.40 (to the cent)
    assert broker.account_view("a")["unrealized_pnl"] == pytest.approx(0.999 * 99.5, abs=0.005)
    stop = book_ticker("ETHUSDT", 2_899.0, 2_899.5)
    book.apply(stop)
    broker.on_market(stop)
    assert broker.accounts["a"].positions == {}
    assert broker.accounts["a"].state.trades == 1
