"""A file streamed in chunks comes out as the whole file would: counts, quarantine, rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from batchbridge.config import FormatConfig
from batchbridge.demo.lab_data import generate_lab_rows, mapping_frame, render_lab_csv
from batchbridge.errors import SignatureError, TrailerMismatchError
from batchbridge.validations import keys_seen
from batchbridge.validations.base import (
    REASONS_COLUMN,
    ROW_COLUMN,
    TransformContext,
    ValidationContext,
)
from batchbridge.validations.keys_seen import KeysSeen, key_hashes
from batchbridge.validations.parse import parse_and_validate
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from batchbridge.validations.stream import StreamedFile, stream_file
from tests.support.plaintext_source import BytesPlaintext

FILE_DATE = date(2026, 3, 1)
ZONE = "America/Chicago"
FMT = FormatConfig()
MAPPINGS = {"local_test_code": mapping_frame()}
VCTX = ValidationContext("acme_lab", FILE_DATE, ZONE, MAPPINGS)
TCTX = TransformContext("acme_lab", ZONE, MAPPINGS, b"k" * 32)


def transform(valid: pl.DataFrame) -> pl.DataFrame:
    return LAB_RESULTS.transform(valid, TCTX)


def streamed(source: BytesPlaintext, chunk: int = 8192) -> StreamedFile:
    return stream_file(source.open, FMT, LAB_RESULTS, VCTX, transform, chunk_bytes=chunk)


def lab_file(rows: pl.DataFrame) -> bytes:
    return render_lab_csv(rows)


def reasons(frame: pl.DataFrame) -> dict[int, list[str]]:
    return dict(zip(frame[ROW_COLUMN].to_list(), frame[REASONS_COLUMN].to_list(), strict=True))


def test_streamed_in_small_chunks_it_equals_the_whole_file() -> None:
    kinds = {"bad_npi": 4, "unmapped_code": 3, "duplicate_id": 3, "bad_dob": 2}
    data = lab_file(generate_lab_rows(600, seed=3, file_date=FILE_DATE, bad_rows=kinds))
    whole = parse_and_validate(data, FMT, LAB_RESULTS, VCTX)

    result = streamed(BytesPlaintext(data, block=1000), chunk=3000)

    assert (result.rows_read, result.rows_declared) == (whole.rows_read, whole.rows_declared)
    assert reasons(result.quarantined) == reasons(whole.result.quarantined)
    expected = transform(whole.result.valid).sort(ROW_COLUMN)
    assert result.transformed.collect().sort(ROW_COLUMN).equals(expected)
    assert result.rows_valid == expected.height


def test_copies_of_an_id_in_different_chunks_are_all_quarantined() -> None:
    rows = generate_lab_rows(300, seed=5, file_date=FILE_DATE)
    twice = rows["record_id"][10]
    rows = rows.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([10, 150, 290]))
        .then(pl.lit(twice))
        .otherwise(pl.col("record_id"))
        .alias("record_id")
    )
    source = BytesPlaintext(lab_file(rows), block=500)

    result = streamed(source, chunk=2000)

    assert reasons(result.quarantined) == {
        11: ["record_id:unique"],
        151: ["record_id:unique"],
        291: ["record_id:unique"],
    }
    assert twice not in result.transformed.collect()["record_id"].to_list()
    assert result.rows_valid == 297 == result.transformed.height
    # The height is counted when the copies are dropped, not read back: the same.
    assert sum(frame.height for frame in result.transformed.frames()) == 297
    assert source.opened == 2  # the earlier copy was fetched by a second read


def test_the_second_read_stops_where_the_kept_raw_tail_starts(tmp_path: Path) -> None:
    rows = generate_lab_rows(600, seed=9, file_date=FILE_DATE)
    # Rows 40 and 120 share an id: the chunk holding row 120 starts the raw tail, so the
    # second read of the file needs only the rows before it.
    rows = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 119)
        .then(pl.lit(rows["record_id"][39]))
        .otherwise(pl.col("record_id"))
        .alias("record_id")
    )
    source = BytesPlaintext(lab_file(rows), block=500)
    blocks = -(-len(source.data) // source.block)
    spill = tmp_path / "file.rows"

    result = stream_file(
        source.open, FMT, LAB_RESULTS, VCTX, transform, chunk_bytes=3000, spill_path=spill
    )

    assert reasons(result.quarantined) == {40: ["record_id:unique"], 120: ["record_id:unique"]}
    assert result.rows_valid == 598 == sum(f.height for f in result.transformed.frames())
    assert source.opened == 2
    assert blocks < source.sent < blocks * 1.5  # the second read stopped early
    assert not spill.with_suffix(".raw").exists()  # the raw tail is gone already
    result.transformed.close()
    assert not spill.exists()


def test_rows_not_kept_are_made_again_from_the_file_the_same() -> None:
    kinds = {"bad_npi": 4, "duplicate_id": 3, "bad_dob": 2}
    data = lab_file(generate_lab_rows(600, seed=11, file_date=FILE_DATE, bad_rows=kinds))
    kept = streamed(BytesPlaintext(data, block=1000), chunk=3000)
    source = BytesPlaintext(data, block=700)

    result = stream_file(
        source.open, FMT, LAB_RESULTS, VCTX, transform, chunk_bytes=2000, replay=True
    )
    opened = source.opened

    again = result.transformed.collect().sort(ROW_COLUMN)
    assert again.equals(kept.transformed.collect().sort(ROW_COLUMN))
    assert result.transformed.height == again.height == kept.rows_valid
    assert source.opened == opened + 1  # made again by reading the file again


def test_a_repeat_of_an_id_quarantined_for_another_reason_adds_the_reason_once() -> None:
    rows = generate_lab_rows(200, seed=6, file_date=FILE_DATE, bad_rows={"bad_npi": 1})
    whole = parse_and_validate(lab_file(rows), FMT, LAB_RESULTS, VCTX).result.quarantined
    (bad,) = whole[ROW_COLUMN].to_list()
    later = 199 if bad < 100 else 0
    rows = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == later)
        .then(pl.lit(rows["record_id"][bad - 1]))
        .otherwise(pl.col("record_id"))
        .alias("record_id")
    )

    result = streamed(BytesPlaintext(lab_file(rows), block=700), chunk=1500)

    found = reasons(result.quarantined)
    assert found[later + 1] == ["record_id:unique"]
    assert found[bad] == ["ordering_provider_npi:npi_luhn", "record_id:unique"]


def test_a_hash_collision_quarantines_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    def one_hash_for_all(keys: pl.Series) -> pl.Series:
        return pl.Series("hash", [7] * len(keys), dtype=pl.UInt64)

    monkeypatch.setattr("batchbridge.validations.stream.key_hashes", one_hash_for_all)
    rows = generate_lab_rows(120, seed=8, file_date=FILE_DATE)
    source = BytesPlaintext(lab_file(rows), block=600)

    result = streamed(source, chunk=1200)

    assert result.quarantined.height == 0
    assert result.transformed.height == 120
    assert source.opened == 2  # every later row was suspected; the exact count cleared them


def test_a_trailer_mismatch_after_many_chunks_fails_the_file() -> None:
    data = lab_file(generate_lab_rows(400, seed=9, file_date=FILE_DATE))
    body, _, _ = data.rstrip(b"\n").rpartition(b"\n")
    wrong = body + b"\nTRAILER,399\n"

    with pytest.raises(TrailerMismatchError, match="trailer says 399 rows, file has 400"):
        streamed(BytesPlaintext(wrong, block=800), chunk=1600)


def test_a_bad_signature_is_the_reason_even_when_the_content_is_broken() -> None:
    broken = b"id,nonsense\n\x00\x00\x00"
    with pytest.raises(SignatureError):
        streamed(BytesPlaintext(broken, bad_signature=True))


def test_keys_seen_finds_only_keys_of_earlier_chunks() -> None:
    seen = KeysSeen()
    for start in range(0, 5000, 500):
        seen.add(key_hashes(pl.Series([f"R{i}" for i in range(start, start + 500)])))
    probe = pl.Series(["R0", "R4999", "R5000", " R17 ", "", None])
    assert seen.seen(key_hashes(probe)).to_list() == [True, True, False, True, False, False]
    assert len(seen) == 5000
    assert (
        keys_seen.key_hashes(pl.Series(["a "])).to_list() == key_hashes(pl.Series(["a"])).to_list()
    )
