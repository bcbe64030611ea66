"""How a settings file combines with settings.toml: read the TOML, merge it over the defaults.

Tables merge key by key at every depth, so a table keyed by name (`[llm.prices."x"]`,
`[broker.symbols.BTCUSDT]`, `[llm.providers.NAME]`) adds or amends one entry and keeps the
others and the keys it leaves out; anything else replaces, arrays included (`[[traders]]`,
`[[jobs]]`, `alerts.webhooks`): a file that lists traders runs exactly those.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def read_toml(path: Path, error: type[Exception]) -> dict[str, Any]:
    """Return the parsed file; raise `error` with one line naming the file and the problem."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: settings file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read settings file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Return `given` over `defaults`: tables merge key by key, anything else replaces."""
    out = dict(defaults)
    for key, value in given.items():
        base = out.get(key)
        out[key] = (merge(base, value) if isinstance(value, dict) and isinstance(base, dict)
                    else value)
    return out
