"""The package's rooms: one-way imports (lint-imports), documented packages, short modules."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "batchbridge"
MAX_LINES = 400

NOT_PACKAGES = {
    # Alembic's script folders: loaded by path from alembic.ini, never imported.
    "ledger/migrations",
    "ledger/migrations/versions",
}


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the contracts of `cwd`/pyproject.toml, no cache left behind."""
    env = dict(os.environ)
    if pythonpath is not None:
        # First on sys.path: the copy is analysed, not the installed (editable) package.
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_rooms_import_one_way() -> None:
    result = _lint_imports(ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert " 0 broken." in output


REVERSED = {
    # case: (module of the copy, code appended to it, what lint-imports must report)
    # A lazy import inside a function counts: it runs, and couples config to the CLI.
    "lazy": (
        "config/loader.py",
        "\n\ndef _reversed() -> None:\n    from batchbridge.cli import app  # noqa: F401\n",
        "batchbridge.config is not allowed to import batchbridge.cli",
    ),
    # So does an annotation-only import: the lower room would know the higher one.
    "type_checking": (
        "ledger/_reversed.py",
        "from typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from batchbridge.flows import nightly  # noqa: F401\n",
        "batchbridge.ledger is not allowed to import batchbridge.flows",
    ),
    # The floor imports nothing above it.
    "floor": (
        "errors.py",
        "\nimport batchbridge.config  # noqa: F401\n",
        "batchbridge.errors is not allowed to import batchbridge.config",
    ),
    # Services beside each other stay independent.
    "siblings": (
        "steward/_reversed.py",
        "from batchbridge.monitoring import health_report  # noqa: F401\n",
        "batchbridge.steward is not allowed to import batchbridge.monitoring",
    ),
    # Only the CLI talks to a person.
    "terminal": (
        "monitoring/_reversed.py",
        "import rich  # noqa: F401\n",
        "batchbridge.monitoring is not allowed to import rich",
    ),
    # Test servers never ship in the package.
    "tests": (
        "demo/_reversed.py",
        "from tests.support import sshd  # noqa: F401\n",
        "batchbridge is not allowed to import tests",
    ),
}


@pytest.mark.parametrize("case", sorted(REVERSED))
def test_a_reversed_import_breaks_the_contract(case: str, tmp_path: Path) -> None:
    # A copy of the package with one import pointing up, checked against the project's
    # own contracts: nothing is written under src/.
    module, code, expected = REVERSED[case]
    copy = tmp_path / "src" / "batchbridge"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = copy / module
    before = target.read_text(encoding="utf-8") if target.exists() else '"""Reversed."""\n\n'
    target.write_text(before + code, encoding="utf-8")
    result = _lint_imports(tmp_path, pythonpath=tmp_path / "src")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "BROKEN" in output and expected in output, output
    assert f"batchbridge.{module.removesuffix('.py').replace('/', '.')}" in output, output


def _package_folders() -> list[str]:
    folders = []
    for folder in sorted(p for p in PACKAGE.rglob("*") if p.is_dir()):
        relative = folder.relative_to(PACKAGE).as_posix()
        if folder.name == "__pycache__" or relative in NOT_PACKAGES:
            continue
        if any(folder.glob("*.py")) or (folder / "__init__.py").exists():
            folders.append(relative)
    return [".", *folders]


@pytest.mark.parametrize("folder", _package_folders())
def test_every_package_says_what_lives_there(folder: str) -> None:
    # Without __init__.py a folder is a namespace package: setuptools' find_packages
    # leaves it out of the wheel.
    init = PACKAGE / folder / "__init__.py"
    assert init.is_file(), f"{folder} has no __init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert docstring, f"{folder}/__init__.py has no docstring"


def _line_counts() -> dict[str, int]:
    return {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_every_module_has_a_docstring() -> None:
    missing = [
        name
        for name in _line_counts()
        if not ast.get_docstring(ast.parse((PACKAGE / name).read_text(encoding="utf-8")))
        and not name.endswith("__init__.py")  # packages: the test above
    ]
    assert missing == []


def test_no_module_is_longer_than_400_lines() -> None:
    long = {name: lines for name, lines in sorted(_line_counts().items()) if lines > MAX_LINES}
    assert long == {}
