"""Discover stage: list the partner's ready (stable, safe) files."""

from __future__ import annotations

from batchbridge.connectors.sources.base import RemoteFile, Source
from batchbridge.tasks.guard import stage_task


@stage_task("discover")
def list_ready_files(source: Source) -> list[RemoteFile]:
    """List stable, safe files matching the feed's glob."""
    return source.list_ready()
