"""`python -m bench`: run every benchmark, print one table, write it as JSON.

Each module (bench/<name>.py, `run(quick) -> list[Result]`) runs in its own child process, so one
module's logging set-up, memory or crash cannot touch another's figures; a module that fails or
overruns its time becomes an error row, never a silent gap. Each child gets its own temporary
directory (TMPDIR), so every embedded Postgres it starts lives there; when the child ends —
finished, failed or stopped at its time limit — any postmaster left in that directory is stopped
too. Flags: `--quick` (a fast pass), `--only feed,soak` (a subset), `--out PATH` (default
bench/results.json), `--markdown` (print the table as Markdown, for the docs), `--show PATH`
(print an earlier results file, run nothing), `--compare PATH` (each figure next to that file's),
`--tiny` (a smoke pass of every module that has one: tiny workloads, meaningless figures, written
to bench/results.tiny.json; tests/bench/test_workloads.py runs it).

A row's `workload` says how much its figure measured (rows written, frames delivered, positions
open, requests answered); a row whose workload is 0 measured nothing and is failed (`met` false).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MODULES = ("feed", "triggers", "decisions", "writer", "startup", "soak", "backtest", "sweep")
# Seconds a module may take before it is stopped and reported as an error (quick, tiny: a fifth).
TIME_LIMIT_S = {"feed": 180, "triggers": 180, "decisions": 180, "writer": 180, "startup": 600,
                "soak": 1800, "backtest": 1500, "sweep": 1500}
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results.json"
COMPARE_OUT = ROOT / "bench" / "results.new.json"  # --compare never overwrites what it compares
TINY_OUT = ROOT / "bench" / "results.tiny.json"
# every module but startup
TINY_MODULES = ("feed", "triggers", "decisions", "writer", "soak", "backtest", "sweep")


def machine() -> dict[str, Any]:
    """Return the machine the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_gb": mem_gb,
            "python": platform.python_version(), "platform": platform.platform(),
            "database": _database()}


def _database() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        return "embedded pgserver (temporary directory)"
    parts = urlsplit(url)
    return f"Postgres at {parts.hostname}:{parts.port or 5432} (scratch databases)"


# ---------------------------------------------------------------- running the modules


def _child(name: str, quick: bool, out: str, tiny: bool = False) -> int:
    """Run one module in this process and write its results as JSON to `out`."""
    import importlib

    try:
        module = importlib.import_module(f"bench.{name}")
        found = module.run(quick=quick, tiny=True) if tiny else module.run(quick=quick)
        rows = [_checked(r.as_dict()) for r in found]
        payload: dict[str, Any] = {"results": rows}
    except BaseException as exc:  # reported as an error row by the parent
        payload = {"error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()[-3000:]}
    Path(out).write_text(json.dumps(payload, default=_jsonable), encoding="utf-8")
    return 0


def _jsonable(value: Any) -> Any:
    return str(value)


def _checked(row: dict[str, Any]) -> dict[str, Any]:
    """Fail a row whose workload is empty: its figure measured nothing."""
    if row.get("workload") == 0:
        return dict(row, met=False, detail=f"EMPTY WORKLOAD (measured nothing); {row['detail']}")
    return row


def run_module(name: str, quick: bool,
               tiny: bool = False) -> tuple[list[dict[str, Any]], float]:
    """Run one benchmark module in a child process; return its rows (or one error row)."""
    limit = TIME_LIMIT_S.get(name, 120) // (5 if quick or tiny else 1)
    env = dict(os.environ)
    if env.get("DATABASE_URL") and not env.get("TEST_DATABASE_URL"):
        env["TEST_DATABASE_URL"] = env["DATABASE_URL"]  # the modules make scratch databases there
    # the child imports bench and engine from this checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "output.log"
        scratch = Path(tmp) / "tmp"  # the child's TMPDIR: its Postgres data directories
        scratch.mkdir()
        env["TMPDIR"] = str(scratch)
        cmd = [sys.executable, "-m", "bench", "--child", name, "--out", str(out)]
        if quick:
            cmd.append("--quick")
        if tiny:
            cmd.append("--tiny")
        start = time.perf_counter()
        with open(log, "wb") as fh:
            # Its own process group, so an overrun stops the child and whatever it started.
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=limit)
                problem = None if out.exists() else f"child exited with {code}, no results"
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                problem = f"did not finish within {limit} s (stopped)"
            finally:
                stopped = stop_postgres_under(scratch)
        if stopped:
            print(f"bench: {name}: stopped {len(stopped)} Postgres server(s) it left running "
                  f"(pids {stopped})", file=sys.stderr)
        seconds = time.perf_counter() - start
        tail = log.read_bytes()[-1500:].decode("utf-8", errors="replace")
        if problem is None:
            payload = json.loads(out.read_text(encoding="utf-8"))
            if payload.get("results"):
                return [dict(r, module=name) for r in payload["results"]], seconds
            problem = payload.get("error") or "no figures returned"
            tail = payload.get("traceback") or tail
    print(f"bench: {name} FAILED: {problem}\n{tail}", file=sys.stderr)
    return [{"name": f"{name}.error", "value": None, "unit": "", "target": "runs",
             "met": False, "detail": problem, "module": name}], seconds


