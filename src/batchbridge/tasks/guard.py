"""Make a pure stage function a Prefect task that can never leak patient data."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import NONE

from batchbridge.errors import BatchbridgeError, StageCrashedError

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


def withhold_unexpected_errors(stage: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Re-raise unexpected exceptions as StageCrashedError without their message.

    Our own errors are written PHI-free and pass through. Anything else (a driver or
    parser error quoting a cell) is replaced; its frames, not its text, are logged.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except BatchbridgeError:
                raise
            except Exception as exc:
                frames = "".join(traceback.format_tb(exc.__traceback__))
                logger.error(
                    "stage %s crashed with %s (message withheld)\n%s",
                    stage,
                    type(exc).__name__,
                    frames,
                )
                raise StageCrashedError(
                    f"stage {stage} failed unexpectedly with {type(exc).__name__} "
                    "(message withheld: it may quote patient data)"
                ) from None

        return wrapper

    return decorate


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
