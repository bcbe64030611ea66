"""Settings types of the models table (`[llm.prices."MODEL"]`) kept apart from engine.settings.

`training_cutoff`: the last day the model's training data may cover, `"YYYY-MM-DD"`; `"unknown"`
(or leaving it out) says it is not known. A backtest refuses a window a model may remember
(engine.app.exposure, docs/backtests.md); an unknown cutoff counts as one it may remember.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import BeforeValidator


def _unknown_is_none(value: Any) -> Any:
    return None if value == "unknown" else value


TrainingCutoff = Annotated[date | None, BeforeValidator(_unknown_is_none)]
