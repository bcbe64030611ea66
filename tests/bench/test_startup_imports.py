"""Start-up imports: an LLM SDK is imported only for a trader that will run (it has its key)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BUILD = """
import json, sys
from engine.clock import LiveClock
from engine.settings import Secrets, load_settings
from strategies.registry import build_strategies

keys = json.loads(sys.argv[1])
secrets = Secrets(anthropic_api_key=keys.get("anthropic"), openai_api_key=keys.get("openai"),
                  deepseek_api_key=keys.get("deepseek"), database_url=None, control_token=None)
built = build_strategies(load_settings("settings.toml"), secrets, LiveClock())
print(json.dumps({"traders": sorted(built),
                  "sdks": sorted(m for m in ("anthropic", "openai") if m in sys.modules)}))
"""


def _build(keys: dict[str, str]) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", BUILD, json.dumps(keys)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_key_no_sdk_imported() -> None:
    got = _build({})
    assert got["sdks"] == []
    assert "claude" not in got["traders"] and "buy_and_hold" in got["traders"]


def test_only_the_sdk_of_the_trader_with_a_key_is_imported() -> None:
    got = _build({"anthropic": "sk-test"})
    assert got["sdks"] == ["anthropic"]
    assert "claude" in got["traders"] and "gpt-4o" not in got["traders"]


def test_describe_error_works_before_any_sdk_is_imported() -> None:
    code = ("import sys; from engine.traders.providers import describe_error; "
            "print(describe_error(ValueError('x')), 'anthropic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "ValueError: x False"
