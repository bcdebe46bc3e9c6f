"""The package layout: dependencies point one way, and every stage kind is in the one registry.

Allowed direction (README "Layout"): mig_lab <- mig_models <- mig_data <- mig_eval <- mig_rl <- run.py.
mig_lab is the core and imports no other package; within the middle layers the order is the one the code
needs (the model teacher in mig_data runs a model; GRPO scores and draws with mig_eval's code)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ORDER = ["mig_lab", "mig_models", "mig_data", "mig_eval", "mig_rl"]
ALLOWED = {pkg: set(ORDER[:i]) for i, pkg in enumerate(ORDER)}


def _imports(path: Path) -> set[str]:
    """Top-level mig_* packages a module imports anywhere in it (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in ORDER}
    return found


@pytest.mark.parametrize("pkg", ORDER)
def test_imports_point_one_way(pkg):
    wrong = []
    for path in sorted((REPO / pkg).rglob("*.py")):
        bad = _imports(path) - ALLOWED[pkg] - {pkg}
        wrong += [f"{path.relative_to(REPO)} imports {b}" for b in sorted(bad)]
    assert not wrong, f"{pkg} may import only {sorted(ALLOWED[pkg])}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("pkg", ORDER)
def test_each_package_imports_in_isolation(pkg):
    """Importing every module of a package in a fresh interpreter loads no package above it."""
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                     for p in (REPO / pkg).rglob("*.py") if p.name != "__main__.py")
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted({{n.split('.')[0] for n in sys.modules if n.split('.')[0] in {ORDER!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    assert loaded <= ALLOWED[pkg] | {pkg}, f"importing {pkg} loaded {sorted(loaded - ALLOWED[pkg] - {pkg})}"


def test_every_declared_stage_kind_is_registered():
    from mig_lab.registry import STAGE_KINDS, stage_kinds

    declared = set()
    for pkg in ORDER:
        for path in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef):
                    for d in node.decorator_list:
                        if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "stage_kind":
                            declared.add(d.args[0].value)
    assert declared == set(STAGE_KINDS), "declare each kind once and list it in mig_lab/registry.py"
    kinds = stage_kinds()
    assert all(k.name == name for name, k in kinds.items())



def test_no_module_cli_beside_run_py():
    """Entry points are run.py (and scripts/, benchmarks/); no research module parses its own arguments."""
    offenders = [str(p.relative_to(REPO)) for pkg in ORDER for p in (REPO / pkg).rglob("*.py")
                 if "argparse" in p.read_text()]
    assert not offenders, offenders
