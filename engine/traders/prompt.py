"""The prompt every LLM trader gets: deterministic bytes and their sha256.

The system prompt holds the rules (allowed symbols, leverage and sizing limits, the answer schema)
and depends only on settings, so providers can cache it. The user prompt holds this cycle's
market snapshot, the trader's account, positions (with its own reason for opening each), recent
trades and previous decisions as JSON with sorted keys and numbers rounded to fixed significant
digits. Nothing reads the wall clock: the same inputs always give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.clock import to_datetime
from engine.decision import ACTIONS
from engine.settings import RiskSettings

SIGNIFICANT_DIGITS = 8
QUOTE_FIELDS = ("price", "bid", "ask", "last", "mark", "index", "funding_rate", "next_funding_time",
                "change_pct", "high_24h", "low_24h", "volume_24h", "quote_volume_24h")

_NUMBER_OR_NULL = {"type": ["number", "null"]}

# One schema for all providers: Anthropic's tool input, OpenAI's strict json_schema (every key
# required, no extra keys, nullable via "null"), and the JSON described to DeepSeek.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["actions"],
    "properties": {
        "actions": {
            "type": "array",
            "description": "One entry per symbol you act on; symbols left out are held.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["symbol", "action", "size_usdt", "leverage", "stop_loss",
                             "take_profit", "confidence", "reason"],
                "properties": {
                    "symbol": {"type": "string"},
                    "action": {"type": "string", "enum": list(ACTIONS)},
                    "size_usdt": {**_NUMBER_OR_NULL,
                                  "description": "Notional in USDT (open, or partial close)."},
                    "leverage": {"type": ["integer", "null"]},
                    "stop_loss": {**_NUMBER_OR_NULL, "description": "Price."},
                    "take_profit": {**_NUMBER_OR_NULL, "description": "Price."},
                    "confidence": {"type": "number", "description": "0 to 1."},
                    "reason": {"type": "string", "description": "One or two sentences."},
                },
            },
        }
    },
}
ANSWER_TOOL = "submit_decision"

_EXAMPLE = {"actions": [{"symbol": "BTCUSDT", "action": "open_long", "size_usdt": 2000,
                         "leverage": 3, "stop_loss": 95000, "take_profit": 104000,
                         "confidence": 0.62, "reason": "Uptrend on 4h, RSI not overbought."}]}


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    user: str
    hash: str


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


def system_prompt(symbols: Iterable[str], risk: RiskSettings) -> str:
    """Return the rules: allowed symbols, limits and the answer schema."""
    symbols = sorted(symbols)
    return "\n".join([
        "You are a disciplined crypto derivatives trader competing in a paper-trading arena.",
        "You trade USDT-margined perpetual futures with your own account. Each cycle you see the",
        "market, your account, your open positions and your own recent history, and you decide,",
        "per symbol, one action: open_long, open_short, close or hold.",
        "",
        "Rules:",
        f"- Allowed symbols: {', '.join(symbols)}. Any other symbol makes the whole answer"
        " invalid.",
        "- Symbols listed as stale have no fresh price: do not act on them.",
        f"- Leverage: integer from 1 to {risk.max_leverage}.",
        f"- One position's notional (size_usdt) at most {number(risk.max_position_pct)} % of your"
        " equity;",
        f"  all positions together at most {number(risk.max_total_exposure_pct)} % of equity;"
        f" at most {risk.max_open_positions} open positions.",
        f"- Stop-loss and take-profit are prices at least {number(risk.min_stop_distance_pct)} %"
        " away from the current price, on the correct side of it.",
        "- open_long/open_short on an existing position of the same side adds to it; on the"
        " opposite side it closes it first. close without size_usdt closes the whole position;"
        " hold may update the stop_loss/take_profit of an open position.",
        f"- A daily loss of {number(risk.daily_loss_limit_pct)} % suspends you until 00:00 UTC;"
        f" a drawdown of {number(risk.max_drawdown_pct)} % from your peak stops you for good.",
        "- Every fill pays a taker fee and slippage; open positions pay or receive funding.",
        "- Actions refused by the risk manager are reported back to you next cycle.",
        "",
        f"Answer with JSON only (via the {ANSWER_TOOL} tool when it is offered), matching this"
        " JSON schema:",
        json.dumps(ANSWER_SCHEMA, sort_keys=True, separators=(",", ":")),
        "Example answer:",
        json.dumps(_EXAMPLE, sort_keys=True, separators=(",", ":")),
        "Use null for fields that do not apply. An empty actions list means hold everything.",
    ])


def _symbol_view(sym: Any) -> dict[str, Any]:
    out = {f: getattr(sym, f, None) for f in QUOTE_FIELDS}
    indicators = getattr(sym, "indicators", None) or {}
    out["indicators"] = {tf: dict(values) for tf, values in indicators.items()}
    closes = getattr(sym, "recent_closes", None) or {}
    out["recent_closes"] = {tf: list(values) for tf, values in closes.items()}
    return out


def _lines(title: str, rows: Iterable[Any]) -> list[str]:
    rows = list(rows)
    return [f"## {title}" + ("" if rows else ": none"), *(dumps(r) for r in rows)]


def user_prompt(ctx: Any) -> str:
    """Return this cycle's user prompt for `ctx` (a TraderContext)."""
    snap = ctx.snapshot
    stale = sorted(set(getattr(snap, "stale", ()) or ()))
    symbols = getattr(snap, "symbols", {}) or {}
    market = [f"{name} {dumps(_symbol_view(symbols[name]))}"
              for name in sorted(symbols) if name not in stale]
    lines = [
        f"Cycle {ctx.cycle_id} at {iso(snap.ts)}. You are trader {ctx.trader}.",
        "Prices in USDT, percentages in %, times in UTC. price is the reference (mark) price."
        " Indicators per timeframe: ema20, ema50, sma20, rsi14, macd, macd_signal, macd_hist,"
        " atr14, bb_upper/bb_mid/bb_lower, close; recent_closes per timeframe, oldest first.",
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
        *_lines("Your previous decisions", (dict(d) for d in ctx.previous_decisions)),
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


def build_prompt(ctx: Any) -> Prompt:
    """Return the system and user prompt for `ctx` and their hash."""
    symbols = getattr(ctx.snapshot, "symbols", {}) or {}
    system = system_prompt(symbols.keys(), ctx.risk)
    user = user_prompt(ctx)
    return Prompt(system=system, user=user, hash=prompt_hash(system, user))
