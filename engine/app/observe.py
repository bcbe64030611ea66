"""What an operator reads of a running engine beyond its accounts: each trader's status.

`trader_statuses` serves both the metrics collector (read at each /metrics scrape) and the
control API (a configured trader without an API key answers "disabled: missing key").
"""

from __future__ import annotations

from typing import Any

from engine.metrics import EngineView

MISSING_KEY = "missing key"


def trader_statuses(engine: Any) -> dict[str, tuple[str, str | None]]:
    """Return every configured, enabled trader's (status, detail), in settings order.

    status is active, cooldown, suspended, stopped or disabled; detail says why (the key that is
    missing, when the cool-down or suspension ends), or is None.
    """
    now = engine.clock.time()
    cooling = engine.decisions.cooling_down() if getattr(engine, "decisions", None) else {}
    accounts = getattr(engine.broker, "accounts", {}) if getattr(engine, "broker", None) else {}
    out: dict[str, tuple[str, str | None]] = {}
    for trader in engine.settings.traders:
        if not trader.enabled:
            continue
        name = trader.name
        acc = accounts.get(name)
        if name not in engine.strategies or acc is None:
            out[name] = ("disabled", MISSING_KEY if trader.strategy == "llm" else None)
        elif acc.state.stopped:
            out[name] = ("stopped", None)
        elif acc.state.suspended_until is not None and now < acc.state.suspended_until:
            out[name] = ("suspended", None)
        elif name in cooling and cooling[name] is not None and now < cooling[name]:
            out[name] = ("cooldown", None)
        else:
            out[name] = ("active", None)
    return out


def engine_view(engine: Any) -> EngineView:
    """Return the state the metrics collector exports, read now."""
    feed = engine.feed.status()
    writer = engine.writer.status() if engine.writer is not None else None
    return EngineView(
        traders={n: s for n, (s, _) in trader_statuses(engine).items()},
        paused=bool(engine.scheduler.paused),
        stale_symbols=len(feed.get("stale") or ()),
        writer=writer,
        bus=engine.bus.stats(),
    )
