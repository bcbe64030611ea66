"""Run one first trading cycle with three SDK traders against a local HTTP server, in a fresh
interpreter, and print the event loop's worst lag during it as JSON (tests/core/test_loop_monitor).

The server on 127.0.0.1 answers in the Anthropic, OpenAI and DeepSeek shapes with the hand-written
fixtures of engine/traders/fixtures. `--no-warm-up` skips the warm-up (the control run).
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web


async def main(warm: bool) -> dict:
    from engine.traders.fixtures import load_fixture

    answers = {"/v1/messages": "anthropic/tool_call",
               "/openai/v1/chat/completions": "openai/json_schema",
               "/deepseek/chat/completions": "deepseek/json_mode"}

    def handler(name: str):
        body = load_fixture(name)["response"]["body"]

        async def answer(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response(body)

        return answer

    app = web.Application()
    for path, name in answers.items():
        app.router.add_post(path, handler(name))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"

    # What the engine does before ready: settings, the book, the broker, the traders.
    from engine.bus import Bus
    from engine.clock import LiveClock
    from engine.cycle import TradingCycle
    from engine.events import BookTicker
    from engine.loop_monitor import LoopMonitor
    from engine.market.book import PriceBook
    from engine.market.candles import CandleStore
    from engine.market.snapshot import MarketSnapshotStep
    from engine.paper.broker import PaperBroker
    from engine.paper.steps import ExecuteStep, PnLStep, RiskStep
    from engine.settings import (
        FeedSettings,
        LLMSettings,
        ProviderSettings,
        Secrets,
        Settings,
        TraderSettings,
    )
    from engine.traders.decide import DecideStep, DecisionStep
    from engine.traders.warmup import warm_up
    from strategies.registry import build_strategies

    providers = {"anthropic": ProviderSettings(base_url=base, max_retries=0),
                 "openai": ProviderSettings(base_url=f"{base}/openai/v1", max_retries=0),
                 "deepseek": ProviderSettings(base_url=f"{base}/deepseek", max_retries=0)}
    feed = FeedSettings()
    settings = Settings(feed=feed, llm=LLMSettings(providers=providers), traders=(
        TraderSettings(name="claude", strategy="llm", provider="anthropic",
                       model="claude-sonnet-4-6"),
        TraderSettings(name="gpt", strategy="llm", provider="openai", model="gpt-4o"),
        TraderSettings(name="deepseek", strategy="llm", provider="deepseek",
                       model="deepseek-chat")))
    secrets = Secrets("test-key", "test-key", "test-key", None, None)
    clock, bus, book = LiveClock(), Bus(), PriceBook()
    now = clock.time()
    for i, symbol in enumerate(feed.symbols):
        price = 100.0 * (i + 1)
        book.apply(BookTicker(symbol, price, 1.0, price * 1.0001, 1.0, now, now))
    broker = PaperBroker(settings.broker, settings.risk, bus, clock, book, symbols=feed.symbols,
                         max_price_age=feed.max_price_age_seconds)
    strategies = build_strategies(settings, secrets, clock)
    for name in strategies:
        broker.open_account(name, 10_000.0)
    if warm:
        await warm_up(strategies)
    decisions = DecisionStep(strategies, settings.llm, clock, bus)
    cycle = TradingCycle([MarketSnapshotStep(book, CandleStore(feed), feed, clock),
                          DecideStep(decisions, broker, settings.risk), RiskStep(broker, bus),
                          ExecuteStep(broker), PnLStep(broker)], clock, bus)

    monitor = LoopMonitor(interval=0.005, warn_after=0.1)
    task = asyncio.create_task(monitor.run())
    while monitor.stats.samples < 3:
        await asyncio.sleep(0.005)
    monitor.reset()
    summary = await cycle("manual")
    await asyncio.sleep(0.02)  # one more sample after the cycle's last step
    task.cancel()
    await decisions.aclose()
    await runner.cleanup()
    return {"max_lag": monitor.stats.max_lag, "samples": monitor.stats.samples,
            "traders": summary.get("traders"), "valid": summary.get("valid"),
            "status": summary.get("status")}


if __name__ == "__main__":
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    print(json.dumps(asyncio.run(main("--no-warm-up" not in sys.argv))))
