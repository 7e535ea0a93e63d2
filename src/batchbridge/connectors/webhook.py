"""Post alert messages to a Slack/Teams-compatible incoming webhook, with bounded retries."""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from batchbridge.connectors.lifecycle import ClosedOnExit
from batchbridge.connectors.retry import RetryPolicy, call_with_retries
from batchbridge.errors import AlertDeliveryError, ConfigError

logger = logging.getLogger(__name__)

# Slack answers errors with a short code in the body ("invalid_payload", "no_service");
# only a body of that shape is quoted, anything else could be arbitrary server text.
_SLACK_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")
_LOOPBACK_NAMES = frozenset({"localhost"})


class WebhookSender(Protocol):
    """Something that delivers one JSON payload; raises AlertDeliveryError when it cannot."""

    def post(self, payload: Mapping[str, Any]) -> int:
        """Send `payload`; return the HTTP status of the accepted answer."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class TransientWebhookError(AlertDeliveryError):
    """Raised for a connection error, a 5xx or a 429: worth a bounded retry."""

    reason = "alert_webhook_transient"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        # Read by the retry layer: the wait a 429/503 asked for, instead of the backoff.
        self.retry_after = retry_after


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str) -> httpx.URL:
    """Parse a webhook URL: https, or plain http only to a loopback receiver (tests).

    A webhook URL holds a token: it must not cross a network in clear. Errors never
    repeat the URL.
    """
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError):
        raise ConfigError("the alert webhook is not a valid URL") from None
    if parsed.scheme == "https" and parsed.host:
        return parsed
    if parsed.scheme == "http" and parsed.host and _is_loopback(parsed.host):
        return parsed
    raise ConfigError(
        "the alert webhook must be an https:// URL (http:// only to a loopback receiver)"
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a 429/503 answer asks us to wait: delta-seconds or an HTTP date; None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


# Redact webhook URLs from httpx's own request log lines (INFO "HTTP Request: POST <url>"):
# they are silent at Prefect's default levels, but an operator raising the log level must
# not put a token into the logs.
_SECRET_URLS: set[str] = set()
_SECRET_URLS_LOCK = threading.Lock()


class _RedactWebhookUrls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and _SECRET_URLS:
            record.args = tuple(
                f"{arg.scheme}://{arg.host}/<redacted>"
                if isinstance(arg, httpx.URL) and str(arg) in _SECRET_URLS
                else arg
                for arg in record.args
            )
        return True


_REDACTOR = _RedactWebhookUrls()


def _register_secret_url(url: httpx.URL) -> None:
    with _SECRET_URLS_LOCK:
        _SECRET_URLS.add(str(url))
        httpx_logger = logging.getLogger("httpx")
        if _REDACTOR not in httpx_logger.filters:
            httpx_logger.addFilter(_REDACTOR)


class WebhookClient(ClosedOnExit):
    """POSTs JSON to one incoming webhook; retries connection errors, 5xx and 429 only.

    Retries are bounded (`max_attempts`), with exponential backoff and jitter; a 429 or
    503 with Retry-After waits what the server asks, up to `max_retry_after` seconds.
    Any other answer (4xx, 3xx) fails at once: sending it again cannot help. TLS
    certificates are verified unless `verify` says otherwise.
    """

    def __init__(
        self,
        url: SecretStr,
        *,
        max_attempts: int = 4,
        initial_wait: float = 0.5,
        max_wait: float = 8.0,
        max_retry_after: float = 10.0,
        timeout_seconds: float = 10.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError("alert webhook: max_attempts must be at least 1")
        self._url = check_webhook_url(url.get_secret_value())
        _register_secret_url(self._url)
        self.policy = RetryPolicy(
            max_attempts=max_attempts,
            initial_wait=initial_wait,
            max_wait=max_wait,
            max_retry_after=max_retry_after,
        )
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=timeout_seconds,
            verify=verify,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "batchbridge-alerts"},
        )

    def __repr__(self) -> str:
        # Never the path: it is the webhook's token.
        return f"WebhookClient(host={self._url.host!r})"

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def post(self, payload: Mapping[str, Any]) -> int:
        """Send `payload` as JSON; return the 2xx status, or raise AlertDeliveryError."""
        try:
            return call_with_retries(
                lambda: self._attempt(payload),
                policy=self.policy,
                transient=TransientWebhookError,
                log=logger,
                sleep=self._sleep,
            )
        except TransientWebhookError as exc:
            # Still failing after the last attempt: the webhook is down, which tells
            # alert delivery to skip the rest of this run's alerts.
            raise AlertDeliveryError(str(exc), reason="alert_webhook_unavailable") from None

    def _attempt(self, payload: Mapping[str, Any]) -> int:
        try:
            response = self._client.post(self._url, json=dict(payload))
        except httpx.TransportError as exc:
            # The class names the problem (ConnectError, ReadTimeout); its text may hold the URL.
            raise TransientWebhookError(
                f"alert webhook at {self._url.host}: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return status
        where = f"alert webhook at {self._url.host}: HTTP {status}"
        if status == 429 or status >= 500:
            raise TransientWebhookError(
                where, retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        body = response.text.strip()
        detail = f" ({body})" if _SLACK_ERROR_CODE.match(body) else ""
        raise AlertDeliveryError(f"{where}{detail}; not retried", reason="alert_webhook_refused")
