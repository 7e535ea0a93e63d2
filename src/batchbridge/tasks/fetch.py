"""Fetch: copy one remote file into the 0700 staging folder and hash it."""

from __future__ import annotations

from pathlib import Path

from batchbridge.connectors.sources.base import FetchedFile, RemoteFile, Source
from batchbridge.tasks.guard import stage_task


@stage_task("fetch", task_run_name="fetch {remote.name}")
def fetch_file(source: Source, remote: RemoteFile, staging_dir: Path) -> FetchedFile:
    """Download, verify size, sha256."""
    return source.fetch(remote, staging_dir)
