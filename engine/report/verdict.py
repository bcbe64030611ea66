"""The arena's verdict in plain text: the final leaderboard, CIs, P(A beats B) for every pair.

Printed on stdout at the end of `run.py demo` and `run.py backtest` whatever the log format, so
a reader sees the result without parsing JSON. Figures withheld for too few per-cycle returns
say so ("needs 30 returns, has 18") where the number would be.
"""

from __future__ import annotations

from typing import Any

from engine.paper import stats
from engine.paper.leaderboard import UNRANKED
from engine.report.figures import RunFigures, TraderFigures
from engine.report.intervals import N_BOOT, withheld


def _ci(ci: tuple[float, float] | None, fmt: str) -> str:
    return "-" if not ci else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def pairwise(figures: RunFigures, min_returns: int) -> dict[tuple[str, str], float | str]:
    """Return P(A's total return > B's) for every ordered pair, or why it is withheld."""
    out: dict[tuple[str, str], float | str] = {}
    for a in figures.traders:
        for b in figures.traders:
            if a is b:
                continue
            ra, rb = dict(a.cycle_returns), dict(b.cycle_returns)
            common = sorted(set(ra) & set(rb))
            if len(common) < min_returns:
                out[(a.trader, b.trader)] = withheld(min_returns, len(common))
                continue
            p = stats.prob_beats([ra[k] for k in common], [rb[k] for k in common],
                                 n_boot=N_BOOT)
            out[(a.trader, b.trader)] = "-" if p is None else p
    return out


def _row(t: TraderFigures) -> list[str]:
    why = str(t.stats.get("withheld") or "-")
    rank = t.stats.get("rank")
    ret_ci = _ci(t.stats.get("return_ci"), "+.2f")
    sharpe = t.stats.get("sharpe")
    return [UNRANKED if rank is None else str(rank), t.trader, f"{t.end_equity:,.2f}",
            f"{t.return_pct:+.2f}",
            why if ret_ci == "-" else ret_ci,
            why if sharpe is None else f"{sharpe:.2f}",
            why if not t.stats.get("sharpe_ci") else _ci(t.stats.get("sharpe_ci"), ".2f"),
            str(t.stats.get("n_returns", len(t.cycle_returns)))]


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Return aligned lines; column `left` (the trader names) flush left, the others right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render(figures: RunFigures, *, min_returns: int) -> str:
    """Return the verdict: the leaderboard, then the matrix of P(row beats column)."""
    hours = figures.duration_s / 3600
    lines = [f"Leaderboard: {len(figures.traders)} traders over {hours:.1f} h of market, "
             f"{figures.cycles} cycles. Return against starting capital; 95% CIs: bootstrap "
             f"over the per-cycle returns ({N_BOOT:,} resamples); withheld under "
             f"{min_returns} returns. # = 1 + the traders that beat it with P >= 0.95 "
             "(shared ranks); \u2013: coverage below leaderboard.min_coverage, ranked apart."]
    rows = [_row(t) for t in figures.traders]
    lines += _table(["#", "trader", "equity", "return %", "return 95% CI", "Sharpe",
                     "Sharpe 95% CI", "returns"], rows)
    names = [t.trader for t in figures.traders]
    if len(names) > 1:
        probs = pairwise(figures, min_returns)
        lines += ["", "P(row beats column): paired bootstrap of the total return over the "
                  "cycles both traded."]
        matrix = [[a, *("" if a == b else _prob(probs[(a, b)]) for b in names)] for a in names]
        lines += _table(["", *names], matrix, left=0)
    return "\n".join(lines)


def _prob(p: float | str) -> str:
    return p if isinstance(p, str) else f"{p:.2f}"


def show(report: Any, min_returns: int, *, page_url: str | None, paths: bool) -> None:
    """Print the verdict of `report` (engine.report.files.Report; None: nothing), its paths
    when `paths`, and the page's URL when given."""
    if report is not None:
        print(render(report.figures, min_returns=min_returns), flush=True)
        if paths:
            print(f"report: {report.markdown}\nreport: {report.html}", flush=True)
    if page_url:
        print(f"page: {page_url} (the live leaderboard, served while the engine runs: "
              "`python run.py` starts it live)", flush=True)
