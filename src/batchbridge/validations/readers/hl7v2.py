"""Reader for HL7 v2 batch files (FHS/BHS … BTS/FTS of ORU^R01): one row per OBX.

What a file must be, and what each failure raises (messages name batch, message and
segment numbers and field positions, never a value):

- Text in `fmt.encoding` (a UTF-8 BOM is dropped); NUL bytes or invalid bytes
  -> MalformedFileError with the byte offset and segment number.
- Segments end in CR (the standard), CRLF or LF; blank lines are skipped. Segment
  numbers in messages count the non-blank segments of the file, from 1.
- Envelope: an optional FHS (first segment) … FTS (last segment), around batches
  BHS … BTS, each holding messages that start with MSH. Several batches are allowed.
  A batch left open, an FHS without FTS, a stray BHS/BTS/FTS, or segments after FTS
  -> MalformedFileError. With `fmt.require_batch_envelope` (the default) every message
  must sit inside a batch and a file without one is refused; without it, plain
  concatenated messages are read too.
- BTS-1 (the batch's message count) and FTS-1 (the file's batch count) are required:
  a count that differs -> TrailerMismatchError 'batch N: BTS says X messages, file has Y'
  or 'FTS says X batches, file has Y'. This is the file's trailer check, done here, so
  `ParsedFile.declared_count` is None: the counts are of messages and batches, while
  reconciliation compares a declared count with rows (OBX segments).
- Every message is ORU^R01 (MSH-9.1 'ORU', MSH-9.2 'R01'), has valid MSH-1/MSH-2
  encoding characters, and holds at least one OBX, each after an OBR
  -> MalformedFileError naming the message and segment number.

Rows: each OBX is one lab_results row, read with the PID, ORC and OBR before it in its
message (ORU^R01: MSH, [PID], {[ORC] OBR {OBX}}); NTE, PV1, SPM, Z-segments… are skipped.

- record_id: OBX-21.1 (observation instance identifier); else
  '<OBR-3.1>-<OBX-3.1>[-<OBX-4>]' (filler order number, test code, sub-id: what a
  corrected result repeats, so a 'C' row updates the row it corrects); else
  '<MSH-10>-<k>', k = the OBX's position in its message; empty without an MSH-10.
- patient_mrn: PID-3.1 of the repetition whose PID-3.5 is 'MR', else of the first.
- patient_last_name, patient_first_name: PID-5.1, PID-5.2 of the legal name (the
  repetition whose PID-5.7 is 'L'), else of the first repetition.
- patient_dob: PID-7.1, 'YYYYMMDD[HHMM…]' becoming 'YYYY-MM-DD'.
- patient_sex: PID-8. patient_zip: PID-11.5 (first repetition).
- ordering_provider_npi: ORC-12.1 of the order's ORC, else OBR-16.1 (first repetitions).
- specimen_collected_at: OBR-7.1. resulted_at: OBR-22.1, else OBX-19.1.
- local_test_code, test_name: OBX-3.1, OBX-3.2. result_unit: OBX-6.1.
- result_value: OBX-5; for coded types (CE/CWE/CNE/CF) its text (.2, else .1), for SN
  its parts joined ('<^5' -> '<5'), for other types the whole field.
- reference_range, abnormal_flag, result_status: OBX-7, OBX-8, OBX-11 (whole fields).

Date-times 'YYYYMMDDHHMM[SS[.S…]][±ZZZZ]' become ISO 8601 ('YYYY-MM-DDTHH:MM[:SS[.S…]]',
'Z' for +0000, else '±HH:MM'). Nothing is defaulted: an absent field is the empty
string, and a value that is not in the HL7 form (a date-time without minutes, a
partial date, text) is passed through as it is, so the lab schema quarantines the row
with the column and rule. Where HL7 repeats a field to list alternatives (identifiers,
names, addresses, providers) one repetition is chosen as above; any other field that
repeats is passed through whole, repetition separators included.

Escape sequences are decoded in every value: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ (the message's
own delimiters), \\Xhh…\\ (bytes in the file's encoding), \\.br\\ (line break); \\H\\
and \\N\\ (highlighting) are dropped; any other sequence is kept as it is. Each piece is
decoded on its own, after it is cut out of its field: a sequence cannot span a component
or repetition separator.

How: the whole file is one Polars frame of segments (hl7v2_segments), fields and
components are cut for every segment of a kind at once (hl7v2_fields), and each OBX
joins the PID, OBR and ORC it belongs to. Python touches only the envelope segments,
the few values an escape sequence changes, and messages with their own delimiters
(hl7v2_values). No python-hl7: its object per field, repetition and component cost
~20 s per 100,000 OBX.
"""

from __future__ import annotations

import polars as pl

