"""The leaderboard: pure rows from the accounts (Sharpe from `engine.paper.stats`), a text table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.paper.accounts import Account


def _pct(part: float, whole: float) -> float | None:
    return part / whole * 100 if whole else None


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def row(account: Account, marks: Mapping[str, float], now: float) -> dict[str, Any]:
    """Return one trader's leaderboard row."""
    st = account.state
    equity = account.equity(marks)
    cap = account.capital
    if st.stopped:
        status = "stopped"
    elif st.suspended_until is not None and now < st.suspended_until:
        status = "suspended"
    else:
        status = "active"
    drawdown = (st.peak_equity - equity) / st.peak_equity * 100 if st.peak_equity > 0 else 0.0
    return {
        "trader": account.trader,
        "equity": round(equity, 2),
        "return_pct": _r(_pct(equity - cap, cap), 3),
        "net_return_pct": _r(_pct(equity - st.llm_cost - cap, cap), 3),
        "realized_pnl": round(account.realized_pnl, 2),
        "unrealized_pnl": round(account.unrealized(marks), 2),
        "fees": round(account.fees, 2),
        "funding": round(account.funding, 2),
        "llm_cost": round(st.llm_cost, 4),
        "trades": st.trades,
        "wins": st.wins,
        "win_rate": _r(_pct(st.wins, st.trades), 1),
        "drawdown_pct": round(max(drawdown, 0.0), 2),
        "max_drawdown_pct": round(max(st.max_drawdown_pct, drawdown, 0.0), 2),
        "sharpe": _r(st.returns.sharpe()),
        "invalid_rate": _r(_pct(st.invalid, st.decisions), 1),
        "hold_rate": _r(_pct(st.holds, st.decisions), 1),
        "latency_cost": round(st.latency_cost, 2),
        "liquidations": st.liquidations,
        "open_positions": len(account.positions),
        "status": status,
    }


def build_rows(accounts: Iterable[Account], marks: Mapping[str, float],
               now: float) -> tuple[dict[str, Any], ...]:
    """Return every trader's row, best return first, each with its rank."""
    rows = sorted((row(a, marks, now) for a in accounts),
                  key=lambda r: (-(r["return_pct"] or 0.0), r["trader"]))
    return tuple({"rank": i, **r} for i, r in enumerate(rows, 1))


_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (header, key, format)
    ("#", "rank", "d"),
    ("trader", "trader", "s"),
    ("equity", "equity", ",.2f"),
    ("ret%", "return_pct", "+.2f"),
    ("net%", "net_return_pct", "+.2f"),
    ("realized", "realized_pnl", "+,.2f"),
    ("unreal", "unrealized_pnl", "+,.2f"),
    ("fees", "fees", ",.2f"),
    ("funding", "funding", "+,.2f"),
    ("llm$", "llm_cost", ".2f"),
    ("trades", "trades", "d"),
    ("win%", "win_rate", ".0f"),
    ("maxDD%", "max_drawdown_pct", ".1f"),
    ("sharpe", "sharpe", "+.2f"),
    ("inval%", "invalid_rate", ".0f"),
    ("hold%", "hold_rate", ".0f"),
    ("latency", "latency_cost", "+,.2f"),
    ("pos", "open_positions", "d"),
    ("status", "status", "s"),
)


def render_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Render leaderboard rows as a fixed-width text table for the console."""
    cells = [[h for h, _, _ in _COLUMNS]]
    for r in rows:
        line = []
        for _, key, fmt in _COLUMNS:
            value = r.get(key)
            line.append("-" if value is None else format(value, fmt))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS))]
    out = []
    for n, line in enumerate(cells):
        parts = [c.ljust(w) if _COLUMNS[i][2] == "s" else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
