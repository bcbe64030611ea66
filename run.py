#!/usr/bin/env python3
"""arena's entry point: `python run.py --help`."""

import sys

from engine.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
