"""`run.py db`: a URL that works while the command runs, one query as a table, the docs' queries."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
from pathlib import Path

import asyncpg

from engine.app.commands import print_rows, query
from tests.report.conftest import ROOT, Replayed


def docs_queries() -> list[str]:
    """Return every SQL statement of the ```sql blocks of README.md and the docs pages."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    statements = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        body = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
        statements += [s.strip() for s in body.split(";") if s.strip()]
    return statements


async def test_every_documented_query_runs_against_a_replayed_sample(replayed: Replayed) -> None:
    statements = docs_queries()
    assert len(statements) >= 5
    answered = 0
    for sql in statements:
        rows = await query(replayed.url, sql)  # raises on any error
        answered += bool(rows)
    assert answered >= 2  # the equity queries find the replay's rows (others filter by name)


def test_db_query_prints_the_result_as_a_table(replayed: Replayed) -> None:
    proc = replayed.run("db", "--config", str(replayed.settings), "--query",
                        "SELECT trader, count(*) AS fills FROM fills GROUP BY 1 ORDER BY 1")
    assert proc.returncode == 0, proc.stderr
    counts = asyncio.run(_counts(replayed.url))
    for trader, n in counts.items():
        assert re.search(rf"{trader}\s+│\s+{n}\s", proc.stdout), proc.stdout
    assert "(2 rows)" in proc.stdout


async def _counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {r["trader"]: r["n"] for r in await conn.fetch(
            "SELECT trader, count(*) AS n FROM fills GROUP BY 1")}
    finally:
        await conn.close()


def test_a_bad_query_is_one_line_and_exit_1(replayed: Replayed) -> None:
    proc = replayed.run("db", "--config", str(replayed.settings), "--query", "SELECT nope FROM x")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        'query error: UndefinedTableError: relation "x" does not exist']


async def test_db_keeps_the_embedded_server_up_until_ctrl_c(tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[database]\nembedded_dir = "{tmp_path}/pg"\n')
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "db", "--config", str(settings), "--no-psql",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        if not url:  # it exited: show why
            assert proc.stderr is not None
            raise AssertionError((await proc.stderr.read()).decode()[-3000:])
        assert url.startswith("postgresql://")
        for _ in range(2):  # works, and keeps working after the first connection is gone
            conn = await asyncpg.connect(url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM runs") == 0  # migrated
            finally:
                await conn.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_a_database_url_is_printed_without_its_password() -> None:
    from engine.app.commands import shown_url

    assert shown_url("postgresql://arena:s3cret@db.local:5432/arena", embedded=False) == (
        "postgresql://arena:***@db.local:5432/arena")
    embedded = "postgresql://postgres:@/postgres?host=/tmp/pg"
    assert shown_url(embedded, embedded=True) == embedded


def test_query_output_is_redacted_as_a_second_line_of_defence() -> None:
    key = "sk-proj-EchoedBack0123456789abcdefXYZ"
    out = io.StringIO()
    print_rows([{"trader": "gpt", "error": f"http 401: Incorrect API key provided: {key}",
                 "n": 3}], file=out)
    text = out.getvalue()
    assert key not in text
    assert "Incorrect API key provided: ***" in text
    assert "gpt" in text and "(1 row)" in text


def test_db_quarantine_marks_a_refused_row_and_refuses_an_unknown_id(replayed: Replayed) -> None:
    row_id = "01900000-0000-7000-8000-00000000abcd"
    asyncio.run(_refused(replayed.url, row_id))
    proc = replayed.run("db", "--config", str(replayed.settings), "--quarantine", row_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"row {row_id} of fills quarantined (CheckViolationError")
    marked = asyncio.run(_quarantined(replayed.url, row_id))
    assert marked is True

    unknown = "01900000-0000-7000-8000-00000000ffff"
    proc = replayed.run("db", "--config", str(replayed.settings), "--quarantine", unknown)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: no refused row has id {unknown} (see `writer.row_refused` in the log)")


async def _refused(url: str, row_id: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO quarantine (id, table_name, row_json, error) VALUES ($1, 'fills', "
            "'{}', 'CheckViolationError [23514]: refused') ON CONFLICT DO NOTHING", row_id)
    finally:
        await conn.close()


async def _quarantined(url: str, row_id: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval(
            "SELECT quarantined_at IS NOT NULL FROM quarantine WHERE id = $1", row_id))
    finally:
        await conn.close()
