"""Blind prompts: no calendar date or clock time, no real symbol, no real price level.

A blind trader (`blind = true` in its `[[traders]]` entry; `run.py backtest --blind`) sees the
prompt the others see, rewritten by one `Blind` per run:

- times relative to now (`t-5m`, `t+2h`, `t-3d`) instead of ISO dates and clock times; cycle ids
  (which begin with their UTC time) become the time of their cycle, `t-15m`;
- every symbol renamed `ASSET_A`, `ASSET_B`... in an order drawn at random for the run;
- every price-denominated number of a symbol (prices, bid/ask, EMA, SMA, MACD, ATR, Bollinger
  bands, closes, stop-loss, take-profit, entry and liquidation prices, tick size) multiplied by a
  hidden factor k of that symbol, and every quantity (qty, volume, step size) divided by it, so
  notional / quantity never shows the real price; dimensionless numbers (RSI, returns, funding
  rates) and USDT amounts stay as they are. Each k puts the symbol's first price at a level at
  least 3x away from every real price of the run;
- the risk manager's refusal details (which quote real prices) reduced to the rule's name.

The model's answer names aliases and blind prices: `unblind` maps symbols back and divides its
stop-loss and take-profit by k, so the broker, the database and the report stay in real units.

The leak audit (`audit`) scans every blind prompt, system and user, before it is sent: an ISO or
compact date, a month and year, a clock time (HH:MM), an epoch timestamp in seconds or
milliseconds, a real symbol or base asset (BTCUSDT, BTC), or a real price level (any number of
4+ significant digits of the plain prompt's price fields, or within 0.01 % of a real quote)
is a leak: `BlindLeak` is raised, the prompt is not sent and the run is stopped.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.decision import Decision

PRICE_KEYS = frozenset({
    "price", "bid", "ask", "last", "mark", "index", "high_24h", "low_24h", "ema20", "ema50",
    "sma20", "macd", "macd_signal", "macd_hist", "atr14", "bb_upper", "bb_mid", "bb_lower",
    "close", "open", "high", "low", "recent_closes", "entry_price", "exit_price", "stop_loss",
    "take_profit", "liquidation_price", "ref_price", "tick_size"})
QUANTITY_KEYS = frozenset({"qty", "quantity", "volume", "volume_24h", "step_size", "bid_qty",
                           "ask_qty"})
TIME_KEYS = frozenset({"ts", "opened_at", "closed_at", "suspended_until"})
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?")
_CYCLE = re.compile(r"\b(\d{8}T\d{6}Z)(?:-[0-9a-f]{6})?\b")
_FILTER = re.compile(r"^- (\S+): min_notional (\S+) USDT, step_size (\S+), tick_size (\S+)(.*)$")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_LEAKS = (
    ("date", re.compile(r"\b(?:19|20)\d{2}[-/.](?:0[1-9]|1[0-2])[-/.](?:0[1-9]|[12]\d|3[01])\b")),
    ("date", re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])T")),
    ("date", re.compile(r"\b(?:January|February|March|April|May|June|July|August|September|"
                        r"October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|"
                        r"Nov|Dec)\.? (?:\d{1,2}, )?(?:19|20)\d{2}\b")),
    ("clock time", re.compile(r"(?<![\w.:])\d{1,2}:\d{2}(?::\d{2})?(?![\w:])")),
)
# Epoch seconds (2014-2033) or milliseconds; a 6-significant-digit rebased volume (ending in
# 0000) is not one.
_EPOCH = re.compile(r"(?<![\w.])(1[4-9]\d{8}(?:\d{3})?)(\.\d+)?(?![\w])")
_HEADER = re.compile(r"^Cycle \S+ at \S+\. ")


class BlindLeak(Exception):
    """A blind prompt would show a date, a clock time, an epoch, a real symbol or price."""


def relative(t: float, now: float) -> str:
    """Return `t` relative to `now`: t-40s, t-5m, t+2h, t-3d (one decimal past 10 units)."""
    d = t - now
    sign = "-" if d < 0 else "+"
    a = abs(d)
    for unit, size, upto in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 72 * 3600),
                             ("d", 86_400, math.inf)):
        if a < upto:
            v = a / size
            text = f"{v:.0f}" if v < 10 or unit == "s" else f"{v:.1f}".rstrip("0").rstrip(".")
            return "t" if text == "0" else f"t{sign}{text}{unit}"
    return "t"  # unreachable


def _sig(x: float) -> float:
    """Round a rebased number to 6 significant digits."""
    return float(f"{x:.6g}") if math.isfinite(x) and x != 0 else x


def _letters(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


class Blind:
    """One run's hidden mapping: symbol aliases and price factors; rewrites prompts and answers."""

    def __init__(self, symbols: Sequence[str], seed: int,
                 on_leak: Callable[[str], None] | None = None) -> None:
        self._rng = random.Random(seed)
        order = sorted(symbols)
        self._rng.shuffle(order)
        self.alias = {s: f"ASSET_{_letters(i)}" for i, s in enumerate(order)}
        self.real = {a: s for s, a in self.alias.items()}
        self._answered = dict(self.real)  # what a blind answer may name -> the real symbol
        self.k: dict[str, float] = {}
        self.on_leak = on_leak  # the engine's stop (fatal): the first leak ends the run
        self.leaked: str | None = None
        self.prompts = 0  # blind prompts audited and sent
        self._words = re.compile(
            r"\b(" + "|".join(sorted(map(re.escape, self.alias), key=len, reverse=True))
            + r")\b") if self.alias else None

    # ------------------------------------------------------------ the hidden factors

    def fit(self, prices: Mapping[str, float]) -> None:
        """Draw k for every symbol not fitted yet, from its first real price (`prices`)."""
        real = [p for p in prices.values() if p and p > 0 and math.isfinite(p)]
        for symbol in sorted(self.alias):
            p = prices.get(symbol)
            if symbol in self.k or not p or p <= 0 or not math.isfinite(p):
                continue
            target = self._far_level(real)
            self.k[symbol] = target / p

    def _far_level(self, real: Iterable[float]) -> float:
        """Return a level at least 3x away from every real price."""
        logs = [math.log10(p) for p in real]
        lo, hi = 1.0, 4.0
        for attempt in range(2000):
            if attempt == 1000:
                lo, hi = -3.0, 8.0
            u = self._rng.uniform(lo, hi)
            if all(abs(u - x) >= math.log10(3) for x in logs):
                return float(10 ** u)
        return float(10 ** self._rng.uniform(lo, hi))

    # ------------------------------------------------------------ prompts

    def rewrite(self, text: str, now: float) -> str:
        """Return `text` (a system or user prompt) blind: see the module docstring. Runs of
        per-symbol lines are sorted by alias (the real names' order would show through)."""
        out: list[str] = []
        run: list[str] = []
        for line in (self._line(line, now) for line in text.split("\n")):
            if self._per_symbol(line):
                run.append(line)
                continue
            out += sorted(run)
            run = []
            out.append(line)
        return "\n".join(out + sorted(run))

    def _per_symbol(self, line: str) -> bool:
        head = line.removeprefix("- ").split(" ", 1)[0].rstrip(":")
        return head in self.real

    def _line(self, line: str, now: float) -> str:
        head, _, rest = line.partition(" ")
        if head in self.alias and rest.startswith("{"):
            return f"{self.alias[head]} {self._json_text(rest, head, now)}"
        if line.startswith("{"):
            return self._json_text(line, None, now)
        m = _FILTER.match(line)
        if m and m.group(1) in self.alias:
            s, k = m.group(1), self.k.get(m.group(1), 1.0)
            return (f"- {self.alias[s]}: min_notional {m.group(2)} USDT, step_size "
                    f"{_plain(float(m.group(3)) / k)}, tick_size {_plain(float(m.group(4)) * k)}"
                    f"{m.group(5)}")
        return self._text(line, now)

    def _text(self, line: str, now: float) -> str:
        line = _HEADER.sub("Now is t. ", line)
        line = _CYCLE.sub(lambda m: self._cycle(m.group(0), now), line)
        line = _ISO.sub(lambda m: relative(_parse_iso(m.group(0)), now), line)
        line = line.replace("times in UTC", "times relative to now (t-5m: five minutes ago,"
                            " t+2h: in two hours)")
        line = line.replace("00:00 UTC", "daily reset")
        if line.startswith("## Stale symbols"):
            for s, a in self.alias.items():
                line = re.sub(rf"\b{re.escape(s)}\b", a, line)
        elif line.startswith("- Allowed symbols:"):
            line = "- Allowed symbols: " + ", ".join(sorted(self.real)) + \
                ". Any other symbol makes the whole answer invalid."
        return self._symbols_in_text(line)

    def _symbols_in_text(self, line: str) -> str:
        if self._words is None:
            return line
        return self._words.sub(lambda m: self.alias[m.group(0)], line)

    def _cycle(self, cycle_id: str, now: float) -> str:
        m = _CYCLE.match(cycle_id)
        if m is None:
            return cycle_id
        t = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        return f"cycle {relative(t, now)}"

    def _json_text(self, text: str, symbol: str | None, now: float) -> str:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return self._text(text, now)
        return json.dumps(self._value(value, symbol, now, None), sort_keys=True,
                          ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def _value(self, v: Any, symbol: str | None, now: float, key: str | None) -> Any:
        if isinstance(v, dict):
            own = v.get("symbol")
            if isinstance(own, str) and own in self.alias:
                symbol = own
            elif isinstance(own, str) and own not in self.real:
                symbol = next(iter(sorted(self.alias)), None)  # an example's symbol
            return {k: self._item(k, x, symbol, now) for k, x in v.items()}
        if isinstance(v, list):
            return [self._value(x, symbol, now, key) for x in v]
        if isinstance(v, str):
            return self._text(v, now)
        return v

    def _item(self, key: str, v: Any, symbol: str | None, now: float) -> Any:
        k = self.k.get(symbol or "", 1.0)
        if key == "symbol" and isinstance(v, str):
            return self.alias.get(v) or (self.alias[symbol] if symbol in self.alias else v)
        if key in PRICE_KEYS:
            return _scale(v, k)
        if key in QUANTITY_KEYS:
            return _scale(v, 1 / k)
        if key in TIME_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
            return relative(float(v), now)
        if key == "cycle_id" and isinstance(v, str):
            return self._cycle(v, now)
        if key in ("detail", "refused") and isinstance(v, str):
            return v.split(":", 1)[0] if key == "refused" else "(hidden in blind mode)"
        return self._value(v, symbol, now, key)

    # ------------------------------------------------------------ answers

    def symbols(self, real: Iterable[str]) -> tuple[str, ...]:
        """Return the aliases of `real` symbols: the answer schema's enum in a blind prompt."""
        return tuple(self.alias[s] for s in real if s in self.alias)

    def unblind(self, decision: Decision) -> Decision:
        """Map a blind answer back to real units: symbols, stop-loss and take-profit."""
        actions = []
        for a in decision.actions:
            symbol = self._answered.get(a.symbol, a.symbol)
            k = self.k.get(symbol, 1.0)
            update: dict[str, Any] = {"symbol": symbol}
            for name in ("stop_loss", "take_profit"):
                value = getattr(a, name)
                if value is not None:
                    update[name] = value / k
            actions.append(a.model_copy(update=update))
        return decision.model_copy(update={"actions": tuple(actions)})

    def prompt(self, ctx: Any, template: str | None = None) -> Any:
        """Return `ctx`'s blind Prompt, audited (BlindLeak on a leak: nothing is sent)."""
        from engine.traders.prompt import Prompt, build_prompt, prompt_hash

        plain = build_prompt(ctx, template)
        symbols = getattr(ctx.snapshot, "symbols", {}) or {}
        quotes: dict[str, float] = {}
        for name, sym in symbols.items():
            for field in ("mark", "bid", "ask", "last", "price"):
                value = getattr(sym, field, None)
                if isinstance(value, int | float) and value > 0 and math.isfinite(value):
                    quotes[f"{name}.{field}"] = float(value)
        self.fit({name: quotes.get(f"{name}.mark") or quotes.get(f"{name}.last")
                  or quotes.get(f"{name}.bid") or 0.0 for name in symbols})
        now = float(ctx.now)
        system, user = self.rewrite(plain.system, now), self.rewrite(plain.user, now)
        self.check(system, user, (plain.system, plain.user), quotes)
        return Prompt(system=system, user=user, hash=prompt_hash(system, user))

    # ------------------------------------------------------------ the leak audit

    def audit(self, text: str, plain: str, quotes: Mapping[str, float]) -> str | None:
        """Return the first leak in blind prompt `text` (None when clean). `plain` is the same
        prompt unblinded (its price fields are the real levels); `quotes` the real prices."""
        for what, pattern in _LEAKS:
            m = pattern.search(text)
            if m:
                return f"{what} {m.group(0)!r}"
        for m in _EPOCH.finditer(text):
            if not m.group(1).endswith("0000") or (m.group(2) or ".0").strip(".0"):
                return f"epoch timestamp {m.group(0)!r}"
        for s in self.alias:
            base = s.removesuffix("USDT") or s
            m = re.search(rf"\b{re.escape(s)}\b", text, re.IGNORECASE) or \
                re.search(rf"\b{re.escape(base)}\b", text)
            if m:
                return f"real symbol {m.group(0)!r}"
        levels = _levels(plain)
        real = [q for q in quotes.values() if q and q > 0]
        for m in _NUMBER.finditer(text):
            token = m.group(0)
            if _digits(token) < 4:
                continue
            x = abs(float(token))
            if x in levels or any(abs(x / q - 1) <= 1e-4 for q in real):
                return f"real price level {token}"
        return None

    def check(self, system: str, user: str, plain: tuple[str, str],
              quotes: Mapping[str, float]) -> None:
        """Audit both parts of a blind prompt; on a leak, stop the run and raise BlindLeak."""
        if self.leaked is not None:
            raise BlindLeak(f"an earlier prompt leaked ({self.leaked}): blind run stopped")
        for part, text in (("system", system), ("user", user)):
            leak = self.audit(text, plain[0] + "\n" + plain[1], quotes)
            if leak is not None:
                self.leaked = f"{leak} in the {part} prompt"
                if self.on_leak is not None:
                    self.on_leak(f"blind leak: {self.leaked}")
                raise BlindLeak(self.leaked)
        self.prompts += 1


def _scale(v: Any, factor: float) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        return _sig(float(v) * factor)
    if isinstance(v, list):
        return [_scale(x, factor) for x in v]
    if isinstance(v, dict):
        return {k: _scale(x, factor) for k, x in v.items()}
    return v


def _plain(x: float) -> str:
    text = format(_sig(x), ".12f").rstrip("0").rstrip(".")
    return text or "0"


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _digits(token: str) -> int:
    """Return the significant digits of a number token."""
    mantissa = token.lstrip("-").split("e")[0].split("E")[0].replace(".", "").lstrip("0")
    return len(mantissa.rstrip("0")) if "." not in token else len(mantissa)


def _levels(plain: str) -> set[float]:
    """Return every price-field value (4+ significant digits) of a plain prompt's JSON."""
    out: set[float] = set()

    def walk(v: Any, key: str | None) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, k)
        elif isinstance(v, list):
            for x in v:
                walk(x, key)
        elif key in PRICE_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
            if _digits(repr(float(v))) >= 4:
                out.add(abs(float(v)))

    for line in plain.split("\n"):
        start = line.find("{")
        if start < 0:
            continue
        try:
            walk(json.loads(line[start:]), None)
        except json.JSONDecodeError:
            continue
    return out
