"""The soak's report: its rows from what the runs of `bench.soak` measured.

Measuring (`bench.soak`) and reporting (here) are apart; this module reads each run's probe
through `Probe`, the readings it needs, and never imports `bench.soak` (no import cycle).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from bench.common import Result, p99
from engine.settings import Settings


class Probe(Protocol):
    """What one soak run measured (`bench.soak.Probe`)."""

    rows: Counter[str]  # rows handed to the writer, per table
    cycles: Counter[str]  # cycles by status
    invalid: Counter[str]
    decisions: Counter[str]
    llm_requests: Counter[str]
    rss: dict[int, float]  # RSS (MB) at each sim-time hour
    lags: list[float]  # loop-lag samples (seconds) while the replay ran

RSS_GROWTH_TARGET = 0.02
RATIO_TARGET = 0.60
LAG_OVER_FLOOR_TARGET_MS = 2.0  # the engine loop's lag p99 over an idle loop's, same run


def _p99_ms(lags: list[float]) -> float:
    return p99(lags) * 1000 if lags else float("nan")


def _growth(probe: Probe, hours: int) -> float:
    first, last = probe.rss.get(1), probe.rss.get(hours)
    return (last - first) / first if first and last else float("nan")


def results(outs: list[dict[str, Any]], settings: Settings, hours: int, path: Path,
             cached: bool, gen_s: float, quick: bool) -> list[Result]:
    for out in outs:
        if out["code"] != 0:
            raise RuntimeError(f"engine exited with code {out['code']}")
    med = statistics.median
    scope = f"{hours} h market{' (--quick, not the 24 h soak)' if quick else ''}"
    interval = next(j.interval_seconds for j in settings.jobs
                    if j.run == "trading_cycle" and j.enabled and j.interval_seconds)
    expected = int(hours * 3600 // interval)
    llm = {t.name for t in settings.traders if t.strategy == "llm" and t.enabled}
    source = ("cached" if cached else f"generated in {gen_s:.0f} s") + f": {path.name}"
    engine_fps = [o["frames"] / o["replay_wall"] for o in outs]
    walls = [o["replay_wall"] for o in outs]
    blocked = [o["replay_wall"] - o["replay_cpu"] - o["replay_queued"] for o in outs]
    ratios = [e / o["feed_fps"] for e, o in zip(engine_fps, outs, strict=True)]
    growths = [_growth(o["probe"], hours) for o in outs]
    lags = [_p99_ms(o["probe"].lags) for o in outs]
    idle = [_p99_ms(o["idle_lags"]) for o in outs]
    over = [lag - floor for lag, floor in zip(lags, idle, strict=True)]
    measured = [g for g in growths if not math.isnan(g)]
    worst = max(measured) if measured else float("nan")
    cycles_ok = [o["probe"].cycles.get("ok", 0) for o in outs]
    all_ok = all(set(o["probe"].cycles) == {"ok"} for o in outs)
    mismatched = []
    for i, o in enumerate(outs):
        rows = o["probe"].rows
        bad = {t: (rows.get(t, 0), n) for t, n in o["in_db"].items() if rows.get(t, 0) != n}
        if bad:
            mismatched.append((i, bad))
    last = outs[-1]
    probe: Probe = last["probe"]
    w = last["writer"]
    per_table = ", ".join(f"{t} {probe.rows.get(t, 0)}/{n}" for t, n in last["in_db"].items())
    asked = sum(probe.llm_requests.values())
    mid = growths.index(worst) if measured else len(outs) - 1
    rss = outs[mid]["probe"].rss
    first, middle, end = rss.get(1), rss.get(hours // 2), rss.get(hours)
    wrss = outs[mid]["probe"].worker_rss
    wend = wrss.get(hours)
    lag_samples = [len(o["probe"].lags) for o in outs]
    return [
        Result("soak.vs_feed_replay", round(med(ratios), 3), "x", f">= {RATIO_TARGET}",
               med(ratios) >= RATIO_TARGET,
               f"{scope}: whole engine {med(engine_fps):,.0f} frames/s over a feed-only replay "
               f"of the same file at {med(o['feed_fps'] for o in outs):,.0f} frames/s; per-run "
               f"ratios {[round(r, 3) for r in ratios]}; in the loop thread's CPU time instead "
               f"(what the run costs without the machine's other load): "
               f"{[round(o['frames'] / o['replay_cpu'] / o['feed_cpu_fps'], 3) for o in outs]}; "
               f"the engine's replay wall time (median of the runs) {med(walls):.1f} s: on a core "
               f"{med(o['replay_cpu'] for o in outs):.1f} s, runnable but waiting for one "
               f"{med(o['replay_queued'] for o in outs):.1f} s, blocked (Postgres flushes holding "
               f"simulated time, threads) {med(blocked):.1f} s",
               workload=min(min(o["frames"], o["feed_frames"]) for o in outs)),
        Result("soak.rss_growth_hour1_to_end", round(100 * worst, 2), "%",
               f"<= {100 * RSS_GROWTH_TARGET:g} (worst run)", worst <= RSS_GROWTH_TARGET,
               f"worst of {len(growths)} runs; per run {[round(100 * g, 2) for g in growths]}; "
               f"hourly (worst run): " + " ".join(f"{h}h={v:.1f}" for h, v in sorted(rss.items())),
               workload=min(len(o["probe"].rss) for o in outs)),
        Result("soak.loop_lag_p99_over_floor_ms", round(med(over), 2), "ms",
               f"<= {LAG_OVER_FLOOR_TARGET_MS:g}", med(over) <= LAG_OVER_FLOOR_TARGET_MS,
               f"p99 of engine.loop_monitor's samples (time.perf_counter, every "
               f"{settings.engine.loop_lag_interval_seconds} s while the replay runs, "
               f"{lag_samples} samples) minus the p99 of an idle uvloop loop in a sibling process "
               f"sampled the same way during the same run (the machine's own scheduling delay); "
               f"per run {[round(x, 2) for x in over]} ms",
               workload=min(min(lag_samples), *(len(o["idle_lags"]) for o in outs))),
        Result("soak.loop_lag_p99_ms", round(med(lags), 2), "ms", "", None,
               f"absolute, for information (depends on the host's load): per-run p99 "
               f"{[round(x, 2) for x in lags]} ms, max "
               f"{max(max(o['probe'].lags, default=0) for o in outs) * 1000:.1f} ms; the idle "
               f"floor's p99 {[round(x, 2) for x in idle]} ms"),
        Result("soak.wall_time", round(med(o["wall"] for o in outs), 1), "s", "", None,
               f"{scope}, {last['frames']:,} frames of {len(settings.feed.symbols)} symbols "
               f"({source}); replay at {med(o['sim_s'] / o['replay_wall'] for o in outs):,.0f}x "
               f"real time; median of {len(outs)} runs, each with a fresh database"),
        Result("soak.cycles_run", min(cycles_ok), "cycles", f"== {expected} every run",
               all(c == expected for c in cycles_ok) and all_ok,
               f"per run {cycles_ok}; last run by status {dict(probe.cycles)}; traders "
               f"{last['traders']}; decisions {dict(probe.decisions)}, invalid "
               f"{dict(probe.invalid) or 0}; LLM requests answered by the fixture server {asked} "
               f"({dict(probe.llm_requests)}) for {len(llm)} LLM traders",
               workload=min(min(cycles_ok), asked)),
        Result("soak.rows_in_database", sum(last["in_db"].values()), "rows",
               "== rows handed to writer, every run", not mismatched,
               f"last run, handed/in db per table: {per_table}; the writer reports "
               f"{w['written']} written, {w['duplicates_skipped']} duplicates, "
               f"{w['spilled_rows']} spilled, {w['errors']} errors"
               + (f"; MISMATCH {mismatched}" if mismatched else ""),
               workload=min(sum(o["in_db"].values()) for o in outs)),
        Result("soak.rss_hour1", round(first or float("nan"), 1), "MB", "", None,
               f"after the first simulated hour (the worst run; {outs[mid]['rss_start']:.1f} MB "
               f"before the engine started)"),
        Result("soak.rss_middle", round(middle or float("nan"), 1), "MB", "", None,
               f"at simulated hour {hours // 2}"),
        Result("soak.rss_end", round(end or float("nan"), 1), "MB", "", None,
               f"when the replay of hour {hours} ends; {outs[mid]['rss_stopped']:.1f} MB after "
               f"the engine stopped"),
        Result("soak.rss_board_worker_end", round(wend or float("nan"), 1), "MB", "", None,
               "the leaderboard's worker process (engine.paper.board_worker), not in the figures "
               "above (the engine's own process), when the replay ends (the worst run); hourly "
               "from its start at the first refresh: "
               + (" ".join(f"{h}h={v:.1f}" for h, v in sorted(wrss.items())) or "never started")),
    ]

