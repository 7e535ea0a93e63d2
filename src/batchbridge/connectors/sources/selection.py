"""Which ready files a run processes: new ones, or the ones asked for (forced or not)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from batchbridge.connectors.sources.base import RemoteFile


@dataclass(frozen=True)
class Discovery:
    """Ready files to process, and names left alone with why."""

    to_process: list[RemoteFile]
    skipped: dict[str, str]


def select_files(
    ready: Sequence[RemoteFile],
    *,
    is_done: dict[str, bool],
    requested: Sequence[str] | None,
    force: bool,
) -> Discovery:
    """Pick files: requested names only (when given), done ones only when forced."""
    wanted = set(requested) if requested else None
    to_process: list[RemoteFile] = []
    skipped: dict[str, str] = {}
    for remote in ready:
        if wanted is not None and remote.name not in wanted:
            continue
        if is_done.get(remote.name, False) and not force:
            skipped[remote.name] = "already_done"
            continue
        to_process.append(remote)
    if wanted is not None:
        for name in sorted(wanted - {r.name for r in ready}):
            skipped[name] = "not_ready_on_source"
    return Discovery(to_process=to_process, skipped=skipped)
