"""dvc.yaml tells the truth: every stage lists the code it runs and the params it reads.

Code: a stage's import closure is computed from the source with ``ast``, starting at the module of its
``cmd`` (``python -m stages.<name>``) and following every ``leam.*`` / ``stages.*`` import, including lazy
imports inside functions (the closure is conservative: a lazy import counts even on paths a stage may not
take). Importing ``a.b.c`` executes ``a/__init__.py`` and ``a/b/__init__.py`` too, so those count, except
modules with nothing to execute (a docstring and constant assignments only). The report stage also runs the
Python cells of the ``.qmd`` pages it lists. A dep on a folder covers every file under it; a ``.py`` file
listed as a dep must be in the closure (no stale deps).

Params: every dotted key the closure reads must be covered by the stage's ``params`` (a key is covered by
itself or a group above it). Reads recognised, in either style the code uses today:
``param(params, "group.key")`` (leam.io), ``params.get("key")`` / ``params["key"]`` on a name ending in
``params``, and attribute chains on the typed config (``config.group.key`` / ``cfg.group.key``, leam/config.py).
``leam/config.py`` itself is not scanned: it validates every key of the file, which fails a stage on a bad
value but does not change its outputs. Values passed on to a function (``collect_faces(config.data)``)
count as reading their whole group. Reads through other names (a sub-config stored in a local variable and
read later) are only seen as the group read where it was taken.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("leam", "stages")
CONFIG_MODULE = "leam/config.py"
PARAMS_NAME = re.compile(r"(^|_)params$")
CONFIG_NAME = re.compile(r"^(cfg|config|conf|params)$|_(cfg|config)$")
STAGE_ENTRY_POINTS = ("main", "build_parser")
OUTSIDE_PIPELINE = {
    "leam/api.py": "the public Python API (leam.LEAM, leam.register_model); no stage uses it",
}
QMD_CELL = re.compile(r"^```\{python[^}]*\}\s*$(.*?)^```\s*$", re.M | re.S)

# ------------------------------------------------------------------------------------------ dvc.yaml
@lru_cache(maxsize=1)
def stages() -> dict[str, dict]:
    """name -> stage definition; a foreach stage appears once as ``name@*`` with its ``do`` template."""
    document = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    found = {}
    for name, stage in document["stages"].items():
        if "foreach" in stage or "matrix" in stage:
            found[f"{name}@*"] = stage["do"] if "do" in stage else {k: v for k, v in stage.items() if k != "matrix"}
        else:
            found[name] = stage
    return found


def deps_of(stage: dict) -> list[str]:
    return [str(d).rstrip("/") for d in stage.get("deps", [])]


def params_of(stage: dict) -> list[str]:
    """Declared params as dotted keys; ``{params.yaml: }`` (the whole file) becomes ``""`` (covers all)."""
    declared = []
    for entry in stage.get("params", []):
        if isinstance(entry, dict):
            for file, keys in entry.items():
                assert file == "params.yaml", f"params from {file}: extend this test"
                declared += list(keys) if keys else [""]
        else:
            declared.append(str(entry))
    return declared


def entry_modules(cmd: str) -> list[str]:
    return re.findall(r"python -m ([\w.]+)", cmd)


# ------------------------------------------------------------------------------------- import closure
def module_file(module: str) -> Path | None:
    """Repository file of a dotted module name (``leam.io`` -> leam/io.py), None if it is not one."""
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _prefixes(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(tree: ast.AST, module: str = "", is_package: bool = False) -> set[str]:
    """Every repository module an ``import`` anywhere in ``tree`` executes (packages above included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_prefixes(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = package[:len(package) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.update(_prefixes(base))
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if module_file(f"{base}.{alias.name}") is not None)
    return {m for m in found if m.split(".")[0] in PACKAGES and module_file(m) is not None}


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def qmd_tree(path: Path) -> ast.Module:
    """The Python cells of a Quarto page as one module (lines starting with % or ! are IPython magics)."""
    cells = QMD_CELL.findall(path.read_text(encoding="utf-8"))
    code = "\n".join(line for cell in cells for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
    return ast.parse(code, filename=str(path))


def is_trivial(tree: ast.Module) -> bool:
    """Nothing to execute that could change a stage: a docstring, __future__ imports, constant assignments."""
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and _is_constant(node.value):
            continue
        return False
    return True


def _is_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_constant(e) for e in node.elts)
    return False


def closure(roots: list[str], extra_trees: tuple[ast.Module, ...] = ()) -> set[Path]:
    """Files executed (conservatively) by running the ``roots`` modules plus the ``extra_trees`` code."""
    todo = set()
    for root in roots:
        todo.update(_prefixes(root))
    for tree in extra_trees:
        todo.update(imported_modules(tree))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        if path is None:
            continue
        name, is_package = _module_name(path)
        todo.update(imported_modules(_parse(path), name, is_package) - seen)
    return {p for p in (module_file(m) for m in seen) if p is not None}


def stage_code(stage: dict) -> tuple[set[Path], tuple[ast.Module, ...]]:
    """(import closure, extra code trees: the qmd cells) of one stage."""
    extra = tuple(qmd_tree(REPO_ROOT / d) for d in deps_of(stage) if d.endswith(".qmd") and (REPO_ROOT / d).is_file())
    return closure(entry_modules(stage["cmd"]), extra), extra


def required_files(stage: dict) -> set[str]:
    files, _ = stage_code(stage)
    return {p.relative_to(REPO_ROOT).as_posix() for p in files if not is_trivial(_parse(p))}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in deps)


# ---------------------------------------------------------------------------------------- param reads
@lru_cache(maxsize=1)
def params_tree() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def _known_key(parts: list[str]) -> str | None:
    """Longest prefix of ``parts`` that is a key path of params.yaml (None if not even the group is)."""
    node, kept = params_tree(), []
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
        kept.append(part)
    return ".".join(kept) or None


def _name_of(node: ast.AST) -> str | None:
    """``params`` for ``params``, ``self.params``, ``pk.params()``: the last name of the expression."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _string(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def param_reads(tree: ast.AST) -> set[str]:
    """Dotted params keys that ``tree`` reads (see the module docstring for the forms recognised)."""
    keys: set[str] = set()

    def add(dotted: str | None) -> None:
        if dotted:
            known = _known_key(dotted.split("."))
            if known:
                keys.add(known)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = _name_of(node.func) if not isinstance(node.func, ast.Call) else None
            if func == "param" and len(node.args) >= 2:
                add(_string(node.args[1]))
            elif (isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
                  and PARAMS_NAME.search(_name_of(node.func.value) or "")):
                add(_string(node.args[0]))
        elif isinstance(node, ast.Subscript) and not isinstance(getattr(node, "_parent", None), ast.Subscript):
            chain, base = [], node  # params["leam"]["pairs_file"] -> leam.pairs_file
            while isinstance(base, ast.Subscript) and _string(base.slice) is not None:
                chain.append(_string(base.slice))
                base = base.value
            if chain and not isinstance(base, ast.Subscript) and PARAMS_NAME.search(_name_of(base) or ""):
                add(".".join(reversed(chain)))
        elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and CONFIG_NAME.search(base.id):
                add(".".join(reversed(chain)))
    return keys


def _mark_parents(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child._parent = node  # type: ignore[attr-defined]
    return tree


def _regions(path: Path) -> tuple[ast.Module, list[tuple[str, ast.AST]]]:
    """(module-level code, [(name, body) of each top-level function, class and method]) of one file.

    Module-level code runs on import; a function's code counts only where some counted code names it.
    """
    tree = _parse(path)
    functions: list[tuple[str, ast.AST]] = []
    top = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append((node.name, node))
        elif isinstance(node, ast.ClassDef):
            functions.append((node.name, node))
            functions += [(item.name, item) for item in node.body
                          if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            top.append(node)
    return ast.Module(body=top, type_ignores=[]), functions


def _names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def stage_param_reads(stage: dict) -> set[str]:
    """Keys read by the stage script, by module-level code of its closure, and by every library function
    that counted code names (to a fixed point), so ``fetch_human_models``' reads count for ``weights`` only."""
    files, extra = stage_code(stage)
    entry = {module_file(m) for m in entry_modules(stage["cmd"])}
    counted: list[ast.AST] = [_parse(p) for p in entry if p is not None] + list(extra)
    candidates: list[tuple[str, ast.AST]] = []
    for path in sorted(files):
        if path in entry or path.relative_to(REPO_ROOT).as_posix() == CONFIG_MODULE:
            continue
        top, functions = _regions(path)
        counted.append(top)
        if path.parent.name == "stages":  # another stage's entry points only run as __main__
            functions = [(n, body) for n, body in functions if n not in STAGE_ENTRY_POINTS]
        candidates += functions
    names: set[str] = set().union(*(_names(t) for t in counted))
    while True:
        reached = [(n, body) for n, body in candidates if n in names]
        if not reached:
            break
        candidates = [(n, body) for n, body in candidates if n not in names]
        for _, body in reached:
            counted.append(body)
            names |= _names(body)
    keys: set[str] = set()
    for tree in counted:
        keys |= param_reads(_mark_parents(tree))
    return keys


def param_covered(key: str, declared: list[str]) -> bool:
    return any(d == "" or key == d or key.startswith(d + ".") for d in declared)


# --------------------------------------------------------------------------------------------- tests
STAGES = sorted(stages())


@pytest.mark.parametrize("name", STAGES)
def test_stage_lists_every_module_it_imports(name):
    stage = stages()[name]
    assert entry_modules(stage["cmd"]), f"{name}: cmd {stage['cmd']!r} is not `python -m <module>`"
    deps = deps_of(stage)
    missing = sorted(f for f in required_files(stage) if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {name!r} imports but does not list: {', '.join(missing)}"


@pytest.mark.parametrize("name", STAGES)
def test_stage_lists_no_module_it_does_not_import(name):
    stage = stages()[name]
    files, _ = stage_code(stage)
    executed = {p.relative_to(REPO_ROOT).as_posix() for p in files}
    stale = [d for d in deps_of(stage) if d.endswith(".py") and d not in executed]
    assert not stale, f"dvc.yaml stage {name!r} lists modules it never imports: {', '.join(stale)}"


@pytest.mark.parametrize("name", STAGES)
def test_stage_lists_every_param_it_reads(name):
    stage = stages()[name]
    declared = params_of(stage)
    reads = stage_param_reads(stage)
    missing = sorted(k for k in reads if not param_covered(k, declared))
    assert not missing, f"dvc.yaml stage {name!r} reads params it does not list: {', '.join(missing)}"


@pytest.mark.parametrize("name", STAGES)
def test_stage_code_deps_exist(name):
    for dep in deps_of(stages()[name]):
        if "${" in dep or not dep.startswith(PACKAGES):
            continue
        assert (REPO_ROOT / dep).exists(), f"dvc.yaml stage {name!r}: dep {dep} does not exist"


def test_every_library_module_is_a_dependency_of_some_stage():
    deps = [d for stage in stages().values() for d in deps_of(stage)]
    orphans = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "leam").rglob("*.py")
                     if not is_trivial(_parse(p)) and not covered(p.relative_to(REPO_ROOT).as_posix(), deps))
    # a module no stage lists is dead code, a missing dep, or deliberately outside the pipeline (listed here)
    unexpected = [p for p in orphans if p not in OUTSIDE_PIPELINE]
    assert not unexpected, f"leam modules that no dvc.yaml stage depends on: {', '.join(unexpected)}"


