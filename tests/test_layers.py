"""The import graph of rnnvision/: imports point only downwards, and close no cycle.

Layers, bottom to top (a module may import from its own unit and from lower layers;
units of one layer do not import each other):

    config_checks -> cells -> fused -> recurrence
      -> {metrics, data, models, viz, nn, interop, testing}
      -> tasks -> train -> sweep -> ablation -> the package root (rnnvision/__init__.py)

Every `import` / `from ... import` statement counts, wherever it stands (function-local
imports and `if TYPE_CHECKING:` blocks included): a hidden import is still a wire. Read
from the source with `ast`; nothing is imported. The last tests inject a deliberate
upward import, a cycle and a sideways import into an in-memory copy of the tree and
check that each is reported.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "rnnvision"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: list[tuple[str, ...]] = [
    ("config_checks",),
    ("cells",),
    ("fused",),
    ("recurrence",),
    ("metrics", "data", "models", "viz", "nn", "interop", "testing"),
    ("tasks",),
    ("train",),
    ("sweep",),
    ("ablation",),
    ("",),  # the package root, rnnvision/__init__.py
]
LEVEL = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def read_tree(root: pathlib.Path = ROOT) -> dict[str, str]:
    """{dotted module name: source} for every .py file of the package."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(root).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text()
    return sources


def _is_package(name: str, modules: dict[str, str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def imports_of(name: str, source: str, modules: dict[str, str]) -> set[str]:
    """The rnnvision modules that `name`'s source imports (resolved to known modules)."""
    base = name if _is_package(name, modules) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = base.split(".")[: len(base.split(".")) - node.level + 1]
                module = ".".join(anchor + ([module] if module else []))
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself
            targets = [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # an attribute, not a module
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def unit_of(module: str) -> str:
    """The layer unit of a module: its first name below the package ("" for the root)."""
    return module.split(".")[1] if "." in module else ""


def violations(modules: dict[str, str]) -> list[str]:
    """Upward and sideways imports between units, and import cycles."""
    graph = {m: imports_of(m, src, modules) for m, src in modules.items()}
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = unit_of(module), unit_of(target)
            if a == b:
                continue
            if a not in LEVEL or b not in LEVEL:
                found.append(f"{module} -> {target}: a unit missing from LAYERS")
            elif LEVEL[b] > LEVEL[a]:
                found.append(f"{module} -> {target}: points up ({a!r} is below {b!r})")
            elif LEVEL[b] == LEVEL[a]:
                found.append(f"{module} -> {target}: sideways ({a!r} and {b!r} share a layer)")
    found += [f"cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in read_tree()}
    assert units <= set(LEVEL), f"add these to LAYERS: {sorted(units - set(LEVEL))}"


def test_imports_point_only_downwards_and_close_no_cycle():
    found = violations(read_tree())
    assert not found, "\n".join(found)


def _with_line(modules: dict[str, str], module: str, line: str) -> dict[str, str]:
    """A copy of the tree with `line` added inside a function of `module` (a hidden import)."""
    return {**modules, module: modules[module] + f"\n\ndef _injected():\n    {line}\n"}


@pytest.mark.parametrize("module,line,expected", [
    ("rnnvision.cells.lstm", "from rnnvision.train import loop",
     "rnnvision.cells.lstm -> rnnvision.train.loop: points up"),
    ("rnnvision.tasks.row_mnist", "from rnnvision.train.config import base_config",
     "rnnvision.tasks.row_mnist -> rnnvision.train.config: points up"),
    ("rnnvision.models.video", "import rnnvision.data.mnist",
     "rnnvision.models.video -> rnnvision.data.mnist: sideways"),
    ("rnnvision.recurrence", "from . import tasks",
     "rnnvision.recurrence -> rnnvision.tasks: points up"),
    ("rnnvision.models.attention", "from rnnvision.models import captioner",
     "cycle: rnnvision.models.attention -> rnnvision.models.captioner"),
])
def test_a_deliberate_bad_import_is_reported(module, line, expected):
    modules = read_tree()
    assert not any(expected in v for v in violations(modules))
    found = violations(_with_line(modules, module, line))
    assert any(expected in v for v in found), found
