"""Decrypt + verify: plaintext only from a message signed by a pinned partner key."""

from __future__ import annotations

from batchbridge.connectors.pgp.base import Decryptor, VerifiedPlaintext
from batchbridge.connectors.sources.base import FetchedFile
from batchbridge.tasks.guard import stage_task


@stage_task("decrypt", task_run_name="decrypt {fetched.name}")
def decrypt_file(decryptor: Decryptor, fetched: FetchedFile) -> VerifiedPlaintext:
    """Decrypt in memory; raises SignatureError / IntegrityError / PlaintextLimitError."""
    return decryptor.decrypt_and_verify(fetched.local_path)
