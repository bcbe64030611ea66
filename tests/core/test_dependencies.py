"""Every third-party import of the engine is declared in pyproject.toml; test tools stay out.

A module-level import in engine/ or strategies/ needs a `[project] dependencies` entry; an import
inside a function (an optional one) needs an entry there or in an extra. Import names are mapped
to distributions with the installed metadata (`import httpx2` -> the `httpx2` distribution).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "strategies")
TEST_TOOLS = {"aioresponses", "pytest", "hypothesis", "playwright", "jsonschema"}


def _name(requirement: str) -> str:
    """Return a requirement's normalised distribution name ("anthropic[aiohttp]>=2" -> ...)."""
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    return required, optional


def _imports() -> list[tuple[str, str, bool]]:
    """Return (file, top-level module, at module level?) for every absolute import."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            top = {id(n) for n in tree.body}
            top |= {id(n) for stmt in tree.body if isinstance(stmt, ast.If | ast.Try)
                    for n in ast.walk(stmt)}  # `if TYPE_CHECKING:` / try-imports at the top
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                rel = str(path.relative_to(ROOT))
                found += [(rel, n.split(".")[0], id(node) in top) for n in names]
    return found


def _third_party(module: str) -> bool:
    return module not in sys.stdlib_module_names and module not in (*PACKAGES, "__future__")


def test_every_third_party_import_is_declared() -> None:
    required, optional = _declared()
    dists = packages_distributions()
    undeclared = []
    for path, module, top in _imports():
        if not _third_party(module):
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        allowed = required if top else required | optional
        if not names & allowed:
            undeclared.append(f"{path}: {module} ({'module level' if top else 'optional'})")
    assert undeclared == []


def test_test_tools_are_never_imported_at_module_level_by_the_engine() -> None:
    leaked = [f"{path}: {module}" for path, module, top in _imports()
              if top and module in TEST_TOOLS]
    assert leaked == []


def test_test_tools_are_not_engine_dependencies() -> None:
    required, _ = _declared()
    assert required & TEST_TOOLS == set()
