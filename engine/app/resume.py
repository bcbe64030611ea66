"""`--resume` of a replay or backtest: where its arena stopped, and whether the file goes on.

A replay or backtest starts a fresh arena unless `--resume`; resumed, its simulated clock starts
after the arena's last persisted instant (the newest account snapshot or cycle), so simulated
time never goes backwards, and the replay skips the frames up to it (their candle history, the
backfill lines, is kept). A recording that ends before that instant cannot continue: one line,
exit code 2, nothing run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.app.preflight import UserError, check_replay


def iso(ts: float) -> str:
    """Return `ts` as an ISO-8601 UTC time to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_instant(state: Any) -> float | None:
    """Return the arena's last persisted instant (None when nothing was persisted)."""
    instants = [float(a["ts"]) for a in state.accounts.values() if a.get("ts") is not None]
    if state.last_cycle_at is not None:
        instants.append(float(state.last_cycle_at))
    return max(instants, default=None)


def resume_point(state: Any, path: str) -> float | None:
    """Return the instant a resumed replay of `path` starts after; refuse a recording that
    ends at or before it."""
    after = last_instant(state)
    if after is None:
        return None
    ends = check_replay(path)
    if ends is not None and ends <= after:
        raise UserError(f"--resume: the arena of {path} already reached {iso(after)} and the "
                        f"recording ends at {iso(ends)}; nothing to continue (drop --resume "
                        "for a fresh arena)")
    return after


async def start_after(engine: Any) -> float | None:
    """Move a resumed replay's clock to its arena's last instant and return it (None: nothing
    persisted yet); a recording that cannot continue stops the embedded database and raises."""
    import structlog

    try:
        after = resume_point(engine.recovery, engine.options.replay)
    except UserError:
        await engine.db.close()  # nothing started: stop the embedded server, then say why
        raise
    if after is not None:
        engine.clock.jump_to(after)
    structlog.get_logger("app").info("replay.resume", after=None if after is None else iso(after),
                                     runs=engine.recovery.arena_runs)
    return after
