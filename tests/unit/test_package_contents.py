"""Test servers never ship: `batchbridge.testing` is gone and no package module imports tests."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import batchbridge

PACKAGE_DIR = Path(batchbridge.__file__).parent


def imported_modules(path: Path) -> Iterator[str]:
    """Every absolute module name `path` imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_old_testing_package_is_gone() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("batchbridge.testing")
    # Not even as a leftover folder, which Python would import as a namespace package.
    assert not (PACKAGE_DIR / "testing").exists()


def test_no_package_module_imports_tests() -> None:
    sources = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(sources) > 100, PACKAGE_DIR  # the scan read the package, not an empty folder
    offenders = [
        f"{path.relative_to(PACKAGE_DIR)}: {name}"
        for path in sources
        for name in imported_modules(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert offenders == []


def test_the_scan_sees_lazy_imports(tmp_path: Path) -> None:
    # The demo imports its parts inside functions; an import of tests there must count too.
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from tests.support.sshd import start_sshd\n    import os\n")
    assert list(imported_modules(module)) == ["tests.support.sshd", "os"]
