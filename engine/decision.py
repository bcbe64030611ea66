"""What a trader decides in a cycle: per symbol one action. Pure pydantic, no I/O.

This module is the one schema of an answer: the validator (`engine.traders.answers`), the JSON
schema sent to the providers and shown in the prompt (`answer_schema()`), the prompt's list of
actions (`ACTION_HELP`) and the risk manager's known actions all come from `Action` and
`ACTIONS` here, so they cannot drift apart (tests/traders/test_schema.py checks it).

Semantics the broker and risk manager apply:
* ``open_long`` / ``open_short``: open a position of `size_usdt` notional at `leverage`; on a
  position of the same side this adds to it; on the opposite side it closes that one first (flip).
* ``close``: close the whole position, or reduce it by `size_usdt` notional when given.
* ``adjust``: move the stop-loss and/or take-profit of an open position (a null keeps the old).
* ``hold``: nothing (stop-loss/take-profit given with a hold are applied like an ``adjust``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import annotated_types
from pydantic import BaseModel, ConfigDict, Field

ActionKind = Literal["open_long", "open_short", "close", "adjust", "hold"]
ACTIONS: tuple[str, ...] = get_args(ActionKind)
OPENS: tuple[str, ...] = ("open_long", "open_short")
STOP_MOVES: tuple[str, ...] = ("adjust", "hold")  # actions that may move an open position's stops

# What each action does, as the prompt lists it (one line per action; the keys are ACTIONS).
ACTION_HELP: dict[str, str] = {
    "open_long": "open (or add to) a long of size_usdt notional at leverage; on a short it"
                 " closes the short first",
    "open_short": "open (or add to) a short of size_usdt notional at leverage; on a long it"
                  " closes the long first",
    "close": "close the whole position (size_usdt null) or reduce it by size_usdt notional",
    "adjust": "move stop_loss and/or take_profit of your open position (null keeps the"
              " current one)",
    "hold": "do nothing (prices given with a hold move the stops like adjust)",
}


class Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    symbol: str = Field(description="One of the allowed symbols.")
    action: ActionKind = Field(description="What to do on this symbol.")
    size_usdt: float | None = Field(
        default=None, ge=0,
        description="Notional in USDT (open, or partial close; null closes all).")
    leverage: int | None = Field(default=None, ge=1,
                                 description="Integer leverage of a new position (null = 1).")
    stop_loss: float | None = Field(default=None, gt=0, description="Price.")
    take_profit: float | None = Field(default=None, gt=0, description="Price.")
    confidence: float = Field(default=0.5, ge=0, le=1, description="0 to 1.")
    reason: str = Field(default="", description="One or two sentences.")

    @property
    def moves_stops(self) -> bool:
        """Return True for an adjust/hold that carries a new stop-loss or take-profit."""
        return self.action in STOP_MOVES and (
            self.stop_loss is not None or self.take_profit is not None)


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
        return tuple(a for a in self.actions if a.action != "hold" or a.moves_stops)


# ---------------------------------------------------------------- the JSON schema, generated

_JSON_TYPES = {str: "string", float: "number", int: "integer", bool: "boolean"}
_BOUNDS = {annotated_types.Ge: ("minimum", "ge"), annotated_types.Gt: ("exclusiveMinimum", "gt"),
           annotated_types.Le: ("maximum", "le"), annotated_types.Lt: ("exclusiveMaximum", "lt")}


def field_schema(name: str) -> dict[str, Any]:
    """Return the JSON schema of one `Action` field, from its type, bounds and description."""
    info = Action.model_fields[name]
    args = get_args(info.annotation)
    out: dict[str, Any] = {}
    if args and all(isinstance(a, str) for a in args):  # a Literal
        out = {"type": "string", "enum": list(args)}
    else:
        kinds = [a for a in (args or (info.annotation,)) if a is not type(None)]
        json_type = _JSON_TYPES[kinds[0]]
        out["type"] = [json_type, "null"] if type(None) in args else json_type
    for meta in info.metadata:
        key = _BOUNDS.get(type(meta))
        if key is not None:
            out[key[0]] = getattr(meta, key[1])
    if info.description:
        out["description"] = info.description
    return out


def answer_schema() -> dict[str, Any]:
    """Return the answer's JSON schema (every key required, no extra keys, null where optional).

    One schema for all providers: Anthropic's tool input, OpenAI's strict json_schema and the
    JSON described to DeepSeek.
    """
    names = list(Action.model_fields)
    return {
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
                    "required": names,
                    "properties": {n: field_schema(n) for n in names},
                },
            }
        },
    }
