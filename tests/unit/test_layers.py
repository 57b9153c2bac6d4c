"""The layer rules of the design's "Layers: one rule each", enforced by parsing every import.

Each product file is parsed with `ast`: `import x`, `from x import y`, relative imports resolved
against the file's package, imports inside functions and under `if TYPE_CHECKING:` all count for
the layer rules. The cycle check uses module-level imports only (what runs at import time).
Module names are relative to the extension root: `addon/client.py` is `addon.client`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("__init__.py", "contract", "addon", "operators", "panels", "backend")
BLENDER = frozenset({"bpy", "bmesh", "mathutils", "bpy_extras", "gpu", "gpu_extras", "bl_math", "blf", "bgl",
                     "aud", "imbuf", "idprop", "freestyle"})
HEAVY = frozenset({"torch", "diffusers", "transformers", "accelerate", "cv2", "OpenEXR", "trimesh", "numba"})
ML = frozenset({"torch", "diffusers", "transformers", "accelerate"})
ADDON_SIDE = frozenset({"addon", "operators", "panels"})
PANEL_IO = frozenset({"subprocess", "shutil", "socket"})
CONTRACT_OK = frozenset(sys.stdlib_module_names) | {"numpy"}


@dataclass(frozen=True)
class Import:
    path: str  # posix, relative to the root
    line: int
    text: str  # the statement as written (ast.unparse)
    source: str  # importing module
    targets: tuple[str, ...]  # resolved dotted names: a product module where one exists
    relative: bool
    module_level: bool  # neither in a function nor under `if TYPE_CHECKING:`

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def module_name(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files(root: Path) -> Iterator[Path]:
    for entry in PRODUCT:
        path = root / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(node: ast.AST, module_level: bool = True) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, module_level
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in [*node.body, *node.orelse]:
            yield from _statements(child, module_level and child not in node.body)
        return
    inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    for sub in ast.iter_child_nodes(node):
        yield from _statements(sub, inner)


def scan(root: Path) -> list[Import]:
    files = {f: f.relative_to(root) for f in product_files(root)}
    modules = {module_name(rel) for rel in files.values()}
    found: list[Import] = []
    for file, rel in files.items():
        source = module_name(rel)
        package = source if rel.name == "__init__.py" else source.rpartition(".")[0]
        for node, module_level in _statements(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".") if package else []
                    if node.level - 1 > len(parts):
                        base = "<outside the extension>." + base
                    else:
                        parts = parts[:len(parts) - (node.level - 1)]
                        base = ".".join([*parts, *([node.module] if node.module else [])])
                for alias in node.names:
                    candidate = f"{base}.{alias.name}" if base else alias.name
                    use = candidate if (candidate in modules or not base) and alias.name != "*" else base
                    if use not in targets:
                        targets.append(use)
            found.append(Import(rel.as_posix(), node.lineno, ast.unparse(node), source, tuple(targets),
                                isinstance(node, ast.ImportFrom) and node.level > 0, module_level))
    return found


def top(name: str) -> str:
    return name.split(".")[0]


@dataclass(frozen=True)
class Rule:
    name: str
    scope: tuple[str, ...]  # files or folders relative to the root
    why: str
    broken_by: Callable[[Import], bool]

    def applies(self, path: str) -> bool:
        return any(path == s or path.startswith(s + "/") for s in self.scope)

    def violations(self, imports: list[Import]) -> list[str]:
        return [i.where() for i in imports if self.applies(i.path) and self.broken_by(i)]


def _any_top(names: frozenset[str]) -> Callable[[Import], bool]:
    return lambda imp: any(top(t) in names for t in imp.targets)


def _contract_breaks(imp: Import) -> bool:
    if imp.relative:  # only itself, relatively
        return any(top(t) != "contract" for t in imp.targets)
    return any(top(t) not in CONTRACT_OK for t in imp.targets)


RULES = (
    Rule("backend-never-blender", ("backend",), "backend/ is its own process: no bpy/bmesh/mathutils, no add-on code",
         _any_top(BLENDER | ADDON_SIDE)),
    Rule("addon-side-light", ("__init__.py", "addon", "operators", "panels", "contract"),
         "Blender's Python has no torch/diffusers/transformers/accelerate/cv2/OpenEXR/trimesh, and the "
         "add-on reaches the backend only through contract/", _any_top(HEAVY | {"backend"})),
    Rule("contract-stdlib-numpy", ("contract",),
         "contract/ imports only the standard library, numpy and itself (relatively)", _contract_breaks),
    Rule("imaging-pure", ("backend/imaging",), "backend/imaging/ is pure numpy: no torch/diffusers/... and no bpy",
         _any_top(ML | BLENDER)),
    Rule("panels-draw-only", ("panels",), "panels/ draw only: no backend, no subprocess/shutil/socket",
         _any_top(PANEL_IO | {"backend"})),
)


def import_graph(imports: list[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {i.source: set() for i in imports}
    for imp in imports:
        if imp.module_level:
            graph[imp.source].update(t for t in imp.targets if t in graph and t != imp.source)
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _shortest_cycle(graph: dict[str, set[str]], members: frozenset[str], start: str) -> list[str]:
    paths = {start: [start]}
    queue = [start]
    for node in queue:  # breadth first; the queue grows while it is read
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (shortest, from its smallest module) per strongly connected component."""
    reach = {node: _reachable(graph, node) for node in graph}
    components = {frozenset(m for m in reach[n] if n in reach[m]) for n in graph if n in reach[n]}
    return sorted(_shortest_cycle(graph, c, min(c)) for c in components)


