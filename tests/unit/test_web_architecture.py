"""The workbench's place among the rooms: below the CLI, over the steward service only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.test_architecture import PACKAGE, ROOT, _lint_imports

REVERSED = {
    # case: (module of the copy, code appended to it, what lint-imports must report)
    "web_to_cli": (
        "web/_reversed.py",
        "from batchbridge.cli import app  # noqa: F401\n",
        "batchbridge.web is not allowed to import batchbridge.cli",
    ),
    # Layers alone would let web reach flows and tasks (they sit below it): the
    # web-over-steward contract forbids them, and connectors (secrets go through the CLI).
    "web_to_flows": (
        "web/_reversed.py",
        "from batchbridge.flows import nightly  # noqa: F401\n",
        "batchbridge.web is not allowed to import batchbridge.flows",
    ),
    "web_to_connectors": (
        "web/_reversed.py",
        "from batchbridge.connectors import secrets  # noqa: F401\n",
        "batchbridge.web is not allowed to import batchbridge.connectors",
    ),
    "steward_to_web": (
        "steward/_reversed.py",
        "from batchbridge.web import app  # noqa: F401\n",
        "batchbridge.steward is not allowed to import batchbridge.web",
    ),
    "web_to_terminal": (
        "web/_reversed.py",
        "import rich  # noqa: F401\n",
        "batchbridge.web is not allowed to import rich",
    ),
}


@pytest.mark.parametrize("case", sorted(REVERSED))
def test_a_wrong_workbench_import_breaks_a_contract(case: str, tmp_path: Path) -> None:
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
