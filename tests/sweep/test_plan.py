"""A sweep file expands into runs whose keys change only with what changes a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.app.sweep_plan import SweepError, Window, load_sweep, split_period
from engine.report.sweep import RunResult, summarise

SETTINGS = """
[feed]
futures_rest_url = "{url}"
symbols = ["BTCUSDT"]

[[traders]]
name = "hold"
strategy = "buy_and_hold"

[[traders]]
name = "ema"
strategy = "ema_cross"
params = {{ timeframe = "1m", size_pct = 10 }}

[[traders]]
name = "claude"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"

[llm.prices."claude-haiku-4-5"]  # a test entry of the models table (engine/llm_settings.py)
input = 1.0
output = 5.0
training_cutoff = "2025-02-01"
"""

SWEEP = """
[sweep]
name = "s"
period = {{ from = "2026-10-01T00:00", to = "2026-10-01T12:00" }}
windows = 3
allow_contamination = {allow}
{extra}

[[variant]]
name = "rules"
traders = ["hold", "ema"]
params = {{ size_pct = {size} }}

[[variant]]
name = "llm"
traders = ["claude"]
model = ["claude-sonnet-4-6", "claude-haiku-4-5"]
"""


def write(tmp: Path, *, url: str = "http://127.0.0.1:1", size: int = 10,
          extra: str = "", allow: bool = True) -> Path:
    (tmp / "settings.toml").write_text(SETTINGS.format(url=url))
    path = tmp / "s.toml"
    path.write_text(SWEEP.format(size=size, extra=extra, allow=str(allow).lower()))
    return path


def test_a_window_a_model_may_remember_is_refused_unless_the_sweep_allows_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(SweepError, match=r"variant 'llm/claude-sonnet-4-6': trader claude "
                       r"\(claude-sonnet-4-6\) has training cutoff unknown.*"
                       r"allow_contamination = true"):
        load_sweep(write(tmp_path, allow=False))
    assert len(load_sweep(write(tmp_path, allow=True)).runs()) == 9


def test_a_period_is_cut_into_consecutive_windows_of_equal_length() -> None:
    assert split_period(Window(0.0, 9.0), 3) == (Window(0, 3), Window(3, 6), Window(6, 9.0))


def test_a_list_of_models_expands_into_one_variant_each_and_runs_are_window_major(
    tmp_path: Path,
) -> None:
    sweep = load_sweep(write(tmp_path))
    runs = sweep.runs()
    assert [v.name for v in sweep.variants] == ["rules", "llm/claude-sonnet-4-6",
                                                "llm/claude-haiku-4-5"]
    assert len(runs) == 9 and len({r.key for r in runs}) == 9
    assert [r.window.start for r in runs[:3]] == [sweep.windows[0].start] * 3
    llm = next(r for r in runs if r.variant == "llm/claude-haiku-4-5")
    assert [(t["name"], t["model"]) for t in llm.raw["traders"]] == [("claude",
                                                                      "claude-haiku-4-5")]
    rules = runs[0]
    assert [t["params"]["size_pct"] for t in rules.raw["traders"]] == [10, 10]


def test_keys_ignore_where_history_comes_from_and_change_only_with_the_variant_edited(
    tmp_path: Path,
) -> None:
    first = {(r.window, r.variant): r.key for r in load_sweep(write(tmp_path)).runs()}
    moved = {(r.window, r.variant): r.key
             for r in load_sweep(write(tmp_path, url="http://127.0.0.1:2")).runs()}
    edited = {(r.window, r.variant): r.key for r in load_sweep(write(tmp_path, size=5)).runs()}
    assert moved == first
    changed = {k for k in first if first[k] != edited[k]}
    assert changed == {k for k in first if k[1] == "rules"}


def test_replicates_bypass_the_answer_cache_and_have_keys_of_their_own(tmp_path: Path) -> None:
    runs = load_sweep(write(tmp_path, extra="replicates = 2")).runs()
    assert len(runs) == 18 and len({r.key for r in runs}) == 18
    assert {r.raw["llm_cache"]["replay"] for r in runs} == {False}


@pytest.mark.parametrize(("sweep", "message"), [
    ("[sweep]\nwindows = 2\n[[variant]]\nname = 'a'\n",
     "needs windows = [{ from, to }, ...] or a period"),
    ("[sweep]\nwindows = [{ from = '2026-10-02T00:00', to = '2026-10-01T00:00' }]\n"
     "[[variant]]\nname = 'a'\n", "windows[0]: `to` must be after `from`"),
    ("[sweep]\nwindows = [{ from = '2026-10-01T00:00', to = '2026-10-02T00:00' }]\n",
     "no [[variant]] table"),
    ("[sweep]\nwindows = [{ from = '2026-10-01T00:00', to = '2026-10-02T00:00' }]\n"
     "[[variant]]\nname = 'a'\ntraders = ['nobody']\n", "unknown trader(s) nobody"),
    ("[sweep]\nwindows = [{ from = '2026-10-01T00:00', to = '2026-10-02T00:00' }]\n"
     "[[variant]]\nname = 'a'\n[[variant]]\nname = 'a'\n", "variant names must differ"),
])
def test_a_bad_sweep_file_is_refused_with_one_line(tmp_path: Path, sweep: str,
                                                   message: str) -> None:
    write(tmp_path)
    (tmp_path / "bad.toml").write_text(sweep)
    with pytest.raises(SweepError) as err:
        load_sweep(tmp_path / "bad.toml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _result(variant: str, start: float, ret: float) -> RunResult:
    return RunResult(key=f"{variant}{start}", variant=variant, window_start=start,
                     window_end=start + 3600, replicate=0, run_id=None, return_pct=ret,
                     cost_usd=0.5, saved_usd=0.25)


def test_p_a_beats_b_is_the_share_of_windows_a_won_with_ties_counting_half() -> None:
    runs = [_result("a", 0, 1.0), _result("b", 0, 0.5),
            _result("a", 3600, -1.0), _result("b", 3600, 0.0),
            _result("a", 7200, 2.0), _result("b", 7200, 2.0),
            _result("a", 10800, 3.0), _result("b", 10800, 1.0)]
    report = summarise("s", runs)
    assert report.beats == {"a": {"b": 0.625}, "b": {"a": 0.375}}
    assert report.pooled["a"] == {"mean": 1.25, "min": -1.0, "max": 3.0, "windows": 4.0}
    assert (report.cost_usd, report.saved_usd) == (4.0, 2.0)


def test_run_py_sweep_refuses_a_missing_file_in_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    import structlog

    from engine.app.cli import main

    saved = structlog.get_config()
    try:
        assert main(["sweep", str(tmp_path / "none.toml")]) == 2
        assert main(["sweep"]) == 2
    finally:
        structlog.configure(**saved)
    assert capsys.readouterr().err.splitlines() == [
        f"sweep error: {tmp_path / 'none.toml'}: sweep file not found",
        "sweep error: give a sweep file (or --demo)"]
