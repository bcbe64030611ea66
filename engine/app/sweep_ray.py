"""Sweep runs as Ray tasks (`run.py sweep FILE --ray auto|local|ADDRESS`, the `arena[ray]` extra).

Each run is one Ray task declaring `RAY_CPUS` of a CPU (an LLM-bound backtest mostly waits on the
model: whole CPUs would cap the runs at the core count). The task starts the run's worker process
(`engine.app.sweep_worker`: still one process per run) with the sweep's DATABASE_URL, so every
node must reach that Postgres and have arena installed (or, on this machine, see this tree). The
spec travels with the task; the worker's result comes back with it. Its report files stay where
the worker wrote them (the run's directory: shared storage on a cluster). `auto` joins the
running cluster, `local` starts a Ray instance on this machine, anything else is its address.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import orjson

from engine.app.sweep_plan import RunSpec

RAY_CPUS = 0.25  # the CPU share each run declares
_ROOT = str(Path(__file__).resolve().parents[2])


def _ray() -> Any:
    with warnings.catch_warnings():  # Ray's own import-time warnings are not ours to fail on
        warnings.simplefilter("ignore")
        import ray

    return ray


def run_task(spec: bytes, env: dict[str, str], root: str) -> tuple[int, bytes, bytes]:
    """Run one sweep run's worker process; return its exit code, result and log (a Ray task)."""
    with tempfile.TemporaryDirectory(prefix="arena-sweep-") as tmp:
        doc = orjson.loads(spec)
        remote_result = Path(tmp) / "result.json"  # the node's own; sent back with the task
        doc["result"] = str(remote_result)
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_bytes(orjson.dumps(doc))
        proc = subprocess.run([sys.executable, "-m", "engine.app.sweep_worker", str(spec_path)],
                              cwd=root, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        result = remote_result.read_bytes() if remote_result.exists() else b""
        return proc.returncode, result, proc.stdout


def ray_launcher(address: str, env: dict[str, str]) -> Any:
    """Connect to Ray (or start it) and return a launcher running each run as a Ray task."""
    ray = _ray()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address,
                     runtime_env={"env_vars": {"PYTHONPATH": _ROOT}},
                     include_dashboard=False, log_to_driver=False, logging_level="warning")
    task = ray.remote(num_cpus=RAY_CPUS, max_retries=0)(run_task)

    async def launch(run: RunSpec, spec: Path, run_dir: str) -> int:
        ref = task.remote(await asyncio.to_thread(spec.read_bytes), env, _ROOT)
        code, result, output = await asyncio.wrap_future(ref.future())
        await asyncio.to_thread(_keep, Path(run_dir), result, output)
        return int(code)

    return launch


def _keep(run_dir: Path, result: bytes, output: bytes) -> None:
    (run_dir / "run.log").write_bytes(output)
    if result:
        (run_dir / "result.json").write_bytes(result)


def shutdown() -> None:
    """Disconnect from Ray (stopping the instance `local` started)."""
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()
