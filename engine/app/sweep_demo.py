"""`python run.py sweep --demo`: a sweep offline, on the local fake Binance's synthetic history.

Two 6-hour windows x two variants of the rule-based traders (`hold`: buy_and_hold; `ema`:
ema_cross on 1-minute candles), BTCUSDT and ETHUSDT. Its settings, sweep file, history cache,
reports and (without DATABASE_URL) embedded Postgres live under ./data/sweep-demo. Run it again
and nothing runs: `sweep: 0 of 4 runs to run`.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path("data/sweep-demo")

SETTINGS = """\
# The sweep demo's settings (written by `run.py sweep --demo`; the fake Binance's URL changes
# every time, which does not change a run's key).
[engine]
log_format = "json"
log_level = "warning"

[feed]
futures_rest_url = "{url}"
symbols = ["BTCUSDT", "ETHUSDT"]
backfill_candles = 120
backfill_higher_candles = 20

[backtest]
cache_dir = "{dir}/history"

[database]
embedded_dir = "{dir}/pg"

[control]
enabled = false

[report]
dir = "{dir}/reports"

[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"

[[traders]]
name = "ema_fast"
strategy = "ema_cross"
params = {{ timeframe = "1m", size_pct = 10 }}
"""

SWEEP = """\
# The sweep demo: 2 windows x 2 variants of rule-based traders (docs/sweeps.md).
[sweep]
name = "demo"
config = "settings.toml"
period = { from = "2026-10-01T00:00", to = "2026-10-01T12:00" }
windows = 2

[[variant]]
name = "hold"
traders = ["buy_and_hold"]

[[variant]]
name = "ema"
traders = ["ema_fast"]
"""


def write_demo(directory: Path, url: str) -> Path:
    """Write the demo's settings and sweep file into `directory`; return the sweep file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.toml").write_text(
        SETTINGS.format(url=url, dir=directory.resolve()), encoding="utf-8")
    path = directory / "demo.toml"
    path.write_text(SWEEP, encoding="utf-8")
    return path
