"""A feed as a steward action sees it: its config, its quarantine key ring, its schema on demand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batchbridge.config import LoadedFeed, load_feed
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.errors import ConfigError
from batchbridge.ledger.crypto import QuarantineKeyring, RowCipher, row_associated_data
from batchbridge.ledger.models import QuarantinedRow
from batchbridge.ledger.quarantine_store import encrypted_of
from batchbridge.validations.registry import get_schema

if TYPE_CHECKING:
    from batchbridge.validations.base import FeedSchema


@dataclass(frozen=True)
class FeedContext:
    """A feed's config and quarantine key ring, read fresh for each steward action."""

    loaded: LoadedFeed
    keyring: QuarantineKeyring

    @property
    def tenant(self) -> str:
        return self.loaded.config.tenant

    @property
    def schema(self) -> FeedSchema:
        """The feed's schema; loaded on first use (it brings pandera and polars along)."""
        return get_schema(self.loaded.config.schema_name)

    def decrypt(self, row: QuarantinedRow) -> dict[str, str | None]:
        """A quarantined row's values (bound to its file and row number)."""
        return self.keyring.decrypt(
            encrypted_of(row), row_associated_data(row.file_id, row.row_number)
        )


def feed_context(feed: str, config_dir: Path, *, tenant: str | None = None) -> FeedContext:
    """Load a feed's YAML and keys: the current key plus quarantine_previous_keys."""
    loaded = load_feed(feed, config_dir)
    config = loaded.config
    if tenant is not None and config.tenant != tenant:
        raise ConfigError(
            f"feed {feed} belongs to tenant {config.tenant}, but its quarantined rows to "
            f"{tenant}; fix the feed YAML before acting on them"
        )
    keyring = QuarantineKeyring(
        RowCipher(resolve_secret(config.quarantine_key, base_dir=loaded.base_dir)),
        [
            RowCipher(resolve_secret(ref, base_dir=loaded.base_dir))
            for ref in config.quarantine_previous_keys
        ],
    )
    return FeedContext(loaded=loaded, keyring=keyring)
