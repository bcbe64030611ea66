"""The per-trader view of the live page: what each trader did since the engine started.

`TraderJournal` keeps, per trader, the last decisions (with each action's reasoning, or why the
answer was invalid), its refusals (the rule and detail), and its completed trades (with PnL),
from one bus subscription ("drop_oldest": the page never slows the engine). `add_trader_routes`
serves them with the account and positions the engine reports:

* `GET /traders` lists every configured trader with its status (a trader without an API key is
  `disabled` with detail `missing key`);
* `GET /traders/{name}` is one trader's view; a configured but disabled trader answers 200 with
  its status, an unknown name 404;
* `GET /symbols` gives each symbol's tick and step size, for the page's formatting.

`gzip` compresses every answer but the event stream when the browser accepts it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.bus import Bus
from engine.events import DecisionMade, DecisionRejected, PositionClosed

KEEP = 50  # per trader and kind
_TRADER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_MIN_GZIP_BYTES = 512


class TraderJournal:
    """Each trader's recent decisions, refusals and completed trades; `run()` until cancelled."""

    def __init__(self, bus: Bus, keep: int = KEEP) -> None:
        self._keep = keep
        self._sub = bus.subscribe("control.journal", [DecisionMade, DecisionRejected,
                                                      PositionClosed],
                                  capacity=10_000, policy="drop_oldest")
        self._kinds: dict[str, dict[str, deque[dict[str, Any]]]] = {}

    async def run(self) -> None:
        """Record events until cancelled."""
        try:
            while True:
                for event in await self._sub.get_batch(512):
                    self.record(event)
        finally:
            self._sub.close()

    def _list(self, trader: str, kind: str) -> deque[dict[str, Any]]:
        kinds = self._kinds.setdefault(trader, {})
        return kinds.setdefault(kind, deque(maxlen=self._keep))

    def record(self, event: object) -> None:
        """Remember one event under its trader."""
        if isinstance(event, DecisionMade):
            self._list(event.trader, "decisions").append({
                "ts": event.ts, "cycle_id": event.cycle_id, "model": event.model,
                "provider": event.provider, "valid": event.valid, "error": event.error,
                "actions": list(event.decision.get("actions") or ()),
                "reason": event.decision.get("reason"), "latency_ms": event.latency_ms,
                "cost_usd": event.cost_usd})
        elif isinstance(event, DecisionRejected):
            self._list(event.trader, "refusals").append({
                "ts": event.ts, "cycle_id": event.cycle_id, "symbol": event.symbol,
                "action": event.action, "rule": event.rule, "detail": event.detail})
        elif isinstance(event, PositionClosed):
            self._list(event.trader, "trades").append({
                "ts": event.ts, "symbol": event.symbol, "side": event.side, "qty": event.qty,
                "entry_price": event.entry_price, "exit_price": event.exit_price,
                "realized_pnl": event.realized_pnl, "fees": event.fees, "reason": event.reason,
                "opened_at": event.opened_at})

    def view(self, trader: str) -> dict[str, list[dict[str, Any]]]:
        """Return the trader's decisions, refusals and trades, newest first."""
        kinds = self._kinds.get(trader, {})
        return {k: list(reversed(kinds.get(k, ()))) for k in ("decisions", "refusals", "trades")}


def _statuses(target: Any) -> list[dict[str, Any]]:
    reader = getattr(target, "traders", None)
    return list(reader()) if reader is not None else []


def add_trader_routes(app: web.Application, target: Any, journal: TraderJournal,
                      respond: Callable[..., web.Response]) -> None:
    """Serve /traders, /traders/{name} and /symbols from `target` and `journal`."""

    async def traders(_: web.Request) -> web.StreamResponse:
        return respond({"traders": _statuses(target)})

    async def trader(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not _TRADER_NAME.fullmatch(name):
            return respond({"error": "bad_request",
                            "message": "trader name must be 1-40 letters, digits, '_', '.' or '-'"},
                           status=400)
        status = next((t for t in _statuses(target) if t["name"] == name), None)
        found = target.trader(name)
        if found is None:
            if status is not None:  # configured, but not trading (no API key)
                detail = f": {status['detail']}" if status.get("detail") else ""
                return respond({"name": name, **status, "message": f"{status['status']}{detail}",
                                "account": None, "positions": [], "recent_fills": [],
                                "decisions": [], "refusals": [], "trades": []})
            return respond({"error": "not_found", "message": f"unknown trader {name!r}"},
                           status=404)
        view = journal.view(name)
        extra = {k: v for k, v in (status or {}).items() if k != "name"}
        # The engine's recent decisions (prompt history) stay; the journal's carry the reasoning.
        return respond({**found, **extra, "reasoning": view["decisions"],
                        "refusals": view["refusals"], "trades": view["trades"]})

    async def symbols(_: web.Request) -> web.StreamResponse:
        reader = getattr(target, "symbols", None)
        return respond({"symbols": reader() if reader is not None else {}})

    app.router.add_get("/traders", traders)
    app.router.add_get("/traders/{name}", trader)
    app.router.add_get("/symbols", symbols)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def gzip(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Compress answers (JSON, the page, its files) for browsers that accept gzip."""
    response = await handler(request)
    if "gzip" not in request.headers.get("Accept-Encoding", "").lower():
        return response
    if isinstance(response, web.FileResponse):
        response.enable_compression(web.ContentCoding.gzip)
    elif (isinstance(response, web.Response) and isinstance(response.body, bytes)
          and len(response.body) >= _MIN_GZIP_BYTES):
        response.enable_compression(web.ContentCoding.gzip)
    return response