def test_report_lists_every_page():
    deps = deps_of(stages()["report"])
    pages = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "reports").glob("*.qmd"))
    missing = [p for p in [*pages, "reports/_quarto.yml"] if not covered(p, deps)]
    assert not missing, f"dvc.yaml stage 'report' renders but does not list: {', '.join(missing)}"


# ------------------------------------------------------------------- the checker itself, on tiny code
def test_closure_follows_lazy_and_package_imports():
    tree = ast.parse("def f():\n    from leam.parsing.classes import CLASSES\n")
    files = {p.relative_to(REPO_ROOT).as_posix() for p in closure([], (tree,))}
    # leam/parsing/__init__.py runs first and imports landmarks; its lazy farl import counts too
    assert {"leam/parsing/classes.py", "leam/parsing/__init__.py", "leam/parsing/landmarks.py",
            "leam/parsing/farl.py"} <= files


def test_param_reads_recognises_both_styles():
    code = ("param(params, 'align.padding')\nparams.get('seed', 0)\nparams['model_zoo']\nparams['leam']['sign']\n"
            "config.similarity.emd_grid\ncfg.leam\nrun(config.data)\nother.threshold\nparam(params, 'no.such')\n")
    assert param_reads(_mark_parents(ast.parse(code))) == {"align.padding", "seed", "model_zoo", "leam.sign",
                                                           "similarity.emd_grid", "leam", "data"}
