"""The library's architecture holds: the import-linter contracts in pyproject.toml (layers of boneage/, the
library importing neither the commands nor the dashboard) and the few deferred imports it allows."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# The only imports the library defers into a function body, each for a heavy optional dependency.
DEFERRED_ALLOWED = {"fpdf", "umap", "captum.metrics", "pyarrow.parquet"}


def test_import_contracts_are_kept():
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: ./test.sh installs import-linter (requirements-dev.txt)"
    out = subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


def test_the_layers_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: an io module importing the predictor breaks it."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "boneage", copy / "boneage", ignore=shutil.ignore_patterns("__pycache__"))
    for pkg in ("pipelines", "dashboard"):
        (copy / pkg).mkdir()
        (copy / pkg / "__init__.py").write_text("")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "boneage" / "io" / "tables.py"
    bad.write_text(bad.read_text() + "\nfrom boneage.inference.predictor import load_predictor  # noqa\n")
    out = subprocess.run([str(LINT_IMPORTS), "--config", str(copy / "pyproject.toml")], cwd=copy,
                         capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(copy), "PATH": ""})
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "boneage.io.tables -> boneage.inference.predictor" in out.stdout


def deferred_imports() -> list[tuple[str, int, str]]:
    """(file, line, module) of every import inside a function body of boneage/."""
    found = []
    for path in sorted((REPO / "boneage").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    found.append((str(path.relative_to(REPO)), node.lineno, node.module or ""))
                elif isinstance(node, ast.Import):
                    found += [(str(path.relative_to(REPO)), node.lineno, a.name) for a in node.names]
    return sorted(set(found))


def test_only_heavy_optional_dependencies_are_deferred():
    found = deferred_imports()
    unexpected = [f"{f}:{line} imports {mod}" for f, line, mod in found if mod not in DEFERRED_ALLOWED]
    assert not unexpected, "imports inside functions (move them to the top of the module): " + "; ".join(unexpected)
    for f, line, _ in found:  # each says why it is deferred, on the line above
        above = (REPO / f).read_text(encoding="utf-8").splitlines()[line - 2]
        assert "deferred" in above, f"{f}:{line}: the deferred import needs a comment saying why"


def test_every_subpackage_says_what_it_owns():
    for init in sorted((REPO / "boneage").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) == 1, f"{init.relative_to(REPO)} needs a one-line docstring"


def test_pipelines_hold_commands_only():
    """Every module directly in pipelines/ is a command with main(argv), or the shared CLI plumbing."""
    for path in sorted((REPO / "pipelines").glob("*.py")):
        if path.name in ("__init__.py", "cli.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "main" in names, f"{path.name} is not a command (main(argv) -> int)"
