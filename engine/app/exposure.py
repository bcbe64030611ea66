"""How much of a backtest's window a model may remember: its training cutoff against the window.

A model's cutoff is `training_cutoff` in its `[llm.prices."MODEL"]` entry; the cutoff day itself
counts as seen (the model may know everything up to the end of that UTC day). A trader's exposure
to a window [start, end):

- `none`: the window starts after the cutoff day ends (the model cannot have seen it);
- `partial`: the cutoff day ends inside the window (the model may have seen its beginning);
- `full`: the window ends before the cutoff day does (the model may have seen all of it);
- `unknown`: the model's cutoff is `"unknown"` or not given.

Rule-based traders remember nothing: they have no exposure entry. A backtest refuses a window a
trader is exposed to (partial, full or unknown) before anything is fetched, unless
`--allow-contamination`; blind mode does not lift this (it reduces memory, it does not remove it).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from engine.settings import Settings, TraderSettings

DAY = timedelta(days=1)


def cutoff_end(cutoff: date) -> float:
    """Return the end of the cutoff day (00:00 UTC of the day after), epoch seconds."""
    return datetime.combine(cutoff + DAY, datetime.min.time(), UTC).timestamp()


def exposure(cutoff: date | None, start: float, end: float) -> str:
    """Return a window's exposure to a model with this cutoff: none, partial, full or unknown."""
    if cutoff is None:
        return "unknown"
    seen_until = cutoff_end(cutoff)
    if start >= seen_until:
        return "none"
    return "full" if end <= seen_until else "partial"


def model_cutoff(settings: Settings, trader: TraderSettings) -> date | None:
    """Return the training cutoff of `trader`'s model (None: unknown or no models-table entry)."""
    price = settings.llm.prices.get(trader.model or "")
    return price.training_cutoff if price is not None else None


def labels(settings: Settings, start: float, end: float) -> dict[str, Any]:
    """Return each LLM trader's exposure label: model, cutoff, exposure, blind (and for a
    blind twin of `--blind-and-plain`, `plain`: the name of its plain twin)."""
    out: dict[str, Any] = {}
    for t in settings.traders:
        if t.strategy != "llm":
            continue
        cutoff = model_cutoff(settings, t)
        out[t.name] = {"model": t.model, "cutoff": cutoff.isoformat() if cutoff else "unknown",
                       "exposure": exposure(cutoff, start, end), "blind": t.blind}
        twin = t.name.removesuffix(BLIND_SUFFIX)
        if t.blind and twin != t.name and any(x.name == twin for x in settings.traders):
            out[t.name]["plain"] = twin
    return out


BLIND_SUFFIX = "-blind"  # --blind-and-plain: the blind twin of trader X is X-blind


def with_blind(settings: Settings, *, both: bool) -> Settings:
    """Return `settings` with every LLM trader blind, or (`both`) with a blind twin each."""
    traders: list[TraderSettings] = []
    for t in settings.traders:
        if t.strategy != "llm":
            traders.append(t)
        elif both:
            traders += [t, t.model_copy(update={"name": t.name + BLIND_SUFFIX, "blind": True})]
        else:
            traders.append(t.model_copy(update={"blind": True}))
    return settings.model_copy(update={"traders": tuple(traders)})


def refusal(settings: Settings, start: float, end: float) -> str | None:
    """Return the one line refusing this window, or None when no trader is exposed to it."""
    exposed = [(name, label) for name, label in labels(settings, start, end).items()
               if label["exposure"] != "none"]
    if not exposed:
        return None
    who = "; ".join(f"trader {name} ({label['model']}) has training cutoff {label['cutoff']}"
                    for name, label in exposed)
    return (f"{who}: the window {_iso(start)} to {_iso(end)} UTC starts before the cutoff is "
            "known to be past, so the model may remember it; pick a later window or pass "
            "--allow-contamination")


def summary_line(marks: dict[str, Any]) -> str:
    """Return the labels as one line: `claude none (cutoff 2025-03-01), gpt partial ...`."""
    return ", ".join(f"{name} {m['exposure']} (cutoff {m['cutoff']}"
                     f"{', blind' if m['blind'] else ''})" for name, m in marks.items()) or "-"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")
