"""The prompt every LLM trader gets: deterministic bytes and their sha256.

The system prompt holds the rules and depends only on settings (and the symbol filters fixed at
start), so providers can cache it. Its actions, answer schema and limits are generated from the
same sources the validator and the risk manager use (`engine.decision`, `RiskSettings`,
`engine.paper.risk.RULES`, the broker's fee, slippage and filters), so they cannot drift apart.
A trader may bring its own template file (`[[traders]] prompt_template`); every template must
keep the `{actions}`, `{rules}` and `{answer}` placeholders, which carry every number.

The user prompt holds this cycle's market snapshot, the trader's account, positions (with its own
reason for opening each), recent trades, last cycle's refusals and its previous decisions (each
action marked when it was refused), as JSON with sorted keys and numbers rounded to fixed
significant digits. Nothing reads the wall clock: the same inputs always give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.clock import to_datetime
from engine.decision import ACTION_HELP, ACTIONS, answer_schema
from engine.paper.risk import RULES
from engine.settings import BrokerSettings, RiskSettings

SIGNIFICANT_DIGITS = 8
QUOTE_FIELDS = ("price", "bid", "ask", "last", "mark", "index", "next_funding_time",
                "change_pct", "high_24h", "low_24h", "volume_24h", "quote_volume_24h")

ANSWER_SCHEMA: dict[str, Any] = answer_schema()
ANSWER_TOOL = "submit_decision"
DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "default.txt"
PLACEHOLDERS = ("actions", "rules", "answer")

_EXAMPLE = {"actions": [{"symbol": "BTCUSDT", "action": "open_long", "size_usdt": 2000,
                         "leverage": 3, "stop_loss": 95000, "take_profit": 104000,
                         "confidence": 0.62, "reason": "Uptrend on 4h, RSI not overbought."}]}

# One line per risk setting, in the words the prompt uses; a RiskSettings field missing here
# fails tests/traders/test_schema.py, so a new limit cannot stay unknown to the models.
RISK_LINES: dict[str, str] = {
    "max_leverage": "Leverage: integer from 1 to {v}.",
    "max_position_pct": "One position's notional at most {v} % of your equity.",
    "max_total_exposure_pct": "All positions' notional together at most {v} % of equity.",
    "max_open_positions": "At most {v} open positions.",
    "min_stop_distance_pct": "Stop-loss and take-profit at least {v} % away from the price they"
                             " trigger on (bid for a long, ask for a short), on the correct side.",
    "daily_loss_limit_pct": "A daily loss of {v} % of equity (since 00:00 UTC) suspends your"
                            " opens until the next 00:00 UTC.",
    "max_drawdown_pct": "A drawdown of {v} % from your peak equity stops your opens for good.",
}


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    user: str
    hash: str
    symbols: tuple[str, ...] = ()  # the allowed symbols: the answer schema's enum


def number(x: Any) -> Any:
    """Return `x` rounded to fixed significant digits (None for NaN/inf; non-floats unchanged)."""
    if isinstance(x, bool) or not isinstance(x, float | int):
        return x
    if isinstance(x, int):
        return x
    if not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    digits = SIGNIFICANT_DIGITS - math.floor(math.log10(abs(x))) - 1
    return round(x, digits) + 0.0  # + 0.0 turns -0.0 into 0.0


def is_time_key(key: str) -> bool:
    """Return True for keys holding epoch seconds (shown to the model as ISO UTC)."""
    return key in ("ts", "time", "updated") or key.endswith(("_time", "_at", "_ts", "_until"))


def iso(ts: float) -> str:
    """Return epoch seconds as an ISO-8601 UTC string with second precision."""
    return to_datetime(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean(value: Any) -> Any:
    """Return `value` as JSON-able data: floats rounded by `number`, times as ISO UTC."""
    if isinstance(value, Mapping):
        return {str(k): (iso(v) if is_time_key(str(k)) and _finite(v) else clean(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float | int) and not isinstance(value, bool):
        return number(value)
    if value is None or isinstance(value, str | bool):
        return value
    return str(value)


def _finite(v: Any) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v)


def dumps(value: Any) -> str:
    """Return deterministic compact JSON text of `value`."""
    return json.dumps(clean(value), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), allow_nan=False)


def plain(x: float) -> str:
    """Return a number without scientific notation (0.00005, never 5e-05)."""
    text = format(number(float(x)), ".12f").rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


# ---------------------------------------------------------------- the system prompt


def trading_terms(broker: BrokerSettings, filter_for: Callable[[str], Any],
                  symbols: Iterable[str], funding_interval_hours: float = 8.0) -> dict[str, Any]:
    """Return the costs and filters the broker holds an order to, for the prompt."""
    filters = {}
    for s in sorted(symbols):
        f = filter_for(s)
        filters[s] = {"min_notional": f.min_notional, "step_size": f.step_size,
                      "tick_size": f.tick_size}
    return {"taker_fee": broker.taker_fee, "slippage_bps": broker.slippage_bps,
            "impact_bps": broker.impact_bps, "impact_notional": broker.impact_notional,
            "funding_interval_hours": funding_interval_hours, "filters": filters}


@lru_cache(maxsize=64)
def load_template(path: str | Path | None = None) -> str:
    """Return a system-prompt template; raise ValueError when it lacks a required placeholder."""
    path = Path(path) if path else DEFAULT_TEMPLATE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"prompt template {str(path)!r} cannot be read: {exc}") from None
    missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in text]
    if missing:
        raise ValueError(f"prompt template {str(path)!r} lacks "
                         f"{', '.join('{' + p + '}' for p in missing)}")
    return text


def actions_text() -> str:
    """Return the list of actions, one line each, from the answer schema's own list."""
    return "\n".join(["Actions (one per symbol you act on):",
                      *(f"- {a}: {ACTION_HELP[a]}." for a in ACTIONS)])


