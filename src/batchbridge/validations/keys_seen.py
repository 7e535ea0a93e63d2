"""Natural keys seen in earlier chunks of a file, kept as sorted 64-bit hashes (8 bytes a key).

A streamed file is validated chunk by chunk, so the schema's `unique` rule sees one
chunk only. `KeysSeen` finds the rows whose key some earlier chunk already had. A hash
match is a suspicion, not a verdict: the caller confirms it by comparing the keys
themselves (a second read of the file), so a collision never quarantines a row.

The hashes are kept in a few sorted runs that merge as they grow (each run at least
twice the next), so a lookup is a binary search per run and memory stays ~8 bytes a key.
"""

from __future__ import annotations

import polars as pl

_SEED = 20261203


def key_hashes(keys: pl.Series) -> pl.Series:
    """64-bit hashes of the trimmed keys; null where a key is missing or blank."""
    trimmed = keys.str.strip_chars()
    present = trimmed.is_not_null() & (trimmed != "")
    return pl.select(
        pl.when(present).then(trimmed.hash(seed=_SEED)).otherwise(None).alias("hash")
    ).to_series()


class KeysSeen:
    """Hashes of every key added so far; `seen` answers for a later chunk's keys."""

    def __init__(self) -> None:
        self._runs: list[pl.Series] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def seen(self, hashes: pl.Series) -> pl.Series:
        """True where a (non-null) hash was added before."""
        found = pl.Series("seen", [False] * len(hashes), dtype=pl.Boolean)
        present = hashes.fill_null(0)
        for run in self._runs:
            at = run.search_sorted(present, side="left").clip(0, len(run) - 1)
            found = found | (run.gather(at) == present)
        return found & hashes.is_not_null()

    def add(self, hashes: pl.Series) -> None:
        """Remember `hashes` (nulls left out)."""
        run = hashes.drop_nulls().unique().sort()
        if not len(run):
            return
        self._runs.append(run)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer = self._runs.pop()
            older = self._runs.pop()
            self._runs.append(pl.concat([older, newer]).unique().sort())
