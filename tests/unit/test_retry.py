"""The one retry layer: transient errors retried with a stop, others not, Retry-After honoured."""

from __future__ import annotations

import pytest

from batchbridge.connectors.retry import RetryPolicy, call_with_retries
from batchbridge.errors import TargetError, TransientTargetError


class _Busy(TransientTargetError):
    def __init__(self, message: str, *, reason: str | None = None, retry_after: float = 0):
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


def test_transient_errors_are_retried_until_the_stop() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> int:
        calls.append(1)
        raise TransientTargetError("target t: connection lost")

    with pytest.raises(TransientTargetError, match=r"gave up after 3 attempts") as caught:
        call_with_retries(
            flaky,
            policy=RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.05),
            transient=TransientTargetError,
            sleep=slept.append,
        )
    assert len(calls) == 3 and len(slept) == 2 and all(s <= 0.06 for s in slept)
    assert caught.value.reason == "target_transient"


def test_other_errors_pass_straight_out() -> None:
    calls: list[int] = []

    def refused() -> int:
        calls.append(1)
        raise TargetError("target t: HTTP 422")

    with pytest.raises(TargetError, match=r"HTTP 422$"):
        call_with_retries(
            refused, policy=RetryPolicy(max_attempts=5), transient=TransientTargetError
        )
    assert calls == [1]


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    slept: list[float] = []
    answers = iter([_Busy("HTTP 429", retry_after=7), _Busy("HTTP 503", retry_after=900)])

    def busy_then_ok() -> str:
        error = next(answers, None)
        if error is not None:
            raise error
        return "ok"

    result = call_with_retries(
        busy_then_ok,
        policy=RetryPolicy(max_attempts=3, max_retry_after=60),
        transient=TransientTargetError,
        sleep=slept.append,
    )
    assert result == "ok" and slept == [7.0, 60.0]


def test_giving_up_keeps_class_and_reason_of_errors_with_other_constructors() -> None:
    class _NoReason(TransientTargetError):
        def __init__(self, message: str) -> None:
            super().__init__(message, reason="target_busy")

    def busy() -> int:
        raise _NoReason("target t: HTTP 503")

    with pytest.raises(_NoReason, match=r"gave up after 2 attempts") as caught:
        call_with_retries(
            busy,
            policy=RetryPolicy(max_attempts=2, initial_wait=0.0),
            transient=TransientTargetError,
            sleep=lambda _: None,
        )
    assert caught.value.reason == "target_busy"
