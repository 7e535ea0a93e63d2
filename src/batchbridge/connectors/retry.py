"""The one retry layer: bounded exponential backoff with jitter, on transient errors only.

Every connector declares which of its exceptions are transient (a dropped connection, a
429/503, a serialization failure) and runs its I/O through `call_with_retries`: the wait
doubles from `initial_wait` up to `max_wait` with jitter, a server's Retry-After (an
exception's `retry_after` seconds) is honoured up to `max_retry_after`, each retry is
logged with the exception's PHI-free text, and after the last attempt the same
exception class is raised again saying how many attempts were made. Nothing else is
retried, and nothing retries forever (tenacity's default would).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from batchbridge.errors import BatchbridgeError

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one connector retries its transient errors."""

    max_attempts: int
    initial_wait: float = 0.5
    max_wait: float = 30.0
    max_retry_after: float = 60.0
    """Cap on a server's Retry-After: a hostile or broken server cannot park a run."""


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    # multiplier is the first wait (tenacity 9.2 renamed `initial` to it).
    backoff = wait_exponential_jitter(
        multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            return min(float(retry_after), policy.max_retry_after)
        return float(backoff(state))

    return wait


RetryNote = Callable[[BaseException | None, int, int, float], str]
"""(error, attempt, max attempts, wait) -> the warning logged before a retry."""

GiveUp = Callable[[BaseException, int], BaseException]
"""(last error, attempts) -> the error raised once retrying stops."""


def retry_note(error: BaseException | None, attempt: int, attempts: int, wait: float) -> str:
    """The usual retry warning: the error's PHI-free text, the attempt, the wait."""
    return f"{error}; attempt {attempt} of {attempts}, retrying in {wait:.2f}s"


def _log_retry(
    policy: RetryPolicy, log: logging.Logger, note: RetryNote
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s", note(exc, state.attempt_number, policy.max_attempts, wait))

    return before_sleep


def call_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    transient: type[BaseException] | tuple[type[BaseException], ...],
    log: logging.Logger = logger,
    sleep: Callable[[float], None] = time.sleep,
    note: RetryNote = retry_note,
    give_up: GiveUp | None = None,
) -> T:
    """Run `operation`, retrying `transient` errors per `policy`; others pass straight out.

    After the last attempt the last transient error is raised again, as its own class,
    with "(gave up after N attempts)" added to its message; `note` and `give_up` let a
    connector keep the wording its operators know.
    """
    retrying = Retrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_wait(policy),
        retry=retry_if_exception_type(transient),
        before_sleep=_log_retry(policy, log, note),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(operation)
    except transient as exc:
        raise (give_up or gave_up)(exc, policy.max_attempts) from None


def gave_up(exc: BaseException, attempts: int) -> BaseException:
    """The same kind of error, saying that retrying stopped (keeps a `reason`, if any)."""
    message = f"{exc} (gave up after {attempts} attempts)"
    if isinstance(exc, BatchbridgeError):
        try:
            return type(exc)(message, reason=exc.reason)
        except TypeError:  # a subclass whose constructor takes no `reason`
            pass
    try:
        again = type(exc)(message)
    except TypeError:  # an exception class with another constructor: keep it as it is
        return exc
    if isinstance(exc, BatchbridgeError) and isinstance(again, BatchbridgeError):
        again.reason = exc.reason
    return again