def rules_text(symbols: Iterable[str], risk: RiskSettings,
               terms: Mapping[str, Any] | None = None) -> str:
    """Return every limit, cost and filter the risk manager and broker apply, with its number."""
    symbols = sorted(symbols)
    lines = [
        "Rules (the risk manager refuses an action that breaks one):",
        f"- Allowed symbols: {', '.join(symbols)}. Any other symbol makes the whole answer"
        " invalid.",
        "- Symbols listed as stale have no fresh price: do not act on them.",
        *(f"- {RISK_LINES[k].format(v=plain(getattr(risk, k)))}" for k in RISK_LINES),
        "- A suspended or stopped trader may still close positions and move stops.",
    ]
    if terms:
        fee_pct = plain(terms["taker_fee"] * 100)
        lines += [
            "Costs:",
            f"- Every fill (open, add, reduce, close, stop-loss, take-profit) pays a taker fee of"
            f" {fee_pct} % of its notional.",
            "- Market orders fill at the ask (buys) or bid (sells) moved"
            f" {plain(terms['slippage_bps'])} basis points against you, price rounded to the tick"
            " against you.",
            *([f"- Larger orders slip more: plus {plain(terms['impact_bps'])} basis points x"
               f" sqrt(notional / {plain(terms['impact_notional'])} USDT)."]
              if terms.get("impact_bps") else []),
            f"- Funding is settled every {plain(terms['funding_interval_hours'])} h at the"
            " next_funding_time shown per symbol: a long pays "
            + ("the rate settled then (funding_rate_pct is the last settled rate, not that one)"
               if terms.get("funding_rate") == "last_settled" else "funding_rate_pct")
            + " % of its notional when it is > 0 (a short receives it), and the reverse when it"
            " is < 0.",
            "- An open needs initial margin (notional / leverage) plus the fee in free cash.",
            "Symbol filters (quantity = size_usdt / price rounded DOWN to step_size; an open whose"
            " rounded notional is below min_notional USDT is refused):",
            *(f"- {s}: min_notional {plain(f['min_notional'])} USDT, step_size"
              f" {plain(f['step_size'])}, tick_size {plain(f['tick_size'])}"
              for s, f in sorted(terms["filters"].items())),
        ]
    lines += [f"Refusals name one rule: {', '.join(RULES)}. Last cycle's refusals are"
              " reported back to you with the rule and its detail."]
    return "\n".join(lines)


def answer_text(symbols: Iterable[str] = ()) -> str:
    """Return how to answer: the JSON schema on `symbols` and an example."""
    return "\n".join([
        f"Answer with JSON only (via the {ANSWER_TOOL} tool when it is offered), matching this"
        " JSON schema:",
        schema_text(symbols),
        "Example answer:",
        json.dumps(_EXAMPLE, sort_keys=True, separators=(",", ":")),
        "Every field is required: use null for fields that do not apply. Numbers are JSON"
        " numbers (confidence from 0 to 1, leverage an integer). At most one action per symbol."
        " An empty actions list means hold everything.",
    ])


def schema_text(symbols: Iterable[str] = ()) -> str:
    """Return the answer schema on `symbols` exactly as the prompt prints it."""
    return json.dumps(answer_schema(symbols), sort_keys=True, separators=(",", ":"))


def system_prompt(symbols: Iterable[str], risk: RiskSettings,
                  terms: Mapping[str, Any] | None = None, template: str | None = None) -> str:
    """Return the rules: actions, allowed symbols, limits, costs, filters and the schema."""
    text = template if template is not None else load_template()
    symbols = sorted(symbols)
    parts = {"actions": actions_text(), "rules": rules_text(symbols, risk, terms),
             "answer": answer_text(symbols)}
    for name, part in parts.items():  # plain replacement: a template may hold other braces
        text = text.replace("{" + name + "}", part)
    return text.rstrip("\n")


