"""The shape of the code: no import cycle inside ``leam``, and no stage that imports another stage.

Both are read from the source with ``ast`` (nothing is imported), counting every ``import`` statement
wherever it is, lazy imports inside functions included: a lazy import that closes a cycle still makes
the modules depend on each other, which is what the arcface_torch layout of ``leam.models`` (families
describe themselves, the registry imports them) avoids. The package above a module is not an edge of its
own (importing ``leam.models.spec`` runs ``leam/models/__init__.py`` first, which is how packages work).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file for every ``.py`` under ``root/package``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` its import statements name (``from m import x``: m, and m.x if
    that is a module)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, deterministic order)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_leam_has_no_import_cycle():
    graph = import_graph(REPO_ROOT, "leam")
    assert "leam.models.registry" in graph and graph["leam.models.registry"]  # the graph was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in leam: " + " -> ".join(cycle)


def test_model_families_do_not_import_the_registry():
    graph = import_graph(REPO_ROOT, "leam")
    families = {"leam.models.dlib_resnet", "leam.models.human_models", "leam.models.iresnet"}
    assert families <= graph["leam.models.registry"]
    assert graph["leam.models.spec"] == set()  # the leaf every family describes itself with
    for family in families:
        assert "leam.models.registry" not in graph[family], family


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "registry.py").write_text("def populate():\n    from pkg import family  # lazy\n")
    (package / "family.py").write_text("from pkg.registry import populate\n")
    (package / "leaf.py").write_text("from . import family\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.leaf"] == {"pkg", "pkg.family"}
    assert find_cycle(graph) == ["pkg.family", "pkg.registry", "pkg.family"]


def test_no_stage_imports_another_stage():
    """Shared code lives in ``leam``; a stage script is only run by DVC (``python -m stages.<name>``)."""
    offenders = []
    for path in sorted((REPO_ROOT / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} imports {name}" for name in names
                          if name == "stages" or name.startswith(("stages.", "."))]
    assert not offenders, "; ".join(offenders)


def test_builtin_model_names_are_what_the_registry_registers():
    """``leam.config`` validates ``models`` against this leaf list so that stages that load no model do not
    import (or depend on) the model families."""
    from leam.models.names import BUILTIN_MODELS
    from leam.models.registry import FAMILIES

    assert sorted(BUILTIN_MODELS) == sorted(name for family in FAMILIES for name in family.SPECS)
