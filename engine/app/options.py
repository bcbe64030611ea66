"""What one run asks for beyond settings.toml: the command line's options, typed.

`run.py` (engine/app/cli.py) and `run.py backtest` (engine/app/backtest.py) build one `Options`;
the engine and the functions that build its parts (engine/app/build.py) read it. It lives in a
module of its own so both can import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line asks for, beyond settings.toml."""

    once: bool = False
    dry_run: bool = False
    fresh: bool = False
    include_tags: frozenset[str] = frozenset()
    exclude_tags: frozenset[str] = frozenset()
    record: str | None = None
    replay: str | None = None
    speed: float | None = None  # replay speed, None = max
    record_llm: str | None = None
    live_llm: bool = False  # a replay may ask the real APIs for prompts it does not hold
    console: bool = False
    no_alerts: bool = False  # --no-alerts
    backtest_source: str | None = None  # run.py backtest: the hash of its window and settings
    run_id: Any = None  # the RunStarted.run_id to use (a sweep records it before the run starts)
    resume: bool = False  # a replay or backtest continues its arena after its last instant
    labels: dict[str, Any] | None = None  # run.py backtest: per trader exposure (runs.labels)
    accept_reconcile: bool = False  # --accept-reconcile: rebuild contradicted accounts from rows

    @property
    def in_backtest(self) -> bool:
        """Return True for `run.py backtest`'s run (a replay of a fetched window)."""
        return self.backtest_source is not None

    @property
    def calls_apis(self) -> bool:
        """Return True when LLM clients get their API keys: live, or a replay with --live-llm."""
        return not self.replay or self.live_llm
