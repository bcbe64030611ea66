"""The report as text: the same tables rendered as Markdown and as one self-contained HTML file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from engine.paper.leaderboard import UNRANKED
from engine.report.figures import RunFigures, TraderFigures, null_trader
from engine.report.svg import equity_chart


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def num(value: float | None, fmt: str = ",.2f", suffix: str = "") -> str:
    """Format a figure; '-' when it is undefined."""
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def span(ci: Any, fmt: str = "+.2f") -> str:
    return "-" if not ci else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    d, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:d}h{m:02d}m{s:02d}s"


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_facts(f: RunFigures) -> list[tuple[str, str]]:
    """Return the run's identity and settings as (label, value) pairs."""
    run = f.run
    return [
        ("run", str(run["run_id"])),
        ("mode", str(run.get("mode") or "-")),
        ("source", str(run.get("source") or "-")),
        ("settings hash", str(run["settings_hash"])),
        ("version", str(run["version"])),
        ("started", when(f.started_at)),
        ("duration", duration(f.duration_s)),
        ("cycles", f"{f.cycles_ok} ok of {f.cycles}"),
        ("fresh arena", "yes" if run["fresh"] else "no"),
        ("dry run", "yes" if run["dry_run"] else "no"),
    ]


def _rules(t: TraderFigures) -> str:
    return ", ".join(f"{rule} x{n}" for rule, n in t.top_rules) or "-"


def _why(t: Any, text: str) -> str:
    """Return a figure, or why it is withheld ("needs 30 returns, has 18") instead of "-"."""
    return str(t.stats.get("withheld") or text) if text == "-" else text


def _model(t: TraderFigures, marks: dict[str, Any]) -> str:
    """Return the model, labelled with its memory exposure (and blind) in a backtest."""
    m = marks.get(t.trader)
    if not m:
        return t.model
    return f"{t.model} [{m['exposure']} exposure{', blind' if m.get('blind') else ''}]"


def exposure_table(f: RunFigures) -> Table | None:
    """Return the backtest's memory-exposure table (None when the run has no labels)."""
    marks: dict[str, Any] = f.run.get("labels") or {}
    if not marks:
        return None
    rows = tuple((name, str(m.get("model")), str(m.get("cutoff")), str(m.get("exposure")),
                  "yes" if m.get("blind") else "no") for name, m in marks.items())
    return Table("Memory exposure", ("trader", "model", "training cutoff", "exposure", "blind"),
                 rows, "Exposure of the window to each model's training data: none (the window "
                 "starts after the cutoff day), partial (the cutoff day ends inside the window), "
                 "full (the window ends before it does), unknown (no cutoff known). Blind: the "
                 "prompts had no dates, clock times, real symbols or real price levels.")


def blind_table(f: RunFigures) -> Table | None:
    """Return each blind twin's result against its plain twin's (--blind-and-plain), or None."""
    marks: dict[str, Any] = f.run.get("labels") or {}
    by = {t.trader: t for t in f.traders}
    rows = []
    for name, m in marks.items():
        plain = by.get(str(m.get("plain")))
        blind = by.get(name)
        if plain is None or blind is None:
            continue
        rows.append((str(m.get("model")), plain.trader, num(plain.return_pct, "+.3f"),
                     blind.trader, num(blind.return_pct, "+.3f"),
                     num(plain.return_pct - blind.return_pct, "+.3f")))
    if not rows:
        return None
    return Table("Blind vs plain", ("model", "plain", "return %", "blind", "return %",
                                    "plain - blind (pp)"), tuple(rows),
                 "The same model on the same window, once with dates, symbols and prices and "
                 "once blind: the difference estimates what memory of the window adds (one "
                 "window: read it with its CIs in the leaderboard).")


