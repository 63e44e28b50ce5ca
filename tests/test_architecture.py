"""The package's import graph: no circles, and no import from a lower layer to a higher one
(docs/architecture.md draws the layers). Read from the source with ``ast``, so it checks every
import, including the ones deferred into functions."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import distill_doctor

ROOT = Path(distill_doctor.__file__).parent

# Bottom to top. A unit (top-level module or subpackage) may import its own layer or lower ones.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer)
    for layer in (
        {"__init__", "vocabulary", "errors", "atomic", "paths", "devices", "stats"},
        {"data"},
        {"verify"},
        {"text", "causal_lm"},
        {"losses"},
        {"train", "produce"},
        {"probes"},
        {"speculative"},
        {"reports"},
        {"diagnose"},
        {"testing"},
        {"organisms", "demo", "closed_loop"},
        {"cli", "__main__"},
    )
)
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit_of(module: str) -> str:
    """``distill_doctor.train.engine`` -> ``train``; ``distill_doctor`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imported_units(path: Path) -> set[str]:
    """The package units a source file imports (absolute imports; the package uses no relative ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "distill_doctor":
                found.update(unit_of(f"distill_doctor.{a.name}") for a in node.names)
            elif node.module.startswith("distill_doctor."):
                found.add(unit_of(node.module))
        elif isinstance(node, ast.Import):
            found.update(unit_of(a.name) for a in node.names if a.name.startswith("distill_doctor."))
    return found


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        src = unit_of(module_name(path))
        graph[src].update(u for u in imported_units(path) if u != src)
    return graph


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in ROOT.rglob("*.py")}
    assert units - set(LAYER_OF) == set(), "add new modules to LAYERS (and docs/architecture.md)"


def test_no_import_goes_up_a_layer():
    upward = sorted(
        f"{src} -> {dst}"
        for src, dsts in unit_graph().items()
        for dst in dsts
        if LAYER_OF.get(dst, -1) > LAYER_OF.get(src, -1)
    )
    assert upward == []


def test_no_import_circle_between_modules():
    """Module-level graph (not only units): no two modules import each other, even lazily."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        name = module_name(path)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distill_doctor"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("distill_doctor"))
        graph[name] = deps
    known = set(graph)
    edges = {
        m: {d for d in ds if d in known and d != m and not m.startswith(d + ".")} for m, ds in graph.items()
    }
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d) :] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def _edits_sys_path(path: Path) -> bool:
    """True when the file calls ``sys.path.insert``/``append``/``extend`` anywhere."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("insert", "append", "extend")
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "path"
            and isinstance(node.func.value.value, ast.Name)
            and node.func.value.value.id == "sys"
        ):
            return True
    return False


def test_no_sys_path_hacks():
    """Tests, benches and scripts import the installed package, never a path they put first."""
    repo = ROOT.parent
    offenders = [
        str(p.relative_to(repo))
        for folder in ("distill_doctor", "tests", "bench", "fixtures", "research", "scripts")
        if (repo / folder).is_dir()
        for p in sorted((repo / folder).rglob("*.py"))
        if _edits_sys_path(p)
    ]
    assert offenders == []
