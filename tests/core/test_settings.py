"""Settings: the shipped file loads; each kind of bad setting stops start-up with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.settings import Secrets, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_settings_load_with_documented_defaults() -> None:
    s = load_settings(ROOT / "settings.toml")
    assert s.feed.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT")
    assert s.feed.market == "futures" and s.feed.max_price_age_seconds == 10
    assert [(j.name, j.interval_seconds) for j in s.jobs] == [
        ("trading_cycle", 300),
        ("health_check", 900),
        ("account_sync", 600),
    ]
    assert {t.name for t in s.traders} >= {"claude", "deepseek", "gpt-4o"}
    assert s.broker.taker_fee == 0.0005 and s.database.batch_rows == 500


def test_settings_toml_holds_every_setting() -> None:
    import re

    from engine import llm_settings as lst
    from engine import settings as st

    text = (ROOT / "settings.toml").read_text()
    keys = set(re.findall(r"^\s*([a-z_0-9]+)\s*=", text, flags=re.M))
    sections = [
        st.EngineSettings,
        st.FeedSettings,
        st.BrokerSettings,
        st.RiskSettings,
        st.LLMSettings,
        st.DatabaseSettings,
        st.ControlSettings,
        st.SymbolFilter,
    ]
    missing = [
        f"{m.__name__}.{name}"
        for m in sections
        for name in m.model_fields
        if name not in keys
        and name not in ("symbols", "default_filter", "providers", "prices", "budget")
    ]
    assert missing == []
    # caps default to none, so they are shown commented out; every one is still documented
    commented = set(re.findall(r"^#\s*([a-z_0-9]+)\s*=", text, flags=re.M))
    unknown = [n for n in lst.BudgetSettings.model_fields if n not in commented]
    assert unknown == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[feed]\nmax_price_age_seconds = -3\n",
            "bad value for 'feed.max_price_age_seconds': -3; expected greater than 0",
        ),
        ("[feed]\nsymbolz = []\n", "unknown key 'feed.symbolz'"),
        (
            '[engine]\nshutdown_grace_seconds = "soon"\n',
            "bad value for 'engine.shutdown_grace_seconds': 'soon'; expected a valid number",
        ),
        ('[[traders]]\nname = "x"\nstrategy = "llm"\n', "bad value for 'traders[0]'"),
        (
            '[[jobs]]\nname = "j"\nrun = "trading_cycle"\n'
            'schedule = "daily"\ndaily_time = "25:00"\n',
            "bad value for 'jobs[0].daily_time': '25:00'; expected must be HH:MM in UTC",
        ),
        (
            "[risk]\nmax_leverage = 500\n",
            "bad value for 'risk.max_leverage': 500; expected less than or equal to 125",
        ),
        ("x = [\n", "not valid TOML"),
    ],
)
def test_bad_setting_raises_one_message_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[feed]\nmax_price_age_seconds = 0\n", "feed.max_price_age_seconds"),  # out of range
        ("[broker]\nfee = 1\n", "broker.fee"),  # unknown key
        ('[database]\nbatch_rows = "many"\n', "database.batch_rows"),  # wrong type
    ],
)
def test_run_py_exits_2_on_bad_settings(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "run.py", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and key in proc.stderr


def test_run_py_exits_2_on_missing_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "run.py", "--config", str(tmp_path / "none.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "settings file not found" in proc.stderr


def test_secrets_come_from_the_environment_and_never_print() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant-secret", "DATABASE_URL": "postgresql://u:pw1234@h/db"}
    secrets = Secrets.from_env(env)
    assert secrets.api_key("anthropic") == "sk-ant-secret"
    assert secrets.api_key("openai") is None
    assert "secret" not in repr(secrets)
    assert "pw1234" in secrets.values()
