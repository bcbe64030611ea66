"""The package layout is the architecture: imports only go down the data flow, never in a cycle.

Every import counts, including those inside functions and under TYPE_CHECKING: a lazy import is
still a dependency. The layers are checked in engine/ and strategies/; cycles in the whole tree
(engine/, strategies/, bench/, tests/ and run.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {  # package prefix → layer; a module may import its own layer or a lower one
    "engine.market": 1,
    "engine.paper": 2,
    "engine.traders": 3,
    "strategies": 3,
    "engine.store": 4,
    "engine.web": 5,
    "engine.report": 5,
    "engine.app": 6,
}
LAYERED = ("engine", "strategies")
TREE = (*LAYERED, "bench", "tests")  # and run.py


def _modules(tops: tuple[str, ...] = LAYERED) -> dict[str, Path]:
    out = {}
    for top in tops:
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    if tops == TREE:
        out["run"] = ROOT / "run.py"
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Return the project modules `path` imports (a name imported from a package counts as its
    submodule when there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def layer(module: str) -> int:
    """Return the layer of a project module: 0 for the core (engine's top-level modules)."""
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return 0


def graph(tops: tuple[str, ...] = LAYERED) -> dict[str, set[str]]:
    mods = _modules(tops)
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Return one cycle per back edge of a depth-first walk of `g` (empty: no cycle)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    return cycles


def test_no_module_imports_a_higher_layer() -> None:
    upward = sorted(f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
                    for m, deps in graph().items() for d in deps if layer(d) > layer(m))
    assert upward == []


def test_the_core_imports_no_package() -> None:
    core = {m: deps for m, deps in graph().items() if layer(m) == 0}
    assert "engine.clock" in core and "engine.cycle" in core
    assert {m: sorted(d for d in deps if layer(d)) for m, deps in core.items() if
            any(layer(d) for d in deps)} == {}


def test_there_is_no_import_cycle_anywhere_in_the_tree() -> None:
    assert find_cycles(graph(TREE)) == []


def test_a_cycle_would_be_caught() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(g) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_walk_sees_real_imports() -> None:
    g = graph(TREE)
    assert "engine.market.book" in g["engine.market.feed"]
    assert "engine.paper.accounts" in g["engine.paper.broker"]
    assert "strategies.base" in g["engine.traders.decide"]
    assert "bench.soak_results" in g["bench.soak"] and "engine.app.cli" in g["run"]
    assert "tests.support.broker" in g["tests.paper.test_broker"]


def test_a_higher_import_would_be_caught() -> None:
    assert layer("engine.app.cli") > layer("engine.web.control") > layer("engine.store.writer")
    assert layer("engine.store.writer") > layer("strategies.llm") == layer("engine.traders.decide")
    assert layer("engine.traders.decide") > layer("engine.paper.broker")
    assert layer("engine.paper.broker") > layer("engine.market.feed")
    assert layer("engine.market.feed") > layer("engine.clock") == 0


def test_no_two_modules_share_a_name_up_to_a_plural() -> None:
    stems: dict[str, list[str]] = {}
    for name in _modules():
        leaf = name.rpartition(".")[2]
        stems.setdefault(leaf.removesuffix("s"), []).append(name)
    clashes = {k: v for k, v in stems.items() if len({n.rpartition(".")[2] for n in v}) > 1}
    assert clashes == {}


def test_bench_does_not_import_the_tests() -> None:
    for path in (ROOT / "bench").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("tests"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("tests") for a in node.names), path