def stop_postgres_under(root: Path, wait_s: float = 15.0) -> list[int]:
    """Stop every postmaster whose data directory is under `root` (by its postmaster.pid):
    SIGTERM, then SIGKILL after `wait_s`; return the pids that were running."""
    pids = []
    for pid_file in root.rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)  # raises if it is not running
            pids.append(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                alive.append(pid)
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if _running(p)]
        if not alive:
            break
    return pids


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) has stopped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return True


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop an overrunning child's process group: SIGTERM, then SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------- the table


def _figure(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"


def _met(row: dict[str, Any]) -> str:
    if row["name"].endswith(".error"):
        return "ERROR"
    return {True: "yes", False: "MISSED", None: "-"}[row["met"]]


def header(report: dict[str, Any]) -> str:
    m = report["machine"]
    kind = "tiny" if report.get("tiny") else "quick" if report["quick"] else "full"
    load = report.get("load_average") or {}
    loads = " ".join(f"{k} {'/'.join(f'{x:g}' for x in v)}" for k, v in load.items() if v)
    return (f"arena benchmarks, {report['started_at']} ({kind}, {report['seconds']:.0f} s"
            f"{f', load average (1/5/15 min) at {loads}' if loads else ''}"
            f"): {m['cores']} cores, {m['cpu_model']}, {m['memory_gb']} GB, Python "
            f"{m['python']}, {m['database']}")


def table(report: dict[str, Any], markdown: bool = False) -> str:
    """Render the results as a plain or Markdown table."""
    cols = ("name", "figure", "unit", "target", "met?")
    rows = [(r["name"], _figure(r["value"]), r["unit"], r["target"] or "-", _met(r))
            for r in report["results"]]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:{'>' if i == 1 else '<'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    lines.append("")
    lines += [f"{r['name']}: {r['detail']}" for r in report["results"] if r.get("detail")]
    return "\n".join(lines)


def compare(report: dict[str, Any], base: dict[str, Any], markdown: bool = False) -> str:
    """Render each figure of `report` next to the same row of `base` (e.g. the committed run)."""
    before = {r["name"]: r for r in base["results"]}
    cols = ("name", "figure", base.get("started_at", "before"), "change", "unit", "target",
            "met?")
    rows = []
    for r in report["results"]:
        old = before.get(r["name"])
        value, was = r["value"], old["value"] if old else None
        change = "-"
        if isinstance(value, int | float) and isinstance(was, int | float) and was:
            change = f"{100 * (value - was) / abs(was):+.1f}%"
        rows.append((r["name"], _figure(value), _figure(was) if old else "(new)", change,
                     r["unit"], r["target"] or "-", _met(r)))
    rows += [(name, "(not run)", _figure(o["value"]), "-", o["unit"], o["target"] or "-", "-")
             for name, o in before.items()
             if name not in {r["name"] for r in report["results"]}
             and o.get("module") in {r.get("module") for r in report["results"]}]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:{'>' if i in (1, 2, 3) else '<'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*row) for row in rows])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the table; write the JSON report."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fast pass (fewer runs, 2 h soak)")
    ap.add_argument("--only", metavar="NAME[,NAME]",
                    help=f"run only these modules: {', '.join(MODULES)}")
    ap.add_argument("--out", help=f"JSON report path (default {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--show", metavar="PATH", help="print an earlier report; run nothing")
    ap.add_argument("--compare", metavar="PATH",
                    help="print each figure next to this report's (e.g. bench/results.json); "
                         "the new report goes to bench/results.new.json unless --out is given")
    ap.add_argument("--tiny", action="store_true",
                    help="a smoke pass: tiny workloads, each checked non-empty; figures "
                         f"meaningless (default --out {TINY_OUT.relative_to(ROOT)}; no startup)")
    ap.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.out, args.tiny)
    base = json.loads(Path(args.compare).read_text(encoding="utf-8")) if args.compare else None
    if args.show:
        report = json.loads(Path(args.show).read_text(encoding="utf-8"))
        print(header(report))
        print(compare(report, base, args.markdown) if base else table(report, args.markdown))
        return 0
    out = Path(args.out) if args.out else (
        TINY_OUT if args.tiny else COMPARE_OUT if base else DEFAULT_OUT)
    names = TINY_MODULES if args.tiny else MODULES
    if args.only:
        names = tuple(n.strip() for n in args.only.split(",") if n.strip())
        unknown = [n for n in names if n not in MODULES]
        if unknown:
            ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    started = datetime.now(UTC)
    load_start = _load()
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for name in names:
        print(f"bench: running {name}...", file=sys.stderr, flush=True)
        rows, seconds[name] = run_module(name, args.quick, args.tiny)
        print(f"bench: {name} took {seconds[name]:.1f} s", file=sys.stderr, flush=True)
        results += rows
    report = {"started_at": started.strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
              "tiny": args.tiny, "load_average": {"start": load_start, "end": _load()},
              "seconds": round(time.perf_counter() - t0, 1), "module_seconds":
              {k: round(v, 1) for k, v in seconds.items()}, "machine": machine(),
              "results": [_clean(r) for r in results]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(header(report))
    print(table(report, args.markdown))
    if base:
        print(f"\ncompared with {args.compare} ({header(base)}):")
        print(compare(report, base, args.markdown))
    print(f"\nwritten to {out}", file=sys.stderr)
    failed = [r["name"] for r in results if r["met"] is False]
    return 1 if failed else 0


def _load() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages (the other work the figures ran beside)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    value = row.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        row = dict(row, value=None)
    return row


if __name__ == "__main__":
    sys.exit(main())
