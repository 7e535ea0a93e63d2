"""What a fixture does when a real part (sshd, PostgreSQL, gpg) is not installed."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing_part(message: str) -> NoReturn:
    """Skip on a developer machine; fail under CI (env CI set).

    CI installs every part (.ci/run): a missing one there is a broken setup, not a reason
    to report green without running the tests that need it.
    """
    if os.environ.get("CI"):
        pytest.fail(f"required under CI: {message}")
    pytest.skip(message)
