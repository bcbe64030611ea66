"""What a trader decides in a cycle: per symbol one action. Pure pydantic, no I/O.

Semantics the broker and risk manager apply:
* ``open_long`` / ``open_short``: open a position of `size_usdt` notional at `leverage`; on a
  position of the same side this adds to it; on the opposite side it closes that one first (flip).
* ``close``: close the whole position, or reduce it by `size_usdt` notional when given.
* ``hold``: nothing (stop-loss/take-profit of an open position may still be updated when given).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ActionKind = Literal["open_long", "open_short", "close", "hold"]
ACTIONS: tuple[str, ...] = ("open_long", "open_short", "close", "hold")


class Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    symbol: str
    action: ActionKind
    size_usdt: float | None = Field(default=None, ge=0)
    leverage: int | None = Field(default=None, ge=1)
    stop_loss: float | None = Field(default=None, gt=0)
    take_profit: float | None = Field(default=None, gt=0)
    confidence: float = Field(default=0.5, ge=0, le=1)
    reason: str = ""


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    actions: tuple[Action, ...] = ()

    @classmethod
    def hold(cls, reason: str = "") -> Decision:
        """Return a decision that does nothing."""
        return cls(actions=())

    def as_dict(self) -> dict[str, Any]:
        """Return the decision as plain JSON-able data."""
        return self.model_dump(mode="json")

    def trades(self) -> tuple[Action, ...]:
        """Return the actions that are not plain holds."""
        return tuple(a for a in self.actions if a.action != "hold")
