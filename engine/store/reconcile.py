"""Reconciliation: each recovered account checked against the arena's committed fills/funding.

The writer commits a prefix of the event stream, so a committed snapshot never lacks a fill or a
funding payment published before it. A database written by an older engine (each table flushed
on its own timer) can hold a snapshot whose fill was lost in a kill -9. At start each account's
latest snapshot is compared with the committed rows of its arena: realized PnL (sum of
`fills.realized_pnl`), fees (sum of `fills.fee`), funding (sum of `funding.amount`) and the open
positions (net signed quantity per symbol of the fills).

With the writer's prefix rule they always agree; when they do not (a database written by an older
engine, a hand edit), recovery never invents: `RecoveryRefused` stops the start, with one line
per trader naming the difference and the choices (`--fresh`, or `--accept-reconcile`). Only with
`--accept-reconcile` is the account rebuilt from the rows: those totals, the open positions (the
newest snapshot holding the same position, else its latest `positions` open row), and cash from
the ledger identity cash + margin = capital + realized - fees - funding; the risk state and
counters are the latest snapshot's. `recovery.reconciled` is logged with every difference.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import structlog

log = structlog.get_logger("store")

MONEY_TOLERANCE = 0.005  # USDT: amounts reconcile to the cent
_QTY_TOLERANCE = 1e-9
_DEFAULT_MMR = 0.004  # only when a position must be rebuilt from its open row alone


def _same_qty(a: float, b: float) -> bool:
    return abs(a - b) <= _QTY_TOLERANCE * max(1.0, abs(a), abs(b))


def _signed(positions: Any) -> dict[str, float]:
    return {p["symbol"]: (1 if p["side"] == "long" else -1) * float(p["qty"]) for p in positions}


class RecoveryRefused(Exception):
    """Stored accounts contradict their rows; `args` holds one line per trader."""


def refusal_line(trader: str, mode: str, source: str | None, diff: dict[str, Any]) -> str:
    """Return the one line naming a trader's difference and the operator's choices."""
    parts = "; ".join(f"{k}: snapshot {v['snapshot']} vs rows {v['rows']}" for k, v in diff.items())
    arena = mode if source is None else f"{mode} {source[:12]}"
    return (f"trader {trader} ({arena} arena): latest account snapshot disagrees with its "
            f"committed rows ({parts}); start with --fresh for a new arena, or "
            "--accept-reconcile to rebuild the account from the stored rows")


async def reconcile(conn: asyncpg.Connection, accounts: dict[str, dict[str, Any]],
                    in_arena: str, mode: str, source: str | None, *,
                    accept: bool = False) -> dict[str, dict[str, Any]]:
    """Check every account of `accounts` against its committed rows.

    Raise RecoveryRefused naming every contradicted account, unless `accept`: then rebuild
    them (in place) from the rows and return trader → {field: {"snapshot": value, "rows":
    value}} for the rebuilt ones.
    """
    arena = f"JOIN arena_runs($1, $2) a ON {in_arena}"
    totals = {r["trader"]: r for r in await conn.fetch(
        f"SELECT t.trader, sum(t.realized_pnl) AS realized, sum(t.fee) AS fees FROM fills t "
        f"{arena} GROUP BY t.trader", mode, source)}
    funding = {r["trader"]: r["amount"] for r in await conn.fetch(
        f"SELECT t.trader, sum(t.amount) AS amount FROM funding t {arena} GROUP BY t.trader",
        mode, source)}
    held: dict[str, dict[str, float]] = {}
    for r in await conn.fetch(
        f"SELECT t.trader, t.symbol, sum(CASE WHEN t.side = 'buy' THEN t.qty ELSE -t.qty END) "
        f"AS qty FROM fills t {arena} GROUP BY t.trader, t.symbol", mode, source):
        if not _same_qty(r["qty"], 0.0):
            held.setdefault(r["trader"], {})[r["symbol"]] = r["qty"]
    out: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for trader, snap in accounts.items():
        t = totals.get(trader)
        rows = {"realized_pnl": t["realized"] if t else 0.0, "fees": t["fees"] if t else 0.0,
                "funding": funding.get(trader) or 0.0}
        diff = {k: {"snapshot": snap[k], "rows": v} for k, v in rows.items()
                if abs(float(snap[k]) - v) > MONEY_TOLERANCE}
        want, have = held.get(trader, {}), _signed(snap["positions"])
        if set(want) != set(have) or any(not _same_qty(want[s], have[s]) for s in want):
            diff["positions"] = {"snapshot": have, "rows": want}
        if diff and not accept:
            refused.append(refusal_line(trader, mode, source, diff))
            continue
        if diff:
            accounts[trader] = await _rebuild(conn, arena, mode, source, snap, rows, want)
            out[trader] = diff
            log.warning("recovery.reconciled", trader=trader, mode=mode, source=source,
                        snapshot_id=str(snap["id"]), differences=diff)
    if refused:
        raise RecoveryRefused(*refused)
    return out


async def _rebuild(conn: asyncpg.Connection, arena: str, mode: str, source: str | None,
                   snap: dict[str, Any], totals: dict[str, float],
                   want: dict[str, float]) -> dict[str, Any]:
    trader = snap["trader"]
    positions = [await _position(conn, arena, mode, source, trader, symbol, qty)
                 for symbol, qty in sorted(want.items())]
    capital = float(snap["state"].get("capital", 0.0))
    margin = sum(float(p["margin"]) for p in positions)
    upnl = sum(float(p["unrealized_pnl"]) for p in positions)
    cash = capital + totals["realized_pnl"] - totals["fees"] - totals["funding"] - margin
    equity = cash + margin + upnl
    peak = max(float(snap["peak_equity"]), equity)
    return {**snap, **totals, "cash": cash, "margin": margin, "unrealized_pnl": upnl,
            "equity": equity, "peak_equity": peak,
            "drawdown_pct": (peak - equity) / peak * 100 if peak else 0.0,
            "return_pct": (equity - capital) / capital * 100 if capital else 0.0,
            "positions": tuple(positions), "cause": "reconciled"}


async def _position(conn: asyncpg.Connection, arena: str, mode: str, source: str | None,
                    trader: str, symbol: str, qty: float) -> dict[str, Any]:
    """Return the full state of `trader`'s open position on `symbol` of signed size `qty`."""
    side = "long" if qty > 0 else "short"
    for r in await conn.fetch(
        f"SELECT t.positions FROM account_snapshots t {arena} WHERE t.trader = $3 "
        "AND t.positions @> jsonb_build_array(jsonb_build_object('symbol', $4::text)) "
        "ORDER BY t.id DESC LIMIT 500", mode, source, trader, symbol):
        for p in orjson.loads(r["positions"]):
            if p["symbol"] == symbol and p["side"] == side and _same_qty(p["qty"], abs(qty)):
                found: dict[str, Any] = p
                return found
    opened = await conn.fetchrow(
        f"SELECT t.* FROM positions t {arena} WHERE t.trader = $3 AND t.symbol = $4 "
        "AND t.event = 'open' ORDER BY t.id DESC LIMIT 1", mode, source, trader, symbol)
    entry = opened["entry_price"] if opened else 0.0
    lp = opened["liquidation_price"] if opened else 0.0
    margin = opened["margin"] if opened else 0.0
    size = abs(qty)
    mmr = _DEFAULT_MMR
    if opened and lp and size:  # invert the isolated liquidation formula
        s = 1 if side == "long" else -1
        mmr = s * (1 - (size * entry - s * margin) / (size * lp))
    return {"symbol": symbol, "side": side, "qty": size, "entry_price": entry,
            "leverage": opened["leverage"] if opened else 1, "margin": margin,
            "maint_margin_rate": mmr, "stop_loss": opened["stop_loss"] if opened else None,
            "take_profit": opened["take_profit"] if opened else None,
            "open_reason": opened["reason"] if opened else "", "opened_at":
            opened["ts"].timestamp() if opened else 0.0, "cycle_id":
            opened["cycle_id"] if opened else None, "fees": 0.0, "funding": 0.0,
            "realized_pnl": 0.0, "liquidation_price": lp, "mark": entry, "unrealized_pnl": 0.0}
