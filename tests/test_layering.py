"""The import layering of docs/LAYERING.md, checked on the source (ast, every import, also inside functions).

Each module of harness/, tasks/, trainers/ and leaderboards/ belongs to one layer; a layer may import only
the layers listed for it. The module graph must have no cycles. A new module falls in the layer of its
folder (harness/ modules must be placed explicitly: `test_every_harness_module_has_a_layer`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "tasks", "trainers", "leaderboards")

# harness/ holds the bottom layer (base), the models and the evaluation layer, and the application on top
HARNESS_LAYERS = {
    "base": ("harness", "harness.registry", "harness.seeds", "harness.environment", "harness.sandbox",
             "harness.sandbox_child"),
    "models": ("harness.models", "harness.sampling", "harness.kv_cache", "harness.grid_model", "harness.tokenizer", "harness.lora",
               "harness.export"),
    "evaluation": ("harness.evaluation", "harness.results", "harness.pretrain", "harness.pictures",
                   "harness.distributed"),
    "app": ("harness.run_spec", "harness.experiment", "harness.cli", "harness.__main__", "harness.lm_eval_model",
            "harness.lm_eval_tasks", "harness.lm_eval_tasks.harness_gsm8k"),
}
# layer -> the layers it may import (itself included)
ALLOWED = {
    "base": {"base"},
    "tasks": {"base", "tasks"},
    "models": {"base", "models"},
    "evaluation": {"base", "tasks", "models", "evaluation"},
    "trainers": {"base", "tasks", "models", "evaluation", "trainers"},
    "leaderboards": {"base", "evaluation", "leaderboards"},
    "app": {"base", "tasks", "models", "evaluation", "trainers", "leaderboards", "app"},
}


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


MODULES = module_files()


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    if top != "harness":
        return top
    for layer, names in HARNESS_LAYERS.items():
        if module in names:
            return layer
    return None


def imports_of(module: str, path: Path) -> set[str]:
    """Project modules that `module` imports (resolved: `from tasks import shapes` -> tasks.shapes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in MODULES:  # harness.evaluation.evaluate -> harness.evaluation
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if src.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                full = f"{src}.{a.name}"
                add(full if full in MODULES else src)
    return found


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def test_every_harness_module_has_a_layer():
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"place these modules in a layer (tests/test_layering.py and docs/LAYERING.md): {missing}"


def test_no_module_imports_a_layer_it_may_not():
    bad = []
    for m, deps in GRAPH.items():
        for d in deps:
            if layer_of(d) not in ALLOWED[layer_of(m)]:
                bad.append(f"{m} ({layer_of(m)}) imports {d} ({layer_of(d)})")
    assert not bad, "layering broken (docs/LAYERING.md):\n" + "\n".join(sorted(bad))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "trainers" not in ALLOWED["tasks"] and "app" not in ALLOWED["trainers"]
    assert "tasks.shapes" in imports_of("tasks.geneval", MODULES["tasks.geneval"])  # `from tasks import shapes`


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_docs_list_every_layer(layer):
    assert f"`{layer}`" in (ROOT / "docs" / "LAYERING.md").read_text()
