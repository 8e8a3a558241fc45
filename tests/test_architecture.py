"""The house rules of the code base, checked on its source: the layout is the data flow, and stays that way.

* no import cycles among the modules of ``node/`` and ``pipelines/``;
* ``pipelines/`` never imports ``node/``; product code never imports ``tests``;
* no private name (``_x``) imported from another module of the project;
* private names of upstream libraries only inside the fence modules that say which behaviour they replace;
* no function longer than 80 lines; ``node/`` holds at most a dozen modules directly, the rest in stage folders;
* no test module imports a conftest module (shared helpers live in ``tests/support``); the benchmarks take
  only ``tests/support`` from the tests.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("node", "pipelines")
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_NODE_MODULES = 12

UPSTREAM_FENCES = {
    "pipelines/upstream/highdicom_seg.py",
    "pipelines/upstream/highdicom_iod.py",
    "pipelines/upstream/numpy_hugepages.py",
    "node/dicom/upstream/pynetdicom_reactor.py",
    "node/dicom/upstream/pynetdicom_config.py",
    "node/queue/fs_transport.py",
    "node/queue/redis_transport.py",
}
"""Modules allowed to touch upstream libraries' private names: each says what it replaces, for which versions."""


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO)
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


MODULES = dict(_modules())


def _test_modules() -> Iterator[tuple[str, Path]]:
    """The modules of ``tests/`` and ``bench/``, named as imports name them."""
    for folder in ("tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(name: str, path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import in the module, function-level ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, [alias.name for alias in node.names], node.lineno


def _project_target(module: str, names: list[str]) -> list[str]:
    """The project modules an import statement loads (``from a import b`` may load module ``a.b``)."""
    submodules = [f"{module}.{name}" for name in names if f"{module}.{name}" in MODULES]
    others = [name for name in names if f"{module}.{name}" not in MODULES]
    return submodules + ([module] if module in MODULES and (others or not names) else [])


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = graph.setdefault(name, set())
        for module, names, _ in _imports(name, path):
            edges.update(t for t in _project_target(module, names) if t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_pipelines_never_import_the_node_and_product_code_never_imports_tests() -> None:
    wrong = []
    for name, path in MODULES.items():
        for module, _, line in _imports(name, path):
            root = module.split(".")[0]
            if root == "tests" or (name.startswith("pipelines") and root == "node"):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert wrong == []


def test_no_private_name_crosses_a_module_boundary() -> None:
    wrong = []
    for name, path in MODULES.items():
        relative = str(path.relative_to(REPO))
        for module, names, line in _imports(name, path):
            if module == "__future__":
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if module in MODULES or module.split(".")[0] in PACKAGES:
                wrong += [f"{relative}:{line} takes {module}.{n}" for n in private]
            elif (private or any(part.startswith("_") for part in module.split("."))) and relative not in UPSTREAM_FENCES:
                wrong += [f"{relative}:{line} takes upstream private {module} {private}"]
    assert wrong == []


STANDARD_PRIVATE = {"os._exit"}
"""Underscored names the standard library documents as public API."""


def _own_names(tree: ast.AST) -> set[str]:
    """Names a module defines itself: functions, classes, assigned names and attributes."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    own.add(target.id)
                elif isinstance(target, ast.Attribute):
                    own.add(target.attr)
    return own


def _foreign_private_attributes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``x._name`` and ``getattr(x, "_name")`` where ``_name`` is not the module's own (someone else's private)."""
    own = _own_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr not in own and ast.unparse(node) not in STANDARD_PRIVATE:
                yield node.lineno, ast.unparse(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")):
            yield node.lineno, ast.unparse(node)


def test_upstream_private_attributes_only_inside_fences() -> None:
    wrong = []
    for _, path in MODULES.items():
        relative = str(path.relative_to(REPO))
        if relative in UPSTREAM_FENCES:
            continue
        wrong += [f"{relative}:{line} {text}" for line, text in _foreign_private_attributes(_tree(path))]
    assert wrong == []


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for name, path in MODULES.items():
        for function in _functions(_tree(path)):
            length = (function.end_lineno or function.lineno) - function.lineno + 1
            if length > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(REPO)}:{function.lineno} {function.name} ({length} lines)")
    assert long == []


def test_node_keeps_its_stages_in_folders() -> None:
    top_level = sorted(p.name for p in (REPO / "node").glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_NODE_MODULES, top_level


def test_no_test_imports_a_conftest_and_bench_takes_only_tests_support() -> None:
    """pytest loads conftest modules itself; importing one as well runs it twice under another name and hides
    what a helper is. Helpers shared between test folders or with the benchmarks go to ``tests/support``."""
    wrong = []
    for name, path in _test_modules():
        relative = path.relative_to(REPO)
        for module, names, line in _imports(name, path):
            if "conftest" in module.split(".") or "conftest" in names:
                wrong.append(f"{relative}:{line} imports a conftest module ({module})")
            elif name.startswith("bench") and module.startswith("tests") and not module.startswith("tests.support"):
                wrong.append(f"{relative}:{line} imports {module}: the benchmarks take only tests.support")
    assert wrong == []


@pytest.mark.parametrize("fence", sorted(UPSTREAM_FENCES))
def test_fences_exist_or_are_not_listed(fence: str) -> None:
    """A fence listed here is a real module (a stale entry would let private names in silently)."""
    assert (REPO / fence).is_file(), f"{fence} is listed as a fence but does not exist"
