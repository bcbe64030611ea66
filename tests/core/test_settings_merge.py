"""A settings file merges over settings.toml: missing keys take the values shown there; tables
keyed by name merge key by key; arrays (traders, jobs, webhooks) replace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.settings import DEFAULT_PATH, load_settings
from engine.settings_merge import merge


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Return every leaf of a dumped settings object by its dotted key."""
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list | tuple) else None)
    if items is None:
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def settings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_an_empty_file_gives_every_value_settings_toml_shows(tmp_path: Path) -> None:
    shipped = leaves(load_settings(DEFAULT_PATH).model_dump())
    empty = leaves(load_settings(settings_file(tmp_path, "")).model_dump())
    assert len(shipped) > 300  # every section, the six symbols' brackets, traders, jobs
    assert empty == shipped
    # the two the issue found wrong with a file written from scratch
    s = load_settings(settings_file(tmp_path, ""))
    btc = s.broker.symbols["BTCUSDT"]
    assert (btc.tick_size, btc.min_notional, len(btc.brackets)) == (0.1, 100.0, 12)
    assert next(j for j in s.jobs if j.run == "trading_cycle").delay_seconds == 2


def test_a_named_table_adds_an_entry_and_keeps_the_others(tmp_path: Path) -> None:
    s = load_settings(settings_file(tmp_path, '[llm.prices."qwen3-max"]\ninput = 1.2\n'
                                              'output = 6.0\n'))
    assert s.llm.prices["qwen3-max"].input == 1.2
    assert {"claude-sonnet-4-6", "gpt-4o", "deepseek-chat"} <= set(s.llm.prices)


def test_a_symbol_table_with_one_key_keeps_its_other_keys_and_brackets(tmp_path: Path) -> None:
    shipped = load_settings(DEFAULT_PATH).broker.symbols["BTCUSDT"]
    s = load_settings(settings_file(tmp_path, "[broker.symbols.BTCUSDT]\ntick_size = 0.5\n"))
    btc = s.broker.symbols["BTCUSDT"]
    assert btc.tick_size == 0.5
    assert btc.model_copy(update={"tick_size": shipped.tick_size}) == shipped
    assert s.broker.symbols["ETHUSDT"] == load_settings(DEFAULT_PATH).broker.symbols["ETHUSDT"]


def test_a_scalar_in_a_section_changes_only_that_key(tmp_path: Path) -> None:
    shipped = load_settings(DEFAULT_PATH)
    s = load_settings(settings_file(tmp_path, "[feed]\nsymbols = [\"BTCUSDT\"]\n"))
    assert s.feed.symbols == ("BTCUSDT",)
    assert s.feed.model_copy(update={"symbols": shipped.feed.symbols}) == shipped.feed


def test_arrays_replace_traders_jobs_and_webhooks(tmp_path: Path) -> None:
    s = load_settings(settings_file(tmp_path, """
[[traders]]
name = "only"
strategy = "buy_and_hold"

[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "interval"
interval_seconds = 60

[[alerts.webhooks]]
format = "slack"
url_env = "OPS_WEBHOOK_URL"
"""))
    assert [t.name for t in s.traders] == ["only"]
    assert [(j.name, j.interval_seconds) for j in s.jobs] == [("trading_cycle", 60)]
    assert [(w.format, w.url_env) for w in s.alerts.webhooks] == [("slack", "OPS_WEBHOOK_URL")]


def test_merge_goes_key_by_key_at_every_depth_and_never_changes_its_inputs() -> None:
    defaults = {"a": {"b": {"c": 1, "d": 2}, "e": [1, 2]}, "f": 3}
    given = {"a": {"b": {"c": 9}, "e": [7]}, "g": 4}
    assert merge(defaults, given) == {"a": {"b": {"c": 9, "d": 2}, "e": [7]}, "f": 3, "g": 4}
    assert defaults == {"a": {"b": {"c": 1, "d": 2}, "e": [1, 2]}, "f": 3}
