"""The project's imports: apps point down, modules never form a cycle, and imports inside functions
say why they are there.

Apps, lowest first. A module may import its own app and the apps below it, never one above (that
is how a cycle between apps starts): core is what everyone may use and imports no app of ours;
hmsmgmt (the project package: settings, urls, the /mgmt/ router) sits on top. legacy/ holds only
migration history and imports nothing of ours."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["core", "audit", "accounts", "policies", "fleet", "health", "slo", "autoscaling", "workflows",
          "schedules", "controller", "console", "hmsmgmt"]
OURS = set(LAYERS) | {"legacy"}


def _modules() -> dict[str, Path]:
    found = {}
    for top in sorted(OURS):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path, modules: dict[str, Path] | None = None) -> Iterator[tuple[str, int, bool, ast.stmt]]:
    """(imported module, line, inside a function?, node) for every import of ours in the file,
    function-local ones included. `from pkg import name` counts as pkg.name when that is a module."""
    modules = MODULES if modules is None else modules
    tree = ast.parse(path.read_text(), str(path))
    local: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            local |= {id(n) for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        for name in names:
            if name.split(".")[0] in OURS:
                yield name, node.lineno, id(node) in local, node


def _graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = MODULES if modules is None else modules
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name, _line, _local, _node in _imports(path, modules):
            while name and name not in modules:  # a name inside a module: the module
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
    return graph


def test_imports_point_down() -> None:
    upward = []
    for module, path in MODULES.items():
        app = module.split(".")[0]
        if app == "legacy":
            ours = [n for n, *_ in _imports(path)]
            upward += [f"{path.relative_to(ROOT)} imports {n}" for n in ours if not n.startswith(module.split('.')[0])]
            continue
        rank = LAYERS.index(app)
        for name, line, _local, _node in _imports(path):
            top = name.split(".")[0]
            if top == "legacy" or LAYERS.index(top) > rank:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not upward, "imports pointing up: " + "; ".join(upward)


def test_core_imports_no_app() -> None:
    found = [f"{MODULES[m].relative_to(ROOT)} imports {n}" for m in MODULES if m.split(".")[0] == "core"
             for n, *_ in _imports(MODULES[m]) if n.split(".")[0] != "core"]
    assert not found, found


def test_no_import_cycle_between_modules() -> None:
    """Tarjan's strongly connected components over the module graph; any component of more than
    one module (or a module importing itself) is a cycle."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" ⇄ ".join(c) for c in cycles)


def test_the_graph_sees_function_local_imports(tmp_path: Path) -> None:
    """The check itself can fail: an import hidden in a function is an edge like any other."""
    fake = {"core.a": tmp_path / "a.py", "core.b": tmp_path / "b.py"}
    fake["core.a"].write_text("def f():\n    from core import b  # test\n")
    fake["core.b"].write_text("from core.a import f\n")
    assert _graph(fake) == {"core.a": {"core.b"}, "core.b": {"core.a"}}


def test_function_local_imports_say_why() -> None:
    """An import of ours inside a function hides a dependency from the module's head; each one
    carries a comment on its line or the line above saying why it cannot be at the top."""
    silent = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        for name, line, local, _node in _imports(path):
            if not local:
                continue
            if "#" in lines[line - 1]:
                continue
            above = line - 2  # a block of imports shares the comment above its first line
            while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                above -= 1
            if above < 0 or not lines[above].strip().startswith("#"):
                silent.append(f"{path.relative_to(ROOT)}:{line} ({name})")
    assert not silent, "function-local imports without a reason: " + "; ".join(silent)
