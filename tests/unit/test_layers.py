"""Imports point one way: eventlog <- batches <- actors <- batchlog (entry points).

Checked statically over every module, lazy imports inside functions included, so the
picture in docs/architecture.md stays true. `tests` is imported by no product module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["eventlog", "batches", "actors", "batchlog"]  # each may import those left of it
# Ray lives in actors/ and above; batches/ (domain, core, façade, analytics) is Ray-free.
RAY_FROM = LAYERS.index("actors")


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_runs_back_up(package: str) -> None:
    rank = LAYERS.index(package)
    above = set(LAYERS[rank + 1 :])
    found = modules(package)
    assert found, package
    for path in found:
        names = imported_packages(path)
        assert not names & above, f"{path.relative_to(ROOT)} imports {sorted(names & above)}"
        assert "tests" not in names, f"{path.relative_to(ROOT)} imports the test tree"
        if rank < RAY_FROM:
            assert "ray" not in names, f"{path.relative_to(ROOT)} imports ray"


def test_bench_and_notebooks_do_not_import_tests() -> None:
    for path in modules("bench"):
        assert "tests" not in imported_packages(path), path.name
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        assert "from tests" not in path.read_text() and "import tests" not in path.read_text()
