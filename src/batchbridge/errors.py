"""Every error batchbridge raises on purpose, in one tree.

Messages carry counts, row numbers, column and rule names, file names and ids,
never patient values: they end up in logs, Prefect states and alerts.

    BatchbridgeError                 exit 1
    ├── ConfigError                  exit 2   a feed file or setting is wrong
    │   ├── FeedNotFoundError                 no such feed YAML
    │   ├── SecretNotFoundError               a secret reference resolves to nothing
    │   ├── LedgerNotFoundError               a command that reads the ledger found none there
    │   └── StewardsFileError                 the steward directory is missing or unreadable
    ├── SourceError                  exit 3   the partner's server or a remote file
    │   ├── HostKeyError                      host key unknown or changed (pinning)
    │   ├── UnsafeRemoteNameError             traversal, separators, control chars, symlinks
    │   ├── TransientSourceError              connection dropped; worth a bounded retry
    │   └── IncompleteDownloadError           local size differs from the remote size
    ├── DecryptError                 exit 4   the OpenPGP message cannot be trusted
    │   ├── SignatureError                    unsigned, other signer, revoked/expired key
    │   ├── IntegrityError                    no MDC, tampered, truncated ciphertext
    │   └── PlaintextLimitError               plaintext size or compression ratio cap hit
    ├── FileRejectedError            exit 5   the plaintext is not a file we accept
    │   ├── MalformedFileError                encoding, quoting, ragged rows, empty input
    │   ├── SchemaDriftError                  missing or unknown columns
    │   ├── TrailerMismatchError              trailer/header count differs from rows read
    │   └── ContractViolationError            the feed's file contract is broken
    ├── TargetError                  exit 6   a target refused or failed a load
    │   └── TransientTargetError              connection lost / serialization failure
    ├── ReconciliationError          exit 7   counts do not balance
    ├── StageCrashedError            exit 8   an unexpected error inside a stage
    ├── RunFailedError               exit 9   a run finished with failed files (report written)
    ├── StewardError                 exit 10  a steward action cannot be done
    │   ├── AccessDeniedError                 no role for this tenant/action (audited)
    │   ├── QuarantineRowNotFoundError        no such quarantined row (or not in your tenants)
    │   ├── RowStateError                     the row is released or discarded already
    │   └── ImportRejectedError               an import file is refused whole
    ├── AuditChainError              exit 11  the audit log's hash chain is broken
    ├── AlertDeliveryError           exit 12  an alert could not be delivered to its webhook
    ├── OrchestratorError            exit 13  the Prefect API could not be started or reached
    ├── HealthCheckError             exit 14  a health check of a feed failed
    └── IdLookupError                exit 2   an id (prefix) typed on the command line is not
                                              an id, matches nothing, or matches several

A wrong command line (unknown option, bad choice) also exits 2, like a wrong setting;
an error nobody foresaw (a bug) exits 1 and prints its class name only.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class BatchbridgeError(Exception):
    """Base of every deliberate batchbridge error; `reason` is a stable machine code."""

    exit_code = 1
    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(BatchbridgeError):
    """Raised when a feed YAML or setting is invalid (unknown key, bad value)."""

    exit_code = 2
    reason = "config_invalid"


class FeedNotFoundError(ConfigError):
    """Raised when no feed YAML exists for the requested feed name."""

    reason = "feed_not_found"


class SecretNotFoundError(ConfigError):
    """Raised when a secret reference (env:, file:, prefect-secret:) resolves to nothing."""

    reason = "secret_missing"


class LedgerNotFoundError(ConfigError):
    """Raised when a command that only uses an existing ledger finds no ledger at its URL.

    No SQLite file (nothing is created), or a database without the ledger's tables. The
    message names the URL with its password masked.
    """

    reason = "ledger_not_found"


class StewardsFileError(ConfigError):
    """Raised when the steward directory (stewards.yaml) is missing or cannot be read.

    The message names the path and how it was chosen. `reason` is `stewards_file_missing`
    or `stewards_file_unreadable`.
    """

    reason = "stewards_file_missing"


class SourceError(BatchbridgeError):
    """Raised when the partner's server or a remote file cannot be used."""

    exit_code = 3
    reason = "source_failed"


class HostKeyError(SourceError):
    """Raised when the server's host key is not one pinned for the feed."""

    reason = "host_key_mismatch"


class UnsafeRemoteNameError(SourceError):
    """Raised when a remote entry has a traversal/separator/control-char name or is a link."""

    reason = "unsafe_remote_name"


class TransientSourceError(SourceError):
    """Raised when the connection dropped or timed out; a bounded retry may succeed."""

    reason = "source_transient"


