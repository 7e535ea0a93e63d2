"""The health check results: one CheckResult per check, FeedHealth per feed, `guarded`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, ParamSpec

from batchbridge.errors import BatchbridgeError

Severity = Literal["ok", "warning", "error", "skipped"]
P = ParamSpec("P")


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. `ok` is False for errors and for checks skipped after one.

    severity: ok | warning (passes, needs attention soon) | error | skipped (not run
    because a check it depends on failed).
    """

    name: str
    ok: bool
    severity: Severity
    detail: str

    @classmethod
    def passed(cls, name: str, detail: str) -> CheckResult:
        return cls(name, True, "ok", detail)

    @classmethod
    def warning(cls, name: str, detail: str) -> CheckResult:
        return cls(name, True, "warning", detail)

    @classmethod
    def failed(cls, name: str, detail: str) -> CheckResult:
        return cls(name, False, "error", detail)

    @classmethod
    def skipped(cls, name: str, detail: str) -> CheckResult:
        return cls(name, False, "skipped", detail)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "severity": self.severity, "detail": self.detail}


@dataclass
class FeedHealth:
    """Every check of one feed."""

    feed: str
    tenant: str | None
    checked_at: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.severity == "warning"]

    @property
    def status(self) -> str:
        """failed (a check failed), warning (only warnings) or ok."""
        if self.failed:
            return "failed"
        return "warning" if self.warnings else "ok"

    def counts(self) -> dict[str, int]:
        severities: tuple[Severity, ...] = ("ok", "warning", "error", "skipped")
        return {s: sum(c.severity == s for c in self.checks) for s in severities}

    def to_dict(self) -> dict[str, object]:
        return {
            "feed": self.feed,
            "tenant": self.tenant,
            "checked_at": self.checked_at,
            "status": self.status,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


def guarded(
    name: str,
) -> Callable[[Callable[P, list[CheckResult]]], Callable[P, list[CheckResult]]]:
    """Turn any exception escaping a check into a failed CheckResult named `name`.

    Our errors are written PHI-free and keep their message; anything else (a driver or
    library error that might quote data) is reduced to its class name.
    """

    def decorate(fn: Callable[P, list[CheckResult]]) -> Callable[P, list[CheckResult]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> list[CheckResult]:
            try:
                return fn(*args, **kwargs)
            except BatchbridgeError as exc:
                return [CheckResult.failed(name, f"[{exc.reason}] {exc}")]
            except Exception as exc:
                return [
                    CheckResult.failed(name, f"unexpected {type(exc).__name__} (message withheld)")
                ]

        return wrapper

    return decorate
