"""The package reads as the pipeline: each layer imports only the layers below it (README, Layout).

Layers, bottom to top: shared helpers (errors, io, config types, outputs) -> data -> model and losses
(incl. the CPU speed-ups) -> training -> evaluation: instructions -> engine -> scoring -> reports ->
the evaluation procedures (eval/settings, run, cli) -> entry points (train, evaluate, compare, ...) and
the Hydra config store (conf.py), which registers the schemas of every layer.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "coin_lightning"
ORDER = ["base", "data", "model", "training", "eval.instructions", "eval.engine", "eval.scoring", "eval.reports",
         "eval", "entry"]


def layer(module: str) -> str:
    """The layer of a dotted ``coin_lightning`` module name."""
    parts = module.split(".")[1:]
    if not parts or parts[-1] == "__main__":
        return "entry"
    head = parts[0]
    if head in ("errors", "io", "config_types", "outputs"):
        return "base"
    if head in ("losses", "speedups"):
        return "model"
    if head in ("data", "model", "training"):
        return head
    if head == "eval":
        sub = parts[1] if len(parts) > 1 else ""
        return f"eval.{sub}" if sub in ("instructions", "engine", "scoring", "reports") else "eval"
    return "entry"


def imports(path: Path) -> list[str]:
    """The ``coin_lightning`` modules a file imports (module-level and inside functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "coin_lightning":  # from coin_lightning import x
            out += [f"coin_lightning.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("coin_lightning"):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("coin_lightning")]
    return out


def test_layer_of_known_modules():
    assert layer("coin_lightning.errors") == "base"
    assert layer("coin_lightning.data.__main__") == "entry"
    assert layer("coin_lightning.eval.engine.predict") == "eval.engine"
    assert layer("coin_lightning.eval.run") == "eval"
    assert layer("coin_lightning.compare") == "entry"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_layers_below(path: Path):
    module = ".".join(("coin_lightning", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    mine = ORDER.index(layer(module))
    above = [m for m in imports(path) if ORDER.index(layer(m)) > mine]
    assert not above, f"{module} ({layer(module)}) imports {above} from a layer above it"


def test_modules_stay_under_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 300}
    assert not long, f"modules over 300 lines: {long}"


def _module_name(path: Path) -> str:
    return ".".join(("coin_lightning", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """``module -> the package's modules it imports`` (module level and inside functions; ``from a import b``
    points to ``a.b`` when that is a module), over the whole package."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("coin_lightning"):
                edges |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
        graph[name] = edges & modules.keys()
    return graph


def test_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "coin_lightning.model.loading" in graph["coin_lightning.eval.instructions.perturb.word"]
    assert "coin_lightning.losses" in graph["coin_lightning.model.module"]


def test_no_import_cycle_in_the_whole_package():
    """Within a layer too (the layer test above only sees imports across layers)."""
    graph, state, cycles = import_graph(), {}, []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(trail[trail.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