class IncompleteDownloadError(SourceError):
    """Raised when the downloaded size differs from the size the server listed."""

    reason = "incomplete_download"


class DecryptError(BatchbridgeError):
    """Raised when an OpenPGP message cannot be decrypted and trusted."""

    exit_code = 4
    reason = "decrypt_failed"


class SignatureError(DecryptError):
    """Raised when the message is unsigned or not signed by a valid pinned partner key."""

    reason = "signature_invalid"


class IntegrityError(DecryptError):
    """Raised when the message lacks integrity protection (MDC) or fails it."""

    reason = "integrity_failed"


class PlaintextLimitError(DecryptError):
    """Raised when plaintext size or compression ratio exceeds the feed's caps."""

    reason = "plaintext_limit"


class FileRejectedError(BatchbridgeError):
    """Raised when a decrypted file fails whole: nothing from it is loaded."""

    exit_code = 5
    reason = "file_rejected"


class MalformedFileError(FileRejectedError):
    """Raised when the plaintext cannot be parsed (encoding, quoting, ragged rows)."""

    reason = "malformed_file"


class SchemaDriftError(FileRejectedError):
    """Raised when the header's columns differ from the schema's (missing or unknown)."""

    reason = "schema_drift"


class TrailerMismatchError(FileRejectedError):
    """Raised when a trailer/header record count differs from the data rows read."""

    reason = "trailer_mismatch"


class ContractViolationError(FileRejectedError):
    """Raised when a file breaks its feed's contract (name, size, window, counts, manifest)."""

    reason = "contract_violated"


class TargetError(BatchbridgeError):
    """Raised when a target fails or refuses a load."""

    exit_code = 6
    reason = "target_failed"


class TransientTargetError(TargetError):
    """Raised for connection loss or serialization failures; retried with backoff."""

    reason = "target_transient"


class ReconciliationError(BatchbridgeError):
    """Raised when a file's counts do not balance; the file is not marked done."""

    exit_code = 7
    reason = "counts_unbalanced"


class StageCrashedError(BatchbridgeError):
    """Raised when a stage hit an unexpected error.

    The original message is withheld: library errors (CSV parsers, drivers) quote the
    data they choked on, and that may be patient data. The class name and stage are kept.
    """

    exit_code = 8
    reason = "stage_crashed"


class RunFailedError(BatchbridgeError):
    """Raised when a run finished with one or more failed files (the report is written)."""

    exit_code = 9
    reason = "run_failed"


class StewardError(BatchbridgeError):
    """Raised when a data steward's action on quarantined rows cannot be done."""

    exit_code = 10
    reason = "steward_error"


class AccessDeniedError(StewardError):
    """Raised when the acting person has no role for the tenant and action (audited)."""

    reason = "access_denied"


class QuarantineRowNotFoundError(StewardError):
    """Raised when a quarantine id does not exist (or belongs to another tenant)."""

    reason = "quarantine_row_not_found"


class RowStateError(StewardError):
    """Raised when a row is released or discarded already and cannot change."""

    reason = "row_state"


class ImportRejectedError(StewardError):
    """Raised when an import file is refused whole (unknown or foreign ids, bad columns)."""

    reason = "import_rejected"


class AuditChainError(BatchbridgeError):
    """Raised when the audit log's hash chain does not verify (edited, inserted, deleted)."""

    exit_code = 11
    reason = "audit_chain_broken"


class AlertDeliveryError(BatchbridgeError):
    """Raised when an alert webhook refused a message or stayed unreachable after retries.

    The message names the HTTP status or the connection error class, never the URL: a
    webhook URL carries its token.
    """

    exit_code = 12
    reason = "alert_undelivered"


class OrchestratorError(BatchbridgeError):
    """Raised when the Prefect API a command needs cannot be started or reached.

    The message says which API (temporary, local server, configured URL), what failed
    and where its log is; nothing of the run has started yet.
    """

    exit_code = 13
    reason = "prefect_unavailable"


class IdLookupError(BatchbridgeError):
    """Raised when a run or file id (or id prefix) given on the command line cannot be used.

    `reason` says which: `id_invalid` (not hex digits and dashes, or too short),
    `id_unknown` (matches nothing) or `id_ambiguous` (matches several: the message lists
    them). Exit 2, like any other wrong command line.
    """

    exit_code = 2
    reason = "id_ambiguous"


class HealthCheckError(BatchbridgeError):
    """Raised when a feed's health check failed (tonight's run would fail): names the checks."""

    exit_code = 14
    reason = "health_check_failed"


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
