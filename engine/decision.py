"""What a trader decides in a cycle: per symbol one action. Pure pydantic, no I/O.

This module is the one schema of an answer. `answer_model(symbols)` is a pydantic model that both
generates the JSON schema sent to the providers and shown in the prompt (`answer_schema()`) and
validates every answer (`validate_answer()`): every field required (null where it does not
apply), no extra keys, numbers as JSON numbers within their bounds, the configured symbols as an
enum and at most one action per symbol. The prompt's list of actions (`ACTION_HELP`) and the risk
manager's known actions come from `ActionKind` here too, so they cannot drift apart
(tests/traders/test_schema.py and tests/traders/test_answer_corpus.py check it).

`Action` and `Decision` are what the engine passes on after validation (rule-based strategies
build them directly, with defaults for what they leave out).

Semantics the broker and risk manager apply:
* ``open_long`` / ``open_short``: open a position of `size_usdt` notional at `leverage`; on a
  position of the same side this adds to it; on the opposite side it closes that one first (flip).
* ``close``: close the whole position, or reduce it by `size_usdt` notional when given.
* ``adjust``: move the stop-loss and/or take-profit of an open position (a null keeps the old).
* ``hold``: nothing (stop-loss/take-profit given with a hold are applied like an ``adjust``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

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


# ---------------------------------------------------------------- the answer: schema + validator


def _json_number(value: Any) -> Any:
    """Refuse what JSON Schema's number and integer types refuse: strings and booleans."""
    if isinstance(value, str | bool):
        raise ValueError(f"must be a JSON number, not {type(value).__name__}")
    return value


Number = BeforeValidator(_json_number)


class _AnswerAction(BaseModel):
    """One action of an answer as the model must write it (the symbol enum is added per run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(description="One of the allowed symbols.")
    action: ActionKind = Field(description="What to do on this symbol.")
    size_usdt: Annotated[float | None, Number] = Field(
        ge=0, description="Notional in USDT (open, or partial close; null closes all).")
    leverage: Annotated[int | None, Number] = Field(
        ge=1, description="Integer leverage of a new position (null = 1).")
    stop_loss: Annotated[float | None, Number] = Field(gt=0, description="Price.")
    take_profit: Annotated[float | None, Number] = Field(gt=0, description="Price.")
    confidence: Annotated[float, Number] = Field(ge=0, le=1, description="0 to 1.")
    reason: str = Field(description="One or two sentences.")


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    actions: list[_AnswerAction] = Field(
        description="One entry per symbol you act on; symbols left out are held.")

    @field_validator("actions")
    @classmethod
    def _one_per_symbol(cls, actions: list[_AnswerAction]) -> list[_AnswerAction]:
        seen: set[str] = set()
        for a in actions:
            if a.symbol in seen:
                raise ValueError(f"more than one action on {a.symbol}; one per symbol")
            seen.add(a.symbol)
        return actions


class _NoTitles(GenerateJsonSchema):
    """Pydantic's schema without the titles it derives from names (noise in a prompt)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def generate(self, schema: Any, mode: Any = "validation") -> JsonSchemaValue:
        out = super().generate(schema, mode=mode)
        return _drop_titles(out)  # type: ignore[no-any-return]


def _drop_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_drop_titles(v) for v in node]
    return node


@lru_cache(maxsize=32)
def answer_model(symbols: tuple[str, ...]) -> type[BaseModel]:
    """Return the answer model for these symbols (sorted): the schema and the validator."""
    symbol_type: Any = Literal[symbols] if symbols else str
    item = create_model(
        "Action", __base__=_AnswerAction,
        symbol=(symbol_type, Field(description="One of the allowed symbols.")))
    one_per_symbol: dict[str, Any] = {"allOf": [
        {"contains": {"properties": {"symbol": {"const": s}}, "required": ["symbol"]},
         "minContains": 0, "maxContains": 1} for s in symbols]} if symbols else {}
    return create_model(
        "Answer", __base__=_Answer,
        actions=(list[item], Field(
            description="One entry per symbol you act on (at most one per symbol); symbols"
                        " left out are held.",
            json_schema_extra=one_per_symbol)))


def _symbols(symbols: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(symbols)))


@lru_cache(maxsize=32)
def _schema(symbols: tuple[str, ...]) -> dict[str, Any]:
    raw = answer_model(symbols).model_json_schema(schema_generator=_NoTitles)
    defs = raw.pop("$defs", {})
    items = raw["properties"]["actions"]["items"]
    if "$ref" in items:  # one level of nesting: inline it (a shorter prompt, simpler for APIs)
        raw["properties"]["actions"]["items"] = defs[items["$ref"].rsplit("/", 1)[-1]]
    return raw


def answer_schema(symbols: Iterable[str] = ()) -> dict[str, Any]:
    """Return the answer's JSON schema on `symbols`, generated by `answer_model`.

    One schema for all providers: Anthropic's tool input, the JSON described in the prompt
    and, less the one-per-symbol `allOf` (see `strict_schema`), OpenAI's strict json_schema.
    """
    return copy.deepcopy(_schema(_symbols(symbols)))


def strict_schema(symbols: Iterable[str] = ()) -> dict[str, Any]:
    """Return the schema in the subset OpenAI's strict mode takes (no allOf/contains).

    The validator still enforces one action per symbol; only the API's own check is weaker.
    """
    schema = answer_schema(symbols)
    schema["properties"]["actions"].pop("allOf", None)
    return schema


class AnswerError(ValueError):
    """An answer the schema refuses; the message names the field and why."""


def validate_answer(data: Any, symbols: Iterable[str]) -> Decision:
    """Return the Decision in the JSON value `data`, or raise AnswerError naming the field."""
    model = answer_model(_symbols(symbols))
    try:
        answer = model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(answer)"
        msg = err["msg"].removeprefix("Value error, ")
        raise AnswerError(f"{loc}: {msg} (got {_short(err.get('input'))})") from None
    return Decision(actions=tuple(Action(**a.model_dump()) for a in answer.actions))  # type: ignore[attr-defined]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
