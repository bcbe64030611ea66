"""A sweep file, read and expanded into runs: windows x variants x replicates, each with its key.

The file (TOML) has one `[sweep]` table and one or more `[[variant]]` tables:

    [sweep]
    name = "models"              # rows of sweep_runs carry it; default: the file's stem
    config = "settings.toml"     # the settings every run starts from (relative to the file)
    symbols = ["BTCUSDT"]        # default: the settings' feed.symbols
    period = { from = "2026-10-01T00:00", to = "2026-10-05T00:00" }
    windows = 4                  # the period cut into 4 consecutive windows; or a list of
                                 # { from = ..., to = ... } tables
    replicates = 1               # > 1: each run N times with the LLM answer cache bypassed
    concurrency = 0              # runs at once on this machine; 0: the number of cores
    live_llm = false             # let LLM traders call the APIs (cost estimate first)
    allow_contamination = false  # run windows an LLM trader's model may remember

    [[variant]]
    name = "claude"
    traders = ["claude"]         # trader names of the settings (default: all of them)
    model = ["claude-sonnet-4-6", "claude-haiku-4-5"]   # of its LLM traders; a list expands
    prompt_template = "default"  # into one variant per item (likewise a str or a list)
    trader = { temperature = 0.2 }   # fields set on each of the variant's traders
    params = { size_pct = 5 }        # merged into each of its traders' `params`
    settings = { "risk.max_leverage" = 3 }   # dotted overrides of any other setting

A run's key is a hash of its window, symbols, variant (name and resolved settings) and
replicate, with the settings that do not change a result left out (where history is fetched
from, where files and logs go): a finished key is never run again, and editing the file
re-runs only the runs whose key it changed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.settings import Settings, SettingsError

_NOT_IN_KEY = ("database", "report", "control", "engine", "metrics", "web", "webhooks", "alerts")
_FEED_NOT_IN_KEY = ("futures_rest_url", "futures_ws_url", "spot_rest_url", "spot_ws_url")
_GRID = ("model", "prompt_template")


class SweepError(ValueError):
    """A sweep file that cannot run; the message is the one line shown."""


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float

    @property
    def label(self) -> str:
        """Return the window as `2026-10-01T00:00..2026-10-02T00:00`."""
        return f"{iso(self.start)}..{iso(self.end)}"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    traders: tuple[str, ...] | None
    llm_fields: dict[str, Any] = field(default_factory=dict)  # model, prompt_template
    trader_fields: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One backtest of a sweep: what it runs and the raw settings it runs with."""

    key: str
    window: Window
    variant: str
    replicate: int
    raw: dict[str, Any]  # the run's settings document (validated by the worker)

    @property
    def traders(self) -> tuple[str, ...]:
        """Return the names of the run's traders."""
        return tuple(t["name"] for t in self.raw.get("traders", []))


@dataclass(frozen=True, slots=True)
class Sweep:
    name: str
    path: Path
    config: Path
    base: dict[str, Any]  # the settings document of `config`
    symbols: tuple[str, ...]
    windows: tuple[Window, ...]
    variants: tuple[Variant, ...]
    replicates: int = 1
    concurrency: int = 0
    live_llm: bool = False
    allow_contamination: bool = False  # run.py backtest's --allow-contamination, for every run

    def runs(self) -> list[RunSpec]:
        """Return every run of the sweep, window-major, in a stable order."""
        out = []
        for window in self.windows:
            for variant in self.variants:
                raw = variant_settings(self.base, variant, self.symbols)
                for rep in range(self.replicates):
                    run_raw = copy.deepcopy(raw)
                    if self.replicates > 1:  # repeats must ask the model again
                        run_raw.setdefault("llm_cache", {})["replay"] = False
                    key = run_key(window, variant.name, rep, run_raw)
                    out.append(RunSpec(key, window, variant.name, rep, run_raw))
        return out


