"""What a user gets wrong at start: one line on stderr naming the problem and the fix, exit code 2,
nothing started (no log line, no traceback), in a fraction of a second of CPU."""

from __future__ import annotations

import gzip
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIET = "[engine]\nlog_format = \"json\"\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(tmp_path: Path, settings: str, *args: str, env: dict[str, str] | None = None,
        ) -> tuple[int, str, str, float]:
    """Run run.py; return (exit code, stdout, stderr, CPU seconds the process used)."""
    config = tmp_path / "arena.toml"
    config.write_text(QUIET + settings)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, **(env or {})})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.returncode, proc.stdout, proc.stderr, cpu


def assert_one_line_user_error(result: tuple[int, str, str, float], *expected: str) -> None:
    code, out, err, cpu = result
    assert code == 2, err
    assert out == ""  # not even a log line: nothing had started
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and "engine.crashed" not in err
    for text in expected:
        assert text in err, err
    assert cpu < 2.0  # before heavy work (the database, the SDKs, the feed never started)


def _dir(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return f"[control]\nenabled = false\n[database]\nspill_path = \"{blocker}/spill.jsonl\"\n"


def _corrupt_gz(tmp_path: Path) -> str:
    (tmp_path / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage, not deflate data")
    return str(tmp_path / "broken.jsonl.gz")


def _not_recording(tmp_path: Path) -> str:
    with gzip.open(tmp_path / "notes.jsonl.gz", "wt") as f:
        f.write('{"hello": "world"}\n')
    return str(tmp_path / "notes.jsonl.gz")


def _recording(tmp_path: Path) -> bytes:
    """Return the gzip bytes of a good recording: the shipped sample's first 2,000 lines."""
    with gzip.open(ROOT / "tests" / "data" / "sample.jsonl.gz", "rb") as f:
        lines = [next(f) for _ in range(2000)]
    return gzip.compress(b"".join(lines), mtime=0)


def _truncated_gz(tmp_path: Path) -> str:
    data = _recording(tmp_path)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])  # cut mid-stream
    return str(tmp_path / "cut.jsonl.gz")


def _damaged_gz(tmp_path: Path) -> str:
    data = bytearray(_recording(tmp_path))
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # zeros in the middle of the deflate stream
    (tmp_path / "damaged.jsonl.gz").write_bytes(bytes(data))
    return str(tmp_path / "damaged.jsonl.gz")


CASES: dict[str, tuple[Callable[[Path], tuple[str, list[str]]], list[str]]] = {
    "missing replay": (lambda t: ("[control]\nenabled = false\n", ["--replay", "nope.jsonl.gz"]),
                       ["error: --replay nope.jsonl.gz: no such file", "--record FILE"]),
    "corrupt replay": (lambda t: ("[control]\nenabled = false\n", ["--replay", _corrupt_gz(t)]),
                       ["cannot read it", "--record"]),
    "replay truncated mid-file": (lambda t: ("[control]\nenabled = false\n",
                                             ["--replay", _truncated_gz(t)]),
                                  ["corrupt or truncated", "nothing was started"]),
    "replay damaged mid-file": (lambda t: ("[control]\nenabled = false\n",
                                           ["--replay", _damaged_gz(t)]),
                                ["corrupt or truncated", "nothing was started"]),
    "a speed that is not a number": (lambda t: ("", ["--speed", "abc"]),
                                     ["run.py: error: argument --speed:", "'abc'",
                                      "run.py --help"]),
    "an unknown model": (lambda t: ('[control]\nenabled = false\n[[traders]]\nname = "x"\n'
                                    'strategy = "llm"\nprovider = "openai"\n'
                                    'model = "gpt-99-turbo"\n', ["--dry-run"]),
                         ["settings error: ", "trader 'x': model 'gpt-99-turbo'",
                          '[llm.prices."gpt-99-turbo"]']),
    "--resume without --replay": (lambda t: ("[control]\nenabled = false\n", ["--resume"]),
                                  ["--resume continues a replay's arena"]),
    "not a recording": (lambda t: ("[control]\nenabled = false\n",
                                   ["--replay", _not_recording(t)]),
                        ["not a recording"]),
    "unwritable data directory": (lambda t: (_dir(t), []),
                                  ["database.spill_path directory", "not writable"]),
    "unknown strategy": (lambda t: ('[control]\nenabled = false\n[[traders]]\nname = "x"\n'
                                    'strategy = "ema_crosss"\n', ["--dry-run"]),
                         ["settings error: ", "arena.toml: trader 'x': unknown strategy "
                          "'ema_crosss'; expected one of llm, buy_and_hold, ema_cross"]),
    "bad strategy parameters": (lambda t: ('[control]\nenabled = false\n[[traders]]\n'
                                           'name = "x"\nstrategy = "ema_cross"\n'
                                           'params = { fast = 50, slow = 20 }\n', ["--dry-run"]),
                                ["settings error: ", "arena.toml: bad value for "
                                 "'traders.x.params': fast=50, slow=20; expected fast < slow"]),
    "a parameter of the wrong type": (lambda t: ('[control]\nenabled = false\n[[traders]]\n'
                                                 'name = "x"\nstrategy = "ema_cross"\n'
                                                 'params = { fast = "fast" }\n', ["--dry-run"]),
                                      ["arena.toml: bad value in 'traders.x.params'"]),
    "bad setting": (lambda t: ("[feed]\nmax_price_age_seconds = -3\n", []),
                    ["arena.toml: bad value for 'feed.max_price_age_seconds': -3"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_one_line_and_exit_code_2(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    settings, args = make(tmp_path)
    assert_one_line_user_error(run(tmp_path, settings, *args), *expected)


def test_a_control_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(tmp_path, f"[control]\nport = {port}\n", "--dry-run")
    assert_one_line_user_error(result, f"error: control port {port} on 127.0.0.1 is already in "
                                       "use", "[control] port")


def test_an_unreachable_database_url_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://arena:pw-NEVER-SHOWN-42@127.0.0.1:{free_port()}/arena"
    code, out, err, _ = run(tmp_path, "[control]\nenabled = false\n",
                            env={"DATABASE_URL": url})
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: DATABASE_URL is unreachable") and "unset it" in err
    assert "pw-NEVER-SHOWN-42" not in err and "Traceback" not in err


def test_the_replay_check_knows_every_kind_of_recorded_line() -> None:
    from engine.app import preflight
    from engine.market import recording

    assert preflight.KINDS == recording.KINDS