def tables(f: RunFigures) -> list[Table]:
    """Return the report's tables: leaderboard, trading, decisions (and memory exposure)."""
    ts = f.traders
    marks: dict[str, Any] = f.run.get("labels") or {}
    null = null_trader(f)
    board = tuple(
        (UNRANKED if t.stats.get("rank") is None else str(t.stats["rank"]), t.trader,
         _model(t, marks),
         num(t.coverage * 100 if t.coverage is not None else None, ".0f"),
         num(t.end_equity), num(t.return_pct, "+.3f"),
         _why(t, span(t.stats.get("return_ci"), "+.3f")), num(t.max_drawdown_pct, ".2f"),
         _why(t, num(t.stats.get("sharpe"))), _why(t, span(t.stats.get("sharpe_ci"))),
         _why(t, num(t.stats.get("sortino"))),
         _why(t, num(t.stats.get("p_beats_next"), ".2f")) if i < len(ts) else "-",
         _why(t, num(t.stats.get("deflated_sharpe"), ".2f")),
         _why(t, num(t.stats.get("p_beats_random"), ".2f")) if t.trader != null else "-")
        for i, t in enumerate(ts, 1))
    trading = tuple(
        (t.trader, str(t.trades), num(t.win_rate_pct, ".1f"), num(t.biggest_win, "+,.2f"),
         num(t.biggest_loss, "+,.2f"), duration(t.avg_holding_s), str(t.fills), num(t.fees),
         num(t.funding, "+,.2f"), num(t.latency_cost, "+,.2f"))
        for t in ts)
    deciding = tuple(
        (t.trader, str(t.decisions), f"{t.tokens:,}", num(t.llm_cost_usd, ",.4f"),
         str(t.cache_hits), num(t.cache_saved_usd, ",.4f"),
         num(t.invalid_pct, ".1f"), num(t.hold_pct, ".1f"), num(t.cooldown_pct, ".1f"),
         _rules(t))
        for t in ts)
    return [
        Table("Leaderboard",
              ("#", "trader", "model", "coverage %", "equity", "return %", "95% CI", "max DD %",
               "Sharpe", "Sharpe 95% CI", "Sortino", "P(beats next)", "deflated Sharpe",
               "P(beats random)"), board,
              "# = 1 + the traders that beat it with P >= 0.95 (shared ranks); \u2013: coverage "
              "(cycles with a valid decision of its own) below leaderboard.min_coverage, ranked "
              "apart. Return against starting capital. CIs: stationary block bootstrap over the "
              "per-cycle equity returns (2,000 resamples, block length chosen from the data). "
              "P(beats next): paired bootstrap of the total return against the trader listed "
              "below. Deflated Sharpe: probability the Sharpe beats the best of that many "
              "unskilled traders (multiple-comparison correction). P(beats random): against the "
              "trader of strategy random (the null). A withheld figure says why (needs N returns, "
              "has n)."),
        Table("Trading",
              ("trader", "trades", "win %", "biggest win", "biggest loss", "avg holding",
               "fills", "fees", "funding", "latency cost"), trading,
              "A trade is a position closed completely; its result nets realized PnL, fees and "
              "the funding paid on it. Funding > 0 paid. Latency cost > 0: USDT lost to price "
              "moves between the cycle's snapshot and the fill."),
        Table("Decisions",
              ("trader", "decisions", "LLM tokens", "LLM $", "cache hits", "saved $",
               "invalid %", "hold %",
               "cool-down %", "most refused by"), deciding,
              "Hold: an answer with no action but hold (invalid answers included). Cool-down: "
              "turns skipped while the trader cooled down after repeated failures. Cache hits: "
              "answers served by the LLM answer cache; saved $: what they would have cost."),
        *((exposure,) if (exposure := exposure_table(f)) is not None else ()),
        *((blind,) if (blind := blind_table(f)) is not None else ()),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(f: RunFigures) -> str:
    """Return the report as Markdown."""
    lines = [f"# Run report: {f.run['run_id']}", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in run_facts(f)]
    for t in tables(f):
        lines += ["", f"## {t.title}", "", "| " + " | ".join(t.headers) + " |",
                  "|" + "|".join("---" for _ in t.headers) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
        if t.note:
            lines += ["", t.note]
    lines += ["", "The equity curves are in the HTML report.", ""]
    return "\n".join(lines)


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1280px;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.name { text-align: left; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dt { font-weight: 600; } dd { margin: 0; font-family: monospace; }
p.note { color: #555; max-width: 60em; }
"""


def html(f: RunFigures) -> str:
    """Return the report as one self-contained HTML page (inline CSS and SVG, no script)."""
    title = f"Run report: {f.run['run_id']}"
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(title)}</title>",
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<style>{_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>", "<dl>"]
    parts += [f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in run_facts(f)]
    parts += ["</dl>", "<h2>Equity</h2>", equity_chart(f.traders)]
    for t in tables(f):
        parts.append(f'<h2>{escape(t.title)}</h2><table id="{t.title.lower()}"><thead><tr>')
        parts += [f"<th>{escape(h)}</th>" for h in t.headers]
        parts.append("</tr></thead><tbody>")
        left = {i for i, h in enumerate(t.headers) if h in ("trader", "model", "most refused by")}
        for row in t.rows:
            parts.append("<tr>" + "".join(
                f'<td class="name">{escape(c)}</td>' if i in left else f"<td>{escape(c)}</td>"
                for i, c in enumerate(row)) + "</tr>")
        parts.append("</tbody></table>")
        if t.note:
            parts.append(f'<p class="note">{escape(t.note)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)
