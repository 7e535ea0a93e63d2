"""The hostile-input harness the hostile suites share: count, call, check the answer.

`hostile_call` runs one hostile input and sorts what comes back: the refusal the code
under test is meant to give (checked), a result (returned), or anything else (counted
as `unhandled_errors`, and the test fails). `PlaintextHarness` applies it to a
plaintext the validate stage reads; the CSV and HL7 suites differ only in its fields.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

import polars as pl
import pytest
from hypothesis import strategies as st

from batchbridge.config import AnyFormatConfig
from batchbridge.demo.lab_data import generate_lab_rows, mapping_frame
from batchbridge.errors import BatchbridgeError, FileRejectedError
from batchbridge.validations.base import ROW_COLUMN, TransformContext, ValidationContext
from batchbridge.validations.parse import ValidatedFile, parse_and_validate
from batchbridge.validations.schemas.lab_results import COLUMNS, LAB_RESULTS
from batchbridge.validations.stream import StreamedFile, stream_file
from tests.reliability.conftest import Figures
from tests.support.plaintext_source import BytesPlaintext

FILE_DATE = date(2026, 11, 20)
CTX = ValidationContext(
    tenant="acme_lab",
    file_date=FILE_DATE,
    timezone="America/Chicago",
    mappings={"local_test_code": mapping_frame()},
)
TRANSFORM_CTX = TransformContext("acme_lab", "America/Chicago", CTX.mappings, b"p" * 32)
# Stands in for a patient value; planted in cells, it must never reach an error message.
CANARY = "ZEBULONQUIXOTE"
CANARY_PARTS = ("ZEBULON", "QUIXOTE")

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def hostile_call(
    figures: Figures,
    call: Callable[[], T],
    refusal: type[E],
    check: Callable[[E], None],
    subject: str = "a plaintext",
) -> T | E:
    """Count one hostile input and run `call`: its result, or the checked `refusal` it raised.

    Any other error is one the stage guard would have to hide: counted, and the test fails.
    """
    figures.add("hostile_inputs")
    try:
        return call()
    except refusal as exc:
        check(exc)
        return exc
    except BatchbridgeError as exc:
        figures.add("unhandled_errors")
        pytest.fail(f"{subject} failed outside {refusal.__name__}: {type(exc).__name__}")
    except Exception:
        figures.add("unhandled_errors")
        raise


def _transform(valid: pl.DataFrame) -> pl.DataFrame:
    return LAB_RESULTS.transform(valid, TRANSFORM_CTX)


def good_frame(rows: int = 12, seed: int = 3) -> pl.DataFrame:
    """Valid rows with the canary as a first and a last name."""
    return generate_lab_rows(rows, seed=seed, file_date=FILE_DATE, canary_names=[CANARY])


def replace_cell(frame: pl.DataFrame, row: int, column: str, value: str) -> pl.DataFrame:
    """`frame` with record `row` (1-based) holding `value` in `column`."""
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row - 1)
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )


@dataclass(frozen=True)
class Outcome:
    """What a file got: a rejection, or its rows split into valid and quarantined."""

    rejected: FileRejectedError | None = None
    validated: ValidatedFile | None = None


@dataclass(frozen=True)
class PlaintextHarness:
    """How one format's hostile plaintexts are judged.

    `reasons`: the rejection reasons the format may give; `max_message`: how long a
    rejection message may be; `declares_rows`: whether a declared count reaches the
    validated file (a CSV trailer does; HL7's BTS/FTS counts are checked by the reader).
    """

    fmt: AnyFormatConfig
    reasons: frozenset[str]
    max_message: int
    declares_rows: bool

    def attempt(self, data: bytes, figures: Figures, fmt: AnyFormatConfig | None = None) -> Outcome:
        """Parse and validate `data` like the validate stage; check whichever answer comes back."""
        answer = hostile_call(
            figures,
            lambda: parse_and_validate(data, fmt or self.fmt, LAB_RESULTS, CTX),
            FileRejectedError,
            self.check_rejection,
        )
        streamed = self.attempt_streamed(data, figures, fmt or self.fmt)
        if isinstance(answer, FileRejectedError):
            # The nightly run streams: it must refuse the same files (for a file with
            # more than one fault, it may name another one: the first in file order).
            assert isinstance(streamed, FileRejectedError), type(streamed).__name__
            return Outcome(rejected=answer)
        self.check_accounted(answer)
        assert not isinstance(streamed, FileRejectedError), streamed.reason
        assert (streamed.rows_read, streamed.rows_declared, streamed.quarantined.height) == (
            answer.rows_read,
            answer.rows_declared,
            answer.result.quarantined.height,
        )
        streamed.transformed.close()
        return Outcome(validated=answer)

    def attempt_streamed(
        self, data: bytes, figures: Figures, fmt: AnyFormatConfig
    ) -> StreamedFile | FileRejectedError:
        """The same plaintext the way a nightly run reads it: in blocks and small chunks."""
        source = BytesPlaintext(data, block=8191)
        return hostile_call(
            figures,
            lambda: stream_file(source.open, fmt, LAB_RESULTS, CTX, _transform, chunk_bytes=65536),
            FileRejectedError,
            self.check_rejection,
        )

    def check_rejection(self, exc: FileRejectedError) -> None:
        """A rejection names a known reason and carries no cell value, no chained library error."""
        message = str(exc)
        assert exc.reason in self.reasons, exc.reason
        for part in CANARY_PARTS:
            assert part not in message, message[:300]
        # A chained parser error would quote the data into logs and tracebacks.
        assert exc.__cause__ is None
        assert exc.__suppress_context__ or exc.__context__ is None
        # One short printable line: nothing in it can forge log lines or flood an alert.
        assert message.isprintable(), repr(message[:300])
        assert len(message) < self.max_message, len(message)  # bounded, whatever the input

    def check_accounted(self, validated: ValidatedFile) -> None:
        """Every record read is either valid or quarantined, kept as the exact string it was."""
        result = validated.result
        assert result.valid.height + result.quarantined.height == validated.rows_read
        if not self.declares_rows:
            assert validated.rows_declared is None
        elif validated.rows_declared is not None:
            assert validated.rows_declared == validated.rows_read
        for frame in (result.valid, result.quarantined):
            cells = frame.select(COLUMNS)
            assert all(dtype == pl.String for dtype in cells.dtypes)
            # Nothing invented: no cell turned into a null (an empty field is "").
            assert sum(cells.null_count().row(0)) == 0
        valid_rows = result.valid[ROW_COLUMN].to_list()
        rows = sorted([*valid_rows, *result.quarantined[ROW_COLUMN].to_list()])
        assert rows == list(range(1, validated.rows_read + 1))


# -- edits of a good file --------------------------------------------------------------------

MUTATIONS = ["delete", "insert", "flip", "truncate", "duplicate", "swap_parts", "splice_token"]


@st.composite
def mutated_files(draw: st.DrawFn, good: bytes, tokens: list[str], separator: bytes) -> bytes:
    """`good` with a few byte-level edits, or two of its `separator`-split parts swapped."""
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(MUTATIONS))
        at = draw(st.integers(0, len(data) - 1))
        size = draw(st.integers(1, 40))
        if kind == "delete":
            del data[at : at + size]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            data[at:at] = data[at : at + size]
        elif kind == "splice_token":
            data[at:at] = draw(st.sampled_from(tokens)).encode()
        else:
            parts = bytes(data).split(separator)
            i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
            data = bytearray(separator.join(parts))
    return bytes(data)


def random_splices(base: bytes, tokens: list[str], count: int) -> Iterator[bytes]:
    """`count` copies of `base`, each with a few random byte splices, from a fixed seed."""
    rng = random.Random(20261120)
    for _ in range(count):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:
                data[at] = rng.randrange(256)
            elif choice < 0.7:
                del data[at : at + rng.randint(1, 200)]
            else:
                data[at:at] = rng.choice(tokens).encode()
        yield bytes(data)
