"""The command line's argument parser: a bad flag or value is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), naming `--help`."""

    def error(self, message: str) -> NoReturn:
        """Print `message` in one line on stderr and exit with code 2."""
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)
