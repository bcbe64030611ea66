"""`run.py backtest --windows N`: walk-forward windows, pooled results and the PBO.

The period [--from, --to) is split into N consecutive windows of equal length; each is a fresh
arena (its own run, report and source hash) with the same traders (the variants). After the last
window the command prints, and writes to `<report.dir>/walkforward-<from>-<N>w.md`, each window's
return per variant, each variant's pooled result (compounded return and the Sharpe of every
per-cycle return) and, with at least 3 variants and an even N of at least 4, the Probability of
Backtest Overfitting by CSCV (engine.paper.pbo states the conventions). A window that fails stops
the walk with its exit code.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.paper.pbo import described, pbo, pooled, withheld
from engine.settings import Secrets, Settings

RunWindow = Callable[..., Awaitable[tuple[int, Any]]]


def bounds(start: float, end: float, n: int) -> list[tuple[float, float]]:
    """Return N consecutive windows of equal length covering [start, end) (whole seconds)."""
    step = (end - start) / n
    edges = [start + round(i * step) for i in range(n)] + [end]
    return list(itertools.pairwise(edges))


async def run_windows(settings: Settings, secrets: Secrets, args: argparse.Namespace,
                      now: float, speed: float | None, run_window: RunWindow) -> int:
    """Run every window (`run_window`: engine.app.backtest's), then report per window, pooled
    and the PBO; return the exit code."""
    windows = bounds(args.start, args.end, args.windows)
    results: list[dict[str, list[float]]] = []
    returns_pct: list[dict[str, float]] = []
    for i, (start, end) in enumerate(windows, 1):
        print(f"backtest: window {i}/{len(windows)}: {_iso(start)} to {_iso(end)} UTC",
              flush=True)
        code, engine = await run_window(settings, secrets, args, start, end, now, speed)
        if code != 0:
            print(f"backtest: window {i} ended with exit code {code}; walk-forward stopped",
                  flush=True)
            return code
        accounts = engine.broker.accounts
        results.append({t: [float(r) for r in acc.state.returns.series()]
                        for t, acc in accounts.items()})
        returns_pct.append({t: float(engine.broker.account_view(t)["return_pct"])
                            for t in accounts})
    text = summary(windows, results, returns_pct)
    print(text, flush=True)
    out = Path(settings.report.dir) / f"walkforward-{_stamp(args.start)}-{len(windows)}w.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    print(f"backtest: walk-forward report {out}", flush=True)
    return 0


def summary(windows: list[tuple[float, float]], results: list[dict[str, list[float]]],
            returns_pct: list[dict[str, float]]) -> str:
    """Return the walk-forward report (Markdown): per window, pooled, PBO."""
    variants = sorted({v for w in results for v in w})
    lines = ["# Walk-forward", "", "## Return % per window", "",
             "| window | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for (start, end), ret in zip(windows, returns_pct, strict=True):
        cells = [f"{ret[v]:+.3f}" if v in ret else "-" for v in variants]
        lines.append(f"| {_iso(start)} to {_iso(end)} | " + " | ".join(cells) + " |")
    lines += ["", "## Pooled per variant", "", "| variant | return % | Sharpe per cycle | cycles |",
              "|---|---|---|---|"]
    for v, p in pooled(results).items():
        lines.append(f"| {v} | {p['return_pct']:+.3f} | {p['sharpe']:+.4f} | "
                     f"{int(p['cycles'])} |")
    lines += ["", "## Probability of backtest overfitting (CSCV)", ""]
    result = pbo(results)
    lines.append(withheld(len(variants), len(windows)) if result is None
                 else described(result, len(windows)))
    return "\n".join(lines)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M")
