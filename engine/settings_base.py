"""The base every settings section builds on: a frozen model that forbids unknown keys.

`engine.settings` and the sections it keeps in their own modules (`engine.broker_settings`,
`engine.output_settings`) all import `Section` and the shared field types from here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    """A settings table: unknown keys are errors, values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
