"""The domain stays pure: no I/O frameworks imported (checked statically, no import cost)."""

from __future__ import annotations

import ast
from pathlib import Path

import batches.domain

FORBIDDEN = {"ray", "fastapi", "starlette", "duckdb", "httpx", "eventlog", "actors", "uvicorn"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_domain_imports_no_io_frameworks() -> None:
    modules = sorted(Path(batches.domain.__file__).parent.glob("*.py"))
    assert len(modules) >= 9
    for module in modules:
        assert not (_imports(module) & FORBIDDEN), module.name