# ---------------------------------------------------------------- the user prompt


def _symbol_view(sym: Any) -> dict[str, Any]:
    out = {f: getattr(sym, f, None) for f in QUOTE_FIELDS}
    rate: Any = getattr(sym, "funding_rate", None)
    out["funding_rate_pct"] = round(rate * 100, 6) + 0.0 if _finite(rate) else None
    indicators = getattr(sym, "indicators", None) or {}
    out["indicators"] = {tf: dict(values) for tf, values in indicators.items()}
    closes = getattr(sym, "recent_closes", None) or {}
    out["recent_closes"] = {tf: list(values) for tf, values in closes.items()}
    return out


def _lines(title: str, rows: Iterable[Any]) -> list[str]:
    rows = list(rows)
    return [f"## {title}" + ("" if rows else ": none"), *(dumps(r) for r in rows)]


class _MarketLines:
    """The market lines of the last snapshot shown: every trader of a cycle gets the same
    snapshot (frozen), so its lines are made once a cycle, not once a trader."""

    def __init__(self) -> None:
        self._last: tuple[Any, list[str]] = (None, [])  # (snapshot, its lines), swapped whole

    def __call__(self, snap: Any, stale: list[str]) -> list[str]:
        shown, lines = self._last
        if snap is not shown:
            symbols = getattr(snap, "symbols", {}) or {}
            lines = [f"{name} {dumps(_symbol_view(symbols[name]))}"
                     for name in sorted(symbols) if name not in stale]
            self._last = (snap, lines)
        return lines


_market_lines = _MarketLines()


def user_prompt(ctx: Any) -> str:
    """Return this cycle's user prompt for `ctx` (a TraderContext)."""
    snap = ctx.snapshot
    stale = sorted(set(getattr(snap, "stale", ()) or ()))
    market = _market_lines(snap, stale)
    hours = (ctx.terms or {}).get("funding_interval_hours")
    interval = f"the {plain(hours)} h funding interval" if hours else "one funding interval"
    settled = (ctx.terms or {}).get("funding_rate") == "last_settled"
    lines = [
        f"Cycle {ctx.cycle_id} at {iso(snap.ts)}. You are trader {ctx.trader}.",
        "Prices in USDT, percentages in %, times in UTC. price is the reference (mark) price;"
        " bid/ask are what you buy and sell at; last is the latest trade.",
        f"funding_rate_pct: the last settled rate: % of the notional longs paid (shorts received;"
        f" the reverse when < 0) per {interval} at the last funding time; the rate settled at"
        " next_funding_time is not known yet." if settled else
        f"funding_rate_pct: % of the notional paid by longs (received by shorts; the reverse"
        f" when < 0) per {interval}, settled at next_funding_time.",
        "Indicators per timeframe (ema20, ema50, sma20, rsi14, macd, macd_signal, macd_hist,"
        " atr14, bb_upper/bb_mid/bb_lower, close) and recent_closes (oldest first) use closed"
        " candles only: the unfinished candle of every timeframe is left out, and"
        " closed_until is the close time of the newest candle used.",
        "",
        "## Market (one line per symbol)",
        *market,
        f"## Stale symbols, do not trade: {', '.join(stale) if stale else 'none'}",
        "",
        "## Your account",
        dumps(dict(ctx.account)),
        "",
        *_lines("Your open positions (with the reason you gave when opening; follow or revise"
                " your plan)", (dict(p) for p in ctx.positions)),
        "",
        *_lines("Your recent trades", (dict(f) for f in ctx.recent_fills)),
        "",
        *_lines("Refused last cycle (rule: detail); nothing of these was executed",
                (dict(r) for r in ctx.extra.get("refusals") or ())),
        "",
        *_lines("Your previous decisions (an action marked refused was not executed)",
                (dict(d) for d in ctx.previous_decisions)),
    ]
    notes = ctx.extra.get("prompt_notes")
    if notes:
        lines += ["", "## Notes", *(str(n) for n in notes)]
    lines += ["", "Decide now. Answer with the JSON object only."]
    return "\n".join(lines)


def prompt_hash(system: str, user: str) -> str:
    """Return the sha256 hex digest of a system + user prompt pair."""
    h = hashlib.sha256()
    h.update(system.encode())
    h.update(b"\x00")
    h.update(user.encode())
    return h.hexdigest()


def build_prompt(ctx: Any, template: str | None = None) -> Prompt:
    """Return the system and user prompt for `ctx` (with `template`, else the default)."""
    symbols = getattr(ctx.snapshot, "symbols", {}) or {}
    system = system_prompt(symbols.keys(), ctx.risk, getattr(ctx, "terms", None), template)
    user = user_prompt(ctx)
    return Prompt(system=system, user=user, hash=prompt_hash(system, user),
                  symbols=tuple(sorted(symbols)))
