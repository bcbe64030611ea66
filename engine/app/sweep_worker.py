"""One run of a sweep, in a process of its own: `python -m engine.app.sweep_worker SPEC.json`.

The spec (written by engine.app.sweep) holds the run's settings document, its window and where
to write its result. The run is `run.py backtest`'s (the same plan, history, recording and
engine, a fresh arena of mode `backtest`), against DATABASE_URL (the sweep's Postgres). The
result file says the run's run_id, its exit code and its LLM summary; the process exits with
the engine's exit code (2: the run could not start).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson


def main(argv: list[str] | None = None) -> int:
    """Run the backtest the spec file describes; return the exit code."""
    import uvloop

    from engine import logging as arena_logging
    from engine import redact
    from engine.app.backtest import BadInput, plan, prepare, source_hash
    from engine.app.options import Options
    from engine.clock import LiveClock
    from engine.settings import Secrets, Settings

    spec_path = Path((argv if argv is not None else sys.argv[1:])[0])
    spec = orjson.loads(spec_path.read_bytes())
    result_path = Path(spec["result"])
    now = LiveClock().time()
    try:
        settings = plan(Settings.model_validate(spec["settings"]),
                        argparse.Namespace(start=spec["start"], end=spec["end"], symbols=None,
                                           traders=None, allow_contamination=bool(
                                               spec.get("allow_contamination"))), now)
    except (BadInput, ValueError) as exc:
        _write(result_path, {"code": 2, "error": str(exc)})
        print(f"sweep run error: {exc}", file=sys.stderr)
        return 2
    secrets = Secrets.from_env()
    arena_logging.configure(settings.engine.log_level, "json")
    redact.register_configured(secrets.values(), settings, os.environ)  # + *_env settings

    async def run() -> int:
        from engine.app.engine import Engine
        from engine.app.exposure import labels

        try:
            path, _ = await prepare(settings, spec["start"], spec["end"], now)
        except BadInput as exc:
            _write(result_path, {"code": 2, "error": str(exc)})
            return 2
        options = Options(replay=str(path), speed=None, fresh=True,
                          live_llm=bool(spec.get("live_llm")),
                          run_id=uuid.UUID(spec["run_id"]) if spec.get("run_id") else None,
                          backtest_source=source_hash(settings, spec["start"], spec["end"]),
                          labels=labels(settings, spec["start"], spec["end"]) or None)
        engine = Engine(settings, secrets, options)
        code = await engine.run()
        session = getattr(engine, "llm_session", None)
        _write(result_path, {"code": code, "run_id": str(engine.run_id) if engine.run_id else None,
                             "llm": session.summary() if session is not None else None})
        return code

    return uvloop.run(run())


def _write(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(result, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