from batchbridge.config import Hl7v2FormatConfig
from batchbridge.errors import ConfigError, MalformedFileError
from batchbridge.validations.base import ROW_COLUMN, ParsedFile
from batchbridge.validations.readers.hl7v2_fields import (
    OBX_DECODED,
    PARTS,
    msh_pieces,
    obr_pieces,
    obx_pieces,
    orc_pieces,
    pid_pieces,
    result_value,
)
from batchbridge.validations.readers.hl7v2_segments import (
    decode_text,
    message_segments,
    split_segments,
)
from batchbridge.validations.readers.hl7v2_values import (
    DELIMITERS_COLUMN,
    iso_date,
    iso_datetime,
    to_standard,
    unescape_columns,
)
from batchbridge.validations.schemas.lab_results import COLUMNS as LAB_COLUMNS

# The segments rows are made of; NTE, PV1, SPM, Z-segments… are never split.
_READ_IDS = ("MSH", "PID", "ORC", "OBR", "OBX")
_PID_COLUMNS = (
    "patient_mrn",
    "patient_last_name",
    "patient_first_name",
    "patient_dob",
    "patient_sex",
    "patient_zip",
)
_OBR_DECODED = ("filler", "specimen_collected_at", "obr_provider", "obr_resulted_at")


def read_hl7v2(data: bytes, fmt: Hl7v2FormatConfig, columns: tuple[str, ...]) -> ParsedFile:
    """Parse an HL7 v2 batch into lab_results rows (strings), checking the BTS/FTS counts.

    The frame has the schema's `columns` (in schema order) and ROW_COLUMN (UInt32,
    1-based OBX number in the file).
    """
    if len(columns) != len(LAB_COLUMNS) or set(columns) != set(LAB_COLUMNS):
        raise ConfigError(
            "the hl7v2 format reads lab observations only: the feed's schema must have "
            "the lab_results columns"
        )
    # Each stage's input is dropped once the next one has it: on a large file the text and
    # the frame of every segment are each as large as the file.
    segments = split_segments(decode_text(data, fmt.encoding))
    if segments.is_empty():
        raise MalformedFileError("file is empty: no segments")
    messages = message_segments(segments, fmt)
    del segments
    read = messages.filter(pl.col("id").is_in(_READ_IDS))
    del messages
    rows = _lab_rows(read, fmt.encoding)
    return ParsedFile(frame=rows.select(*columns, ROW_COLUMN), declared_count=None)


def _lab_rows(segments: pl.DataFrame, charset: str) -> pl.DataFrame:
    """One lab_results row per OBX of `segments` (MSH/PID/ORC/OBR/OBX, in file order)."""
    # One partition per kind, then each kind's fields split and cut in one lazy query: the
    # split happens once per segment, and the optimiser shares the pieces that repeat. A
    # partition is dropped once cut (see read_hl7v2).
    keyed = _keyed(segments)
    del segments
    by_kind = keyed.partition_by("id", as_dict=True)
    none = keyed.clear()
    del keyed

    def pieces(segment_id: str, keys: list[str], exprs: list[pl.Expr]) -> pl.DataFrame:
        return (
            by_kind.pop((segment_id,), none)
            .lazy()
            .with_columns(pl.col("text").str.split("|").alias(PARTS))
            .select(*keys, DELIMITERS_COLUMN, *exprs)
            .collect()
        )

    msh = pieces("MSH", ["msg", "number"], msh_pieces())
    obx = pieces("OBX", ["msg", "number", "pid_key", "obr_key", "observation"], obx_pieces())
    _check_messages(msh, obx)

    def decoded(frame: pl.DataFrame, columns: tuple[str, ...], *keys: str) -> pl.DataFrame:
        return unescape_columns(frame, columns, charset).select(*keys, *columns)

    pid = decoded(pieces("PID", ["pos"], pid_pieces()), _PID_COLUMNS, "pos")
    orc = decoded(pieces("ORC", ["pos"], orc_pieces()), ("orc_provider",), "pos")
    obr = decoded(pieces("OBR", ["pos", "orc_key"], obr_pieces()), _OBR_DECODED, "pos", "orc_key")
    obr = obr.join(orc, left_on="orc_key", right_on="pos", how="left", maintain_order="left")
    control = decoded(msh, ("control_id",), "msg")
    obx = unescape_columns(obx, OBX_DECODED, charset)
    rows = (
        obx.join(pid, left_on="pid_key", right_on="pos", how="left", maintain_order="left")
        .join(obr, left_on="obr_key", right_on="pos", how="left", maintain_order="left")
        .join(control, on="msg", how="left", maintain_order="left")
        .with_columns(pl.col(*_PID_COLUMNS, "orc_provider").fill_null(""))
    )
    return rows.select(
        _record_id(),
        *(pl.col(column) for column in _PID_COLUMNS if column != "patient_dob"),
        iso_date(pl.col("patient_dob")).alias("patient_dob"),
        pl.when(pl.col("orc_provider") != "")
        .then(pl.col("orc_provider"))
        .otherwise(pl.col("obr_provider"))
        .alias("ordering_provider_npi"),
        iso_datetime(pl.col("specimen_collected_at")).alias("specimen_collected_at"),
        iso_datetime(
            pl.when(pl.col("obr_resulted_at") != "")
            .then(pl.col("obr_resulted_at"))
            .otherwise(pl.col("obx_resulted_at"))
        ).alias("resulted_at"),
        pl.col("local_test_code", "test_name"),
        result_value(),
        pl.col("result_unit", "reference_range", "abnormal_flag", "result_status"),
        pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias(ROW_COLUMN),
    )