def _format(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)


def test_product_tree_is_found() -> None:
    present = [entry for entry in PRODUCT if (ROOT / entry).exists()]
    assert present, f"none of the product folders {PRODUCT} found under {ROOT}: the layer test would pass vacuously"
    assert scan(ROOT), f"no imports found in the product files under {ROOT}"


def test_scanner_sees_real_imports() -> None:
    imports = scan(ROOT)
    assert any(i.path.startswith("addon/") and "bpy" in map(top, i.targets) for i in imports), "no bpy in addon/"
    assert any(i.path.startswith("backend/") and "torch" in map(top, i.targets) for i in imports), "no torch in backend"


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_layer_rule(rule: Rule) -> None:
    if not any((ROOT / s).exists() for s in rule.scope):
        pytest.skip(f"none of {rule.scope} exists yet")
    broken = rule.violations(scan(ROOT))
    assert not broken, _format(f"layer rule {rule.name!r} broken ({rule.why})", broken)


def test_no_import_cycles() -> None:
    found = cycles(import_graph(scan(ROOT)))
    assert not found, _format("module-level import cycles, one per strongly connected component",
                              [" -> ".join(c) for c in found])


SYNTHETIC = {
    "__init__.py": "def register():\n    from .addon import client\n",
    "backend/__init__.py": "",
    "backend/protocol.py": "import json\n",
    "backend/bad.py": "import os\nfrom bpy.props import IntProperty\n",
    "backend/imaging/__init__.py": "",
    "backend/imaging/bad.py": "import numpy\n\n\ndef f():\n    import torch.nn\n",
    "addon/__init__.py": "",
    "addon/client.py": "import bpy\nfrom ..backend import protocol\n",
    "addon/bad.py": "def f():\n    import torch\n",
    "addon/a.py": "from . import b\n\n\ndef f():\n    from . import c\n",
    "addon/b.py": "from typing import TYPE_CHECKING\nfrom .a import X\nif TYPE_CHECKING:\n    from . import c\n",
    "addon/c.py": "from .b import Y\n",
    "contract/__init__.py": "from . import views\n",
    "contract/views.py": "import json\nimport numpy as np\n\nimport OpenEXR\n",
    "panels/__init__.py": "",
    "panels/bad.py": "import bpy\nimport subprocess\n",
}
EXPECTED = {  # rule -> the one violation the synthetic tree plants for it
    "backend-never-blender": ["backend/bad.py:2: from bpy.props import IntProperty"],
    "addon-side-light": ["addon/bad.py:2: import torch", "addon/client.py:2: from ..backend import protocol",
                         "contract/views.py:4: import OpenEXR"],
    "contract-stdlib-numpy": ["contract/views.py:4: import OpenEXR"],
    "imaging-pure": ["backend/imaging/bad.py:5: import torch.nn"],
    "panels-draw-only": ["panels/bad.py:2: import subprocess"],
}


@pytest.fixture
def synthetic(tmp_path: Path) -> list[Import]:
    for rel, text in SYNTHETIC.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return scan(tmp_path)


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_rule_can_fail(rule: Rule, synthetic: list[Import]) -> None:
    assert sorted(rule.violations(synthetic)) == EXPECTED[rule.name]


def test_scanner_resolves_relative_and_function_imports(synthetic: list[Import]) -> None:
    targets = {(i.path, t, i.module_level) for i in synthetic for t in i.targets}
    assert ("__init__.py", "addon.client", False) in targets
    assert ("addon/client.py", "backend.protocol", True) in targets
    assert ("addon/b.py", "addon.a", True) in targets and ("addon/b.py", "addon.c", False) in targets


def test_cycle_check_can_fail(synthetic: list[Import]) -> None:
    # a -> b -> a is a cycle; b -> c only under TYPE_CHECKING and a -> c only in a function: not cycles.
    assert cycles(import_graph(synthetic)) == [["addon.a", "addon.b", "addon.a"]]


REGISTER_LIGHT = HEAVY | {"numpy"}  # what Blender should not have to import to show the add-on


def register_time_imports(imports: list[Import]) -> list[Import]:
    """The module-level imports of everything ``register()`` loads: the root ``__init__``'s imports (made in
    its functions) and all that those modules import at module level, followed through the product tree."""
    graph = import_graph(imports)
    todo = [t for i in imports if i.source == "" for t in i.targets if t in graph]
    loaded = set(todo)
    while todo:
        for nxt in graph[todo.pop()] - loaded:
            loaded.add(nxt)
            todo.append(nxt)
    return [i for i in imports if i.source in loaded and i.module_level]


def test_register_imports_nothing_heavy() -> None:
    imports = scan(ROOT)
    heavy = [i.where() for i in register_time_imports(imports) if any(top(t) in REGISTER_LIGHT for t in i.targets)]
    assert heavy == [], _format("imported when Blender registers the add-on (import these inside the function "
                                "that needs them)", heavy)
    assert len(register_time_imports(imports)) > 20  # the walk really follows the add-on's modules


def test_register_walk_can_fail(tmp_path: Path) -> None:
    files = {"__init__.py": "def register():\n    from .operators import op\n",
             "operators/__init__.py": "", "operators/op.py": "from ..addon import helper\n",
             "addon/__init__.py": "", "addon/helper.py": "import numpy as np\n\ndef f():\n    import torch\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = [i.where() for i in register_time_imports(scan(tmp_path))
             if any(top(t) in REGISTER_LIGHT for t in i.targets)]
    assert found == ["addon/helper.py:1: import numpy as np"]