def iso(ts: float) -> str:
    """Return `ts` as 2026-10-01T00:00 (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


def _when(value: Any, where: str) -> float:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise SweepError(f"{where}: not an ISO time like 2026-10-01T00:00: {value!r}"
                             ) from None
    else:
        raise SweepError(f"{where}: a time is a string like 2026-10-01T00:00, not {value!r}")
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _window(table: Any, where: str) -> Window:
    if not isinstance(table, dict) or set(table) != {"from", "to"}:
        raise SweepError(f"{where}: a window is {{ from = ..., to = ... }}")
    w = Window(_when(table["from"], where), _when(table["to"], where))
    if w.end <= w.start:
        raise SweepError(f"{where}: `to` must be after `from`")
    return w


def split_period(period: Window, n: int) -> tuple[Window, ...]:
    """Cut `period` into `n` consecutive windows of equal length (whole seconds)."""
    step = (period.end - period.start) / n
    edges = [round(period.start + i * step) for i in range(n)] + [period.end]
    return tuple(Window(a, b) for a, b in itertools.pairwise(edges))


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; raise SweepError with one line when it cannot run."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{path}: sweep file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    head = doc.get("sweep")
    if not isinstance(head, dict):
        raise SweepError(f"{path}: no [sweep] table")
    unknown = set(head) - {"name", "config", "symbols", "period", "windows", "replicates",
                           "concurrency", "live_llm", "allow_contamination"}
    if unknown:
        raise SweepError(f"{path}: unknown [sweep] key(s) {', '.join(sorted(unknown))}")
    config = path.parent / str(head.get("config", "settings.toml"))
    try:
        base = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SweepError(f"{path}: cannot read its settings {config}: {exc}") from None
    windows = _windows(head, path)
    symbols = tuple(head.get("symbols") or base.get("feed", {}).get("symbols") or ())
    variants = _variants(doc.get("variant"), path)
    replicates = head.get("replicates", 1)
    concurrency = head.get("concurrency", 0)
    if not isinstance(replicates, int) or replicates < 1:
        raise SweepError(f"{path}: replicates must be a whole number >= 1")
    if not isinstance(concurrency, int) or concurrency < 0:
        raise SweepError(f"{path}: concurrency must be a whole number >= 0")
    sweep = Sweep(str(head.get("name") or path.stem), path, config, base, symbols, windows,
                  variants, replicates, concurrency, bool(head.get("live_llm", False)),
                  bool(head.get("allow_contamination", False)))
    for run in sweep.runs()[:: max(1, replicates)]:  # every variant's settings must validate
        try:
            settings = Settings.model_validate(run.raw)
        except ValueError as exc:
            raise SweepError(f"{path}: variant {run.variant!r}: {_first_error(exc)}") from None
        if not sweep.allow_contamination:  # run.py backtest's guard, before anything runs
            from engine.app.exposure import refusal

            line = refusal(settings, run.window.start, run.window.end)
            if line is not None:
                line = line.replace("--allow-contamination", "allow_contamination = true")
                raise SweepError(f"{path}: variant {run.variant!r}: {line}")
    return sweep


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return str(exc)


def _windows(head: dict[str, Any], path: Path) -> tuple[Window, ...]:
    spec = head.get("windows")
    if isinstance(spec, list):
        if "period" in head:
            raise SweepError(f"{path}: give either a list of windows or a period, not both")
        if not spec:
            raise SweepError(f"{path}: windows is empty")
        return tuple(_window(w, f"{path}: windows[{i}]") for i, w in enumerate(spec))
    if "period" not in head:
        raise SweepError(f"{path}: [sweep] needs windows = [{{ from, to }}, ...] or a period")
    n = 1 if spec is None else spec
    if not isinstance(n, int) or n < 1:
        raise SweepError(f"{path}: windows must be a whole number >= 1 or a list of windows")
    return split_period(_window(head["period"], f"{path}: period"), n)


def _variants(tables: Any, path: Path) -> tuple[Variant, ...]:
    if not isinstance(tables, list) or not tables:
        raise SweepError(f"{path}: no [[variant]] table")
    out: list[Variant] = []
    for i, t in enumerate(tables):
        where = f"{path}: variant {i + 1}"
        unknown = set(t) - {"name", "traders", "trader", "params", "settings", *_GRID}
        if unknown:
            raise SweepError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = str(t.get("name") or f"v{i + 1}")
        grid = {k: (t[k] if isinstance(t[k], list) else [t[k]]) for k in _GRID if k in t}
        for combo in itertools.product(*grid.values()) if grid else [()]:
            label = name if not any(len(v) > 1 for v in grid.values()) else "/".join(
                [name, *(str(c) for k, c in zip(grid, combo, strict=True) if len(grid[k]) > 1)])
            traders = t.get("traders")
            out.append(Variant(label, tuple(traders) if traders is not None else None,
                               dict(zip(grid, combo, strict=True)), dict(t.get("trader") or {}),
                               dict(t.get("params") or {}), dict(t.get("settings") or {})))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise SweepError(f"{path}: variant names must differ: {', '.join(names)}")
    return tuple(out)


def variant_settings(base: dict[str, Any], variant: Variant,
                     symbols: tuple[str, ...]) -> dict[str, Any]:
    """Return the settings document of a variant: its traders, their fields, its overrides."""
    raw = copy.deepcopy(base)
    traders = raw.get("traders", [])
    if variant.traders is not None:
        known = {t.get("name") for t in traders}
        missing = [n for n in variant.traders if n not in known]
        if missing:
            raise SweepError(f"variant {variant.name!r}: unknown trader(s) {', '.join(missing)}")
        traders = [t for t in traders if t.get("name") in variant.traders]
    for t in traders:
        t.update(variant.trader_fields)
        if variant.params:
            t["params"] = {**t.get("params", {}), **variant.params}
        if t.get("strategy") == "llm":
            t.update(variant.llm_fields)
    raw["traders"] = traders
    for dotted, value in variant.overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    if symbols:
        raw.setdefault("feed", {})["symbols"] = list(symbols)
    return raw


def run_key(window: Window, variant: str, replicate: int, raw: dict[str, Any]) -> str:
    """Return the hash naming a run: window, variant, replicate and result-bearing settings."""
    kept = {k: v for k, v in raw.items() if k not in _NOT_IN_KEY}
    kept["feed"] = {k: v for k, v in raw.get("feed", {}).items() if k not in _FEED_NOT_IN_KEY}
    kept.pop("backtest", None)  # where history is cached
    kept["backtest"] = {k: v for k, v in raw.get("backtest", {}).items() if k != "cache_dir"}
    body = orjson.dumps({"window": [window.start, window.end], "variant": variant,
                         "replicate": replicate, "settings": kept},
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


def cores() -> int:
    """Return the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


__all__ = ["RunSpec", "SettingsError", "Sweep", "SweepError", "Variant", "Window", "cores",
           "load_sweep", "run_key", "split_period", "variant_settings"]
