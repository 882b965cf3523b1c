"""The apps' imports point down: audit ← policies ← services ← workflows ← hmsmgmt. A module may
import its own app and the apps below it, never one above (that is how a cycle starts). The only
exception is hmsmgmt's leaf helpers (core.safejson, core.http), which import nothing of ours."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["audit", "policies", "services", "workflows", "hmsmgmt"]
LEAVES = {"core.safejson", "core.http"}


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from m import a" as "m.a": a module or a name in m, either way it needs m.
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_imports_point_down() -> None:
    upward = []
    for rank, app in enumerate(LAYERS):
        above = LAYERS[rank + 1:]
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for name, line in _imports(path):
                top = name.split(".")[0]
                if top in above and not any(name == leaf or name.startswith(leaf + ".") for leaf in LEAVES):
                    upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not upward, "imports pointing up: " + "; ".join(upward)


def test_the_leaf_helpers_import_nothing_of_ours() -> None:
    for leaf in LEAVES:
        path = ROOT / (leaf.replace(".", "/") + ".py")
        ours = [n for n, _ in _imports(path) if n.split(".")[0] in LAYERS]
        assert not ours, f"{leaf} imports {ours}"
