"""A streamed file's rows reach a SQL target chunk by chunk, and its spill is sealed on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.sqlite import SqliteTarget
from batchbridge.errors import TargetError
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.spill import EncryptedSpill

CANARY = "Zebulon Quartermaine"


class Chunks:
    """Frames handed out again on every read, as a spill is."""

    def __init__(self, frames: list[pl.DataFrame]) -> None:
        self._frames = frames
        self.reads = 0

    def frames(self) -> Iterator[pl.DataFrame]:
        self.reads += 1
        yield from self._frames

    @property
    def height(self) -> int:
        return sum(f.height for f in self._frames)


def rows(start: int, stop: int, name: str = "n") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "record_id": [f"R{i}" for i in range(start, stop)],
            "name": [name] * (stop - start),
            ROW_COLUMN: pl.Series(range(start + 1, stop + 1), dtype=pl.UInt32),
        }
    )


def request(chunks: Chunks, load_id: str = "L1") -> LoadRequest:
    return LoadRequest(
        tenant="acme", natural_key=("record_id",), load_id=load_id, file_id="F1",
        rows=rows(0, 1).clear(), chunks=chunks,
    )  # fmt: skip


@pytest.fixture
def target(tmp_path: Path) -> Iterator[SqliteTarget]:
    with SqliteTarget("warehouse", tmp_path / "w.db", "people", ["name"]) as opened:
        yield opened


def test_chunks_load_as_one_file_and_a_rerun_changes_nothing(target: SqliteTarget) -> None:
    chunks = Chunks([rows(0, 300), rows(300, 700), rows(700, 1000)])

    first = target.load(request(chunks))
    again = target.load(request(chunks, "L2"))

    assert (first.rows_inserted, first.rows_confirmed) == (1000, 1000)
    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, 1000)
    assert target.count_rows("acme") == 1000


def test_a_key_repeated_across_chunks_is_refused_and_nothing_is_written(
    target: SqliteTarget,
) -> None:
    chunks = Chunks([rows(0, 10), rows(5, 15)])

    with pytest.raises(TargetError, match=r"share a natural key .* across chunks"):
        target.load(request(chunks))

    assert target.count_rows("acme") == 0


def test_the_spill_is_sealed_on_disk_and_read_back_in_order(tmp_path: Path) -> None:
    spill = EncryptedSpill(tmp_path / "F1.rows")
    frames = [rows(0, 50, CANARY), rows(50, 60, CANARY)]
    for frame in frames:
        spill.append(frame)

    assert CANARY.encode() not in (tmp_path / "F1.rows").read_bytes()
    assert [f.equals(g) for f, g in zip(spill.frames(), frames, strict=True)] == [True, True]
    assert len(list(spill.frames())) == 2  # read again (a retried load)
    spill.close()
    assert not (tmp_path / "F1.rows").exists()