def _keyed(segments: pl.DataFrame) -> pl.DataFrame:
    """`segments` in standard delimiters, with their message's MSH-1 + MSH-2, their
    position `pos`, and the keys rows are joined on: pid_key, obr_key, orc_key (the
    position of the PID, OBR or ORC a segment is read with) and `observation`."""
    kind = pl.col("id")
    # Every message starts with its MSH: its MSH-1 + MSH-2 carry over to its segments.
    chars = pl.when(kind == "MSH").then(pl.col("text").str.slice(3, 5)).forward_fill()
    segments = segments.with_columns(chars.alias(DELIMITERS_COLUMN))
    texts = to_standard(segments.get_column("text"), segments.get_column(DELIMITERS_COLUMN))
    segments = segments.with_columns(texts).with_row_index("pos")

    # ORU^R01 is MSH, [PID], {[ORC] OBR {OBX}}. An OBX is read with the last PID of its
    # message and the last OBR since that PID (or the MSH); an OBR with the last ORC after
    # the OBR, PID or MSH before it. Each is found by comparing positions carried forward
    # ("the last X so far" against "the last boundary so far"): a pass per column, where a
    # window per message would cost a group-by.
    pos = pl.col("pos")

    def last(*ids: str) -> pl.Expr:
        return pl.when(kind.is_in(ids)).then(pos).forward_fill()

    def after(found: pl.Expr, boundary: pl.Expr) -> pl.Expr:
        return pl.when(found > boundary).then(found)

    observations = (kind == "OBX").cum_sum()
    return segments.with_columns(
        pid_key=after(last("PID"), last("MSH")),
        obr_key=after(last("OBR"), last("MSH", "PID")),
        orc_key=after(last("ORC").shift(1), last("MSH", "PID", "OBR").shift(1)),
        # The OBX's place in its message: OBX so far, less those before its MSH.
        observation=observations - pl.when(kind == "MSH").then(observations).forward_fill(),
    )


def _record_id() -> pl.Expr:
    """OBX-21; else '<filler>-<code>[-<sub-id>]'; else '<MSH-10>-<k>'; else ''."""
    filler, code, sub_id = pl.col("filler"), pl.col("local_test_code"), pl.col("sub_id")
    control = pl.col("control_id")
    from_order = pl.concat_str(
        filler,
        pl.lit("-"),
        code,
        pl.when(sub_id != "").then(pl.concat_str(pl.lit("-"), sub_id)).otherwise(pl.lit("")),
    )
    from_message = pl.concat_str(control, pl.lit("-"), pl.col("observation").cast(pl.String))
    return (
        pl.when(pl.col("observation_id") != "")
        .then(pl.col("observation_id"))
        .when(filler != "")
        .then(from_order)
        .when(control != "")
        .then(from_message)
        .otherwise(pl.lit(""))
        .alias("record_id")
    )


def _check_messages(msh: pl.DataFrame, obx: pl.DataFrame) -> None:
    """Raise for the first message (in file order) that is not ORU^R01, has an OBX before
    any OBR, or has no OBX, with what a message-by-message reading would have said."""
    not_oru = msh.filter((pl.col("type_1") != "ORU") | (pl.col("type_2") != "R01"))
    orphans = obx.filter(pl.col("obr_key").is_null())
    empty = msh.join(obx.select("msg").unique(), on="msg", how="anti")
    failing = pl.concat([frame.get_column("msg") for frame in (not_oru, orphans, empty)])
    if failing.is_empty():
        return
    number: int = failing.sort().item(0)
    header: int = msh.filter(pl.col("msg") == number).get_column("number").item()
    where = f"message {number} (segment {header})"
    if number in not_oru.get_column("msg"):
        raise MalformedFileError(f"{where}: MSH-9 is not ORU^R01")
    orphan = orphans.filter(pl.col("msg") == number).get_column("number")
    if not orphan.is_empty():
        first: int = orphan.item(0)  # segments are in file order
        raise MalformedFileError(f"message {number}, segment {first}: OBX before any OBR")
    raise MalformedFileError(f"{where}: no OBX segment (a message without results)")
