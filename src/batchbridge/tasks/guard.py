"""Make a pure stage function a Prefect task that can never leak patient data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import NONE

from batchbridge.errors import withhold_unexpected_errors

P = ParamSpec("P")
R = TypeVar("R")


def stage_task(stage: str, **task_options: Any) -> Callable[[Callable[P, R]], Any]:
    """A Prefect task over a pure function: no cache, no persisted result, scrubbed errors.

    Results stay in memory: stage outputs carry patient rows and must never be written
    to Prefect's result storage. Retries live in the connectors (tenacity), not here.
    """

    def decorate(fn: Callable[P, R]) -> Any:
        return task(
            name=stage,
            cache_policy=NONE,
            persist_result=False,
            retries=0,
            **task_options,
        )(withhold_unexpected_errors(stage)(fn))

    return decorate
