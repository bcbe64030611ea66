"""`run.py backtest`: bad input exits 2 with one line; costs are shown and asked before spending."""

from __future__ import annotations

import asyncio
import io

import pytest
import structlog

from engine.app.backtest import main
from engine.market.fakebinance import FakeBinance
from tests.backtest.support import write_config

NOW = 1_793_491_200.0  # 2026-11-01T00:00:00Z


@pytest.fixture(autouse=True)
def _keep_logging():
    """`main` configures structlog for its run; give the next tests their set-up back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
async def server():
    fake = FakeBinance()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.mark.parametrize(("window", "message"), [
    (["--from", "2026-11-02T00:00", "--to", "2026-11-03T00:00"],
     "backtest error: the window ends in the future (2026-11-03T00:00 > now 2026-11-01T00:00)"),
    (["--from", "2026-10-08T00:00", "--to", "2026-10-01T00:00"],
     "backtest error: --to must be after --from"),
    (["--from", "2026-01-01T00:00", "--to", "2026-03-01T00:00"],
     "backtest error: the window is 59 days; backtest.max_days is 31"),
    (["--from", "2026-10-01T00:00", "--to", "2026-10-02T00:00", "--traders", "nobody"],
     "backtest error: unknown trader nobody; settings have buy_and_hold, ema_fast"),
    (["--from", "2026-10-01T00:00", "--to", "2026-10-02T00:00", "--symbols", "btc"],
     "backtest error: bad --symbols: Value error, symbol 'btc' must be upper-case letters/digits"
     " like BTCUSDT"),
])
def test_bad_input_prints_one_line_and_exits_2(tmp_path, capsys, window, message):
    config = write_config(tmp_path, "http://127.0.0.1:9")
    assert main(["--config", str(config), *window], now=NOW) == 2
    err = capsys.readouterr().err
    assert err == message + "\n"


async def test_an_unknown_symbol_is_refused_from_exchange_info(tmp_path, capsys, server):
    config = write_config(tmp_path, server.rest_url)
    code = await asyncio.to_thread(main, ["--config", str(config), "--from", "2026-10-01T00:00",
                                          "--to", "2026-10-01T01:00", "--symbols", "PEPEUSDT"],
                                   now=NOW)
    assert code == 2
    assert capsys.readouterr().err == (
        f"backtest error: unknown symbol PEPEUSDT (not listed by {server.rest_url})\n")
    assert [p for p, _ in server.requests] == ["/fapi/v1/exchangeInfo"]


LLM = """
[llm.prices."claude-sonnet-4-6"]
input = 3.0
output = 15.0
training_cutoff = "2025-01-31"

[[traders]]
name = "claude"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
max_tokens = 1000
"""


async def test_live_llm_shows_calls_tokens_and_usd_and_asks_before_any_call(tmp_path, capsys,
                                                                            server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    config = write_config(tmp_path, server.rest_url, traders=LLM)
    args = ["--config", str(config), "--from", "2026-10-01T00:00", "--to", "2026-10-02T00:00",
            "--symbols", "BTCUSDT", "--live-llm"]

    code = await asyncio.to_thread(main, args, stdin=io.StringIO("n\n"), now=NOW)

    out = capsys.readouterr().out
    assert code == 1
    assert "backtest: estimated LLM use before any call:" in out
    row = next(line for line in out.splitlines() if line.startswith("claude "))
    calls, tokens_in, tokens_out, usd = row.split()[2:]
    assert int(calls) == 288  # a day of 5-minute cycles
    assert int(tokens_out.replace(",", "")) == 288 * 1000  # max_tokens per call
    per_call = int(tokens_in.replace(",", "")) / 288
    assert 1000 < per_call < 5000
    expected = 288 * (per_call * 3.0 + 1000 * 15.0) / 1e6  # the configured prices
    assert float(usd) == pytest.approx(expected, abs=0.01)
    assert "Proceed and call the APIs? [y/N]" in out
    assert out.rstrip().endswith("backtest: cancelled, nothing was spent")


async def test_without_live_llm_nothing_is_asked_and_nothing_spent(tmp_path, capsys, server):
    from engine.app.costs import confirm, estimate
    from engine.settings import Secrets, load_settings

    settings = load_settings(write_config(tmp_path, server.rest_url, traders=LLM))
    secrets = Secrets.from_env({"ANTHROPIC_API_KEY": "sk-ant-test"})
    rows = estimate(settings, NOW - 86_400, NOW, live=False, secrets=secrets)
    assert rows == []
    assert confirm(rows, live=False, assume_yes=False, stdin=io.StringIO(""))
    assert "nothing is spent" in capsys.readouterr().out


def test_a_prompt_template_is_hashed_into_the_runs_source(tmp_path):
    from engine.app.backtest import source_hash
    from engine.settings import load_settings

    template = tmp_path / "a.txt"
    template.write_text("Variant A.\n{actions}\n{rules}\n{answer}\n")
    traders = LLM + f'prompt_template = "{template}"\n'
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9", traders=traders))
    before = source_hash(settings, NOW - 86_400, NOW)
    assert source_hash(settings, NOW - 86_400, NOW) == before  # stable
    template.write_text("Variant A, reworded.\n{actions}\n{rules}\n{answer}\n")
    from engine.traders.prompt import load_template

    load_template.cache_clear()
    assert source_hash(settings, NOW - 86_400, NOW) != before
    assert source_hash(settings, NOW - 2 * 86_400, NOW) != before


def test_the_calls_are_the_trading_cycles_of_the_window(tmp_path):
    from engine.app.costs import cycles_in
    from engine.settings import load_settings

    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9"))
    assert cycles_in(settings, NOW, NOW + 7 * 86_400) == 2016  # a week of 5-minute cycles
    assert cycles_in(settings, NOW + 1, NOW + 600) == 1  # 00:05 only (00:10 is the end)
