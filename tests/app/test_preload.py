"""What building the engine imports lazily is imported early, beside the database's start
(engine.app.build.preload), and the list of it stays whole."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

from engine.app import build

ROOT = Path(__file__).resolve().parents[2]


def test_every_lazy_import_of_the_build_is_preloaded() -> None:
    tree = ast.parse((ROOT / "engine" / "app" / "build.py").read_text(encoding="utf-8"))
    lazy = {node.module for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn) if isinstance(node, ast.ImportFrom) and node.module}
    assert lazy - {"strategies.base"} <= set(build.BUILD_MODULES), \
        sorted(lazy - set(build.BUILD_MODULES))
    for name in build.BUILD_MODULES:
        importlib.import_module(name)  # each one exists


def test_preload_imports_them_in_a_fresh_interpreter() -> None:
    code = ("import sys; from engine.app import build; build.preload(); "
            "print(all(m in sys.modules for m in build.BUILD_MODULES))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
