"""The layering of docs/ARCHITECTURE.md, read from the source: imports run one way, never in circles,
and no module takes a private name from another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "keras_vessel"

# Lowest first. A module may import its own layer and the layers before it, never a later one.
LAYERS = [
    ("core", ("keras_vessel.checks", "keras_vessel.config", "keras_vessel.errors", "keras_vessel.interrupts",
              "keras_vessel.io", "keras_vessel.locks", "keras_vessel.progress", "keras_vessel.provenance",
              "keras_vessel.workers")),
    ("data", ("keras_vessel.data",)),
    ("losses", ("keras_vessel.losses",)),
    ("models", ("keras_vessel.models",)),
    ("training", ("keras_vessel.training",)),
    ("evaluation", ("keras_vessel.evaluation",)),
    ("measure", ("keras_vessel.measure",)),
    ("serving", ("keras_vessel.serving",)),
    # the package itself registers the custom objects (losses, layers), the demo runs everything,
    # finetune runs training, then the threshold and report of evaluation
    ("application", ("keras_vessel.demo", "keras_vessel.finetune", "keras_vessel")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes if prefix != "keras_vessel"):
            return index
    if module == "keras_vessel":
        return len(LAYERS) - 1
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py; add it to one")


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) of every import in the file, function-level ones included."""
    found = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in SOURCES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: module_name(path))
def test_imports_run_down_the_layers(path):
    mine = layer_of(module_name(path))
    for imported, names, line in imports(path):
        if not imported.startswith("keras_vessel"):
            continue
        targets = [imported] if names == [] or imported != "keras_vessel" else [f"keras_vessel.{n}" for n in names]
        for target in targets:
            theirs = layer_of(target)
            assert theirs <= mine, (
                f"{module_name(path)} (layer {LAYERS[mine][0]}) imports {target} (layer {LAYERS[theirs][0]}) "
                f"at line {line}: imports must run one way, {' -> '.join(name for name, _ in LAYERS)}"
            )


def test_no_import_circles():
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        mine = module_name(path)
        edges = graph.setdefault(mine, set())
        for imported, names, _ in imports(path):
            if imported.startswith("keras_vessel") and imported != mine:
                candidates = [f"{imported}.{name}" for name in names] + [imported]
                edges.add(next((c for c in candidates if c in {module_name(p) for p in SOURCES}), imported))
    visiting, done = [], set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycle = visiting[visiting.index(node):] + [node]
            raise AssertionError(f"import circle: {' -> '.join(cycle)}")
        visiting.append(node)
        for target in graph.get(node, ()):
            # a package's __init__ importing its own submodules is how it exports them, not a circle
            if not target.startswith(node + "."):
                visit(target)
        visiting.pop()
        done.add(node)

    for node in graph:
        visit(node)


@pytest.mark.parametrize("folder", ["keras_vessel", "cli", "tests", "benchmarks", "experiments"])
def test_no_module_imports_a_private_name_of_another(folder):
    offenders = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for imported, names, line in imports(path):
            if not imported.startswith(("keras_vessel", "experiments", "benchmarks")):
                continue
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            if private or any(part.startswith("_") and not part.startswith("__") for part in imported.split(".")):
                offenders.append(f"{path.relative_to(REPO)}:{line} imports {imported} {private}")
    assert not offenders, "\n".join(offenders)
