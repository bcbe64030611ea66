"""The jsonb text of a row: the same text whether or not a dict holds a key that is not a str."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import orjson
import pytest

from engine.store.rows import dumps


class Side(enum.Enum):
    LONG = "long"


def _reference(value: object) -> str:
    """The text as first written: every value through one orjson call with OPT_NON_STR_KEYS."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


@pytest.mark.parametrize("value", [
    {"capital": 10_000.0, "returns": {"n": 3, "mean": 1e-4}, "recent_fills": [{"qty": 0.1}]},
    [{"symbol": "BTCUSDT", "stop_loss": None, "mark": 98_780.309981, "leverage": 3}],
    {"ts": dt.datetime(2026, 10, 1, tzinfo=dt.UTC), "id": uuid.UUID(int=7), "side": Side.LONG},
    {"nan": float("nan"), "big": 1e308, "tuple": (1, 2.5, "x"), "empty": {}},
    {1: "an int key", 2.5: "a float key", None: "a None key"},
    {"deep": [{"ok": 1}, {"inner": {7: "an int key deep inside"}}]},
    {uuid.UUID(int=1): "a UUID key", dt.date(2026, 10, 1): "a date key", Side.LONG: 1},
    "text", 3, [],
])
def test_dumps_writes_the_text_written_with_non_str_keys_allowed(value: object) -> None:
    assert dumps(value) == _reference(value)


def test_dumps_keeps_none_as_sql_null() -> None:
    assert dumps(None) is None
