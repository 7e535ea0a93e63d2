"""Full-snapshot loads: absent records are marked inactive (never deleted), and come back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl
import pytest

from batchbridge.config import FormatConfig, HeaderRecordConfig
from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.sqlite import SqliteTarget
from batchbridge.errors import MalformedFileError, TrailerMismatchError
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.readers.delimited import read_delimited


def request(ids: list[str], load_id: str, kept: list[str] | None = None) -> LoadRequest:
    rows = pl.DataFrame(
        {
            "member_id": ids,
            "given": [f"g{i}" for i in ids],
            ROW_COLUMN: pl.Series(range(1, len(ids) + 1), dtype=pl.UInt32),
        }
    )
    return LoadRequest(
        tenant="clinic",
        natural_key=("member_id",),
        load_id=load_id,
        file_id="f",
        rows=rows,
        full_snapshot=True,
        kept_keys=None if kept is None else pl.DataFrame({"member_id": kept}),
    )


def states(path: Path) -> dict[str, tuple[int, str | None]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT member_id, active, inactivated_by_load FROM members")
        return {r[0]: (r[1], r[2]) for r in rows}


def test_absent_members_are_marked_inactive_by_the_load_that_noticed(tmp_path: Path) -> None:
    target = SqliteTarget(name="w", path=tmp_path / "w.sqlite", table="members", columns=["given"])
    first = target.load(request(["1", "2", "3"], "L1"))
    assert (first.rows_inserted, first.rows_inactivated) == (3, 0)

    second = target.load(request(["1", "2"], "L2"))
    assert (second.rows_unchanged, second.rows_inactivated) == (2, 1)
    assert states(tmp_path / "w.sqlite") == {"1": (1, None), "2": (1, None), "3": (0, "L2")}

    again = target.load(request(["1", "2"], "L3"))  # a rerun changes nothing
    assert (again.rows_unchanged, again.rows_inactivated) == (2, 0)

    back = target.load(request(["1", "2", "3"], "L4"))
    assert (back.rows_updated, back.rows_unchanged) == (1, 2)
    assert states(tmp_path / "w.sqlite")["3"] == (1, None)
    target.close()


def test_quarantined_members_stay_active(tmp_path: Path) -> None:
    target = SqliteTarget(name="w", path=tmp_path / "w.sqlite", table="members", columns=["given"])
    target.load(request(["1", "2", "3"], "L1"))
    result = target.load(request(["1"], "L2", kept=["2"]))
    assert result.rows_inactivated == 1
    assert states(tmp_path / "w.sqlite") == {"1": (1, None), "2": (1, None), "3": (0, "L2")}
    target.close()


ROSTER_FMT = FormatConfig(
    delimiter="|",
    quoting="none",
    encoding="latin-1",
    trailer_prefix=None,
    trim_trailing_whitespace=True,
    header_record=HeaderRecordConfig(expected_sender="CLINIC"),
)


def test_header_record_count_and_trimming() -> None:
    data = "H|CLINIC|20261120|2\r\na|b\r\n1  |x\r\n2|é \r\n".encode("latin-1")
    parsed = read_delimited(data, ROSTER_FMT, ("a", "b"))
    assert parsed.declared_count == 2
    assert parsed.frame["b"].to_list() == ["x", "é"]
    assert parsed.frame["a"].to_list() == ["1", "2"]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"H|CLINIC|20261120|3\na|b\n1|x\n2|y\n", TrailerMismatchError, "says 3 rows, file has 2"),
        (b"H|OTHER|20261120|2\na|b\n1|x\n2|y\n", MalformedFileError, "another sender"),
        (b"a|b\n1|x\n", MalformedFileError, "not a header record"),
        (b"H|CLINIC|20261120|two\na|b\n1|x\n", MalformedFileError, "not a row count"),
        (b"H|CLINIC|2\na|b\n1|x\n", MalformedFileError, "has 3 fields"),
        (b"H|CLINIC|20261120|2\na|b\n1|x\n2|y|z\n", MalformedFileError, r"record 2 \(line 4\)"),
    ],
)
def test_header_record_problems(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        read_delimited(data, ROSTER_FMT, ("a", "b"))
    assert "OTHER" not in str(caught.value)
