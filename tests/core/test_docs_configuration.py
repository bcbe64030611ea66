"""docs/configuration.md names every key settings.toml holds (a new setting needs its line)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def keys(value: Any) -> set[str]:
    """Return every key at every depth (sections, inline tables, tables in arrays)."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def test_every_key_of_settings_toml_is_named_in_docs_configuration() -> None:
    shipped = keys(tomllib.loads((ROOT / "settings.toml").read_text(encoding="utf-8")))
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(k for k in shipped
                     if not re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text))
    assert len(shipped) >= 150
    assert missing == []
