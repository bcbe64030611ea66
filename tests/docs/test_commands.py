"""Every command README.md and the docs tell a user to type parses as the code parses it.

A `python run.py ...` line goes through the parser `engine.app.cli.main` would use (the engine's,
or a subcommand's); a `python -m module ...` line must name a module that exists. A command
whose flags drifted from the code, or a subcommand that does not exist, fails here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.app import backtest, cli, commands, demo, remote, sweep

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# `python run.py`, `.venv/bin/python run.py`, `python3 run.py`; `python -m x`.
COMMAND = re.compile(r"(?:^|[\s;&|(`])(?:\S*/)?python3?\s+(run\.py|-m\s+[\w.]+)(?=[\s`]|$)(.*)")
SHELL_OPERATORS = {"&", "&&", "|", "||", ";", "<", "2>", "2>&1"}
SUBPARSERS = {"backtest": backtest.parser, "report": commands.report_parser,
              "db": commands.db_parser, "demo": demo.parser, "sweep": sweep.parser,
              **{name: functools.partial(remote.parser, name) for name in remote.COMMANDS}}


def documented_commands() -> Iterator[tuple[str, str]]:
    """Yield (where, command line) for every run.py or -m command in the pages."""
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        joined: list[tuple[int, str]] = []
        for n, line in enumerate(lines, 1):
            if joined and joined[-1][1].endswith("\\"):  # a shell line continuation
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
            else:
                joined.append((n, line))
        for n, line in joined:
            for m in COMMAND.finditer(line):
                rest = m[2]
                # Inline code ends at the backtick; a shell comment is not part of the command.
                rest = rest.split("`", 1)[0]
                yield f"{page.relative_to(ROOT)}:{n}", f"{m[1]}{rest}".strip()


def parse(command: str) -> argparse.Namespace | None:
    """Parse one documented command as the code would; raise AssertionError if it is refused."""
    words = shlex.split(command, comments=True)
    for i, word in enumerate(words):  # the shell's redirections and operators end the command
        if word in SHELL_OPERATORS or word.startswith(">"):
            words = words[:i]
            break
    if words[0] == "-m":
        module = words[1]
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        return None
    assert words[0] == "run.py", words
    argv = words[1:]
    if argv and argv[0] in cli.SUBCOMMANDS:
        p = SUBPARSERS[argv[0]]()
        argv = argv[1:]
    else:
        p = cli.parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return p.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f"{command!r} is refused: {err.getvalue().strip()}"
        return None  # --help


COMMANDS = list(documented_commands())


def test_the_pages_show_commands_at_all() -> None:
    assert len(COMMANDS) >= 15
    assert {c.split()[1] for _, c in COMMANDS if c.startswith("run.py ") and len(c.split()) > 1} \
        >= {"--replay", "report", "db", "backtest"}


def test_every_subcommand_of_the_cli_has_its_parser_here() -> None:
    assert set(SUBPARSERS) == set(cli.SUBCOMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_parses(where: str, command: str) -> None:
    parse(command)


def test_a_subcommand_that_does_not_exist_is_refused() -> None:
    with pytest.raises(AssertionError, match="unrecognized arguments: nosuch"):
        parse("run.py nosuch")


def test_a_flag_value_the_cli_refuses_is_refused() -> None:
    with pytest.raises(AssertionError, match="--speed must be a number"):
        parse("run.py --replay x.jsonl.gz --speed abc")
