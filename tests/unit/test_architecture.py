"""The shape of the package, kept so: layers downhill, no import cycle, small modules, simple functions.

* Layers: ``tasks.cli`` may import ops, steps and runtime; ``tasks.ops`` steps
  and runtime; ``tasks.steps`` runtime; ``tasks.runtime`` nothing above it.
* No import cycle among the modules of ``tasks``, and no import inside a
  function except the few kept for start-up time, listed here by name.
* No module under ``tasks/`` over 600 lines; no function over cyclomatic
  complexity 15, as radon measures it (``radon cc``: one per decision point,
  boolean operators and comprehensions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tasks"
LAYERS = {"runtime": 0, "steps": 1, "ops": 2, "cli": 3}
MAX_LINES = 600
MAX_COMPLEXITY = 15
#: Imports inside functions, each for start-up time (a converged `fab deploy` should not load them).
LAZY_IMPORTS = {
    ("tasks/__init__.py", "tasks.cli.local"),  # `fab` imports the package, `inv` needs the collection
    ("tasks/runtime/templating.py", "jinja2"),  # a cached render never needs Jinja2
    ("tasks/runtime/ssh.py", "fabric"), ("tasks/runtime/ssh.py", "paramiko"),
    ("tasks/runtime/knownhosts.py", "paramiko"), ("tasks/runtime/knownhosts.py", "paramiko.hostkeys"),
    ("tasks/runtime/knownhosts.py", "fabric"), ("tasks/runtime/knownhosts.py", "hmac"),
    ("tasks/runtime/knownhosts.py", "base64"), ("tasks/runtime/knownhosts.py", "hashlib"),
    ("tasks/runtime/report.py", "rich.console"), ("tasks/runtime/report.py", "rich.table"),
    ("tasks/runtime/report.py", "difflib"),
    ("tasks/ops/status.py", "rich.console"), ("tasks/ops/status.py", "rich.table"),
    ("tasks/steps/iso/progress.py", "rich.progress"), ("tasks/steps/iso/chain.py", "paramiko"),
    ("tasks/cli/fabric_compat.py", "fabric.main"),
    ("tasks/steps/netplan.py", "yaml"),  # only hosts with netplan need a YAML parser
    # The ISO transfer machinery (chain, legs, relay programs) only when something is staged:
    ("tasks/steps/iso/step.py", "tasks.steps.iso.delivery"),
    ("tasks/steps/iso/__init__.py", "tasks.steps.iso.delivery"),
    ("tasks/cli/fab.py", "tasks.steps.iso.delivery"),
}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path):
    """(imported module, inside a function?) for every import of the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package[:len(package) - child.level + 1] if child.level else []
                target = ".".join(base + ([child.module] if child.module else []))
                found.append((target, inner))
                for alias in child.names:  # `from . import x` may name a module
                    found.append((f"{target}.{alias.name}", inner))
            visit(child, inner)

    visit(tree, False)
    return found


def internal_graph():
    names = {module_name(p): p for p in modules()}
    graph = {}
    for name, path in names.items():
        graph[name] = {target for target, _nested in imports_of(path) if target in names and target != name}
    return graph


def layer(name: str):
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_layers_import_downhill_only():
    wrong = []
    for name, targets in internal_graph().items():
        for target in targets:
            if layer(name) is not None and layer(target) is not None and layer(target) > layer(name):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_import_cycle():
    graph = internal_graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif not state.get(target):
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    assert cycles == []


def test_no_import_inside_a_function_but_the_listed_lazy_ones():
    def allowed(rel, target):
        # `from x import y` is recorded as x and as x.y (y may be a module): x.y is covered by x.
        return any(r == rel and (target == m or target.startswith(m + ".")) for r, m in LAZY_IMPORTS)

    nested = {(str(path.relative_to(ROOT)), target) for path in modules()
              for target, inside in imports_of(path) if inside}
    assert sorted(item for item in nested if not allowed(*item)) == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_no_function_over_the_complexity_bound():
    from radon import complexity as cc  # in the test extras

    over = []
    for path in modules():
        for block in cc.cc_visit(path.read_text()):
            for item in [block] + list(getattr(block, "methods", []) or []):
                if getattr(item, "is_method", None) is not None or item.__class__.__name__ == "Function":
                    if item.complexity > MAX_COMPLEXITY:
                        over.append(f"{path.relative_to(ROOT)}:{item.lineno} {item.name} ({item.complexity})")
    assert over == []
