"""HL7 v2 batch reader: round trip with the renderer, envelope counts, escapes, clean errors."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from batchbridge.config import FormatConfig, Hl7v2FormatConfig
from batchbridge.demo.lab_data import (
    expected_quarantined,
    generate_lab_rows,
    mapping_frame,
)
from batchbridge.errors import (
    ConfigError,
    FileRejectedError,
    MalformedFileError,
    TrailerMismatchError,
)
from batchbridge.validations.base import REASONS_COLUMN, ROW_COLUMN, ParsedFile, ValidationContext
from batchbridge.validations.formats import read_plaintext
from batchbridge.validations.parse import parse_and_validate
from batchbridge.validations.readers.hl7v2 import read_hl7v2
from batchbridge.validations.schemas.lab_results import COLUMNS, LAB_RESULTS
from tests.support.hl7_data import escape, hl7_row_order, render_lab_hl7
from tests.support.lab_expectations import BAD_ROW_REASONS

FMT = Hl7v2FormatConfig()
FILE_DATE = date(2026, 11, 20)
CTX = ValidationContext(
    tenant="acme_lab",
    file_date=FILE_DATE,
    timezone="America/Chicago",
    mappings={"local_test_code": mapping_frame()},
)
SECRET = "Zebulon"  # stands in for a patient value: must never reach an error message

MSH = "MSH|^~\\&|LIS|LAB|BB|ACME|20261120020000||ORU^R01|CTRL{n}|P|2.5.1"
PID = f"PID|1||ABC1234^^^ACME^MR||{SECRET}^Ann||19800101|F|||1 Main St^^Chicago^IL^60601"
ORC = "ORC|RE|||||||||||1234567893"
OBR = "OBR|1||F100|GLU^Glucose^L|||202611190830|||||||||1234567893||||||202611191000-0600|||F"
OBX = "OBX|{n}|NM|GLU^Glucose, fasting^L||95|mg/dL|70-99|N|||F||||||||||OBS{n}"


def message(
    n: int = 1, *, obx: int = 1, msh: str = MSH, body: list[str] | None = None
) -> list[str]:
    """One ORU^R01 message as segments: MSH, PID, ORC, OBR and `obx` OBX (or `body`)."""
    segments = (
        body
        if body is not None
        else [PID, ORC, OBR, *(OBX.format(n=f"{n}.{i}") for i in range(1, obx + 1))]
    )
    return [msh.format(n=n), *segments]


def batch_file(
    *batches: list[list[str]],
    bts: list[int | str] | None = None,
    fts: int | str | None = None,
    end: str = "\r",
) -> bytes:
    """FHS, then per batch BHS + its messages + BTS (real counts unless given), then FTS."""
    segments = ["FHS|^~\\&|LIS|LAB|BB|ACME|20261120020000"]
    for number, messages in enumerate(batches):
        segments.append("BHS|^~\\&|LIS|LAB|BB|ACME|20261120020000")
        for msg in messages:
            segments.extend(msg)
        segments.append(f"BTS|{len(messages) if bts is None else bts[number]}")
    segments.append(f"FTS|{len(batches) if fts is None else fts}")
    return "".join(s + end for s in segments).encode()


def read(data: bytes, fmt: Hl7v2FormatConfig = FMT) -> ParsedFile:
    return read_hl7v2(data, fmt, COLUMNS)


def only_row(data: bytes) -> dict[str, str]:
    parsed = read(data)
    assert parsed.frame.height == 1
    row: dict[str, str] = parsed.frame.drop(ROW_COLUMN).row(0, named=True)
    return row


def rejected(data: bytes, error: type[FileRejectedError], fmt: Hl7v2FormatConfig = FMT) -> str:
    """Read `data`, expect `error`, and check the message and its chain hold no value."""
    with pytest.raises(error) as caught:
        read(data, fmt)
    message_text = str(caught.value)
    assert SECRET not in message_text
    assert SECRET.upper() not in message_text
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None
    return message_text


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    """The strings the HL7 reader gives back: rows in message order, 'T' in date-times."""
    return hl7_row_order(frame).with_columns(
        pl.col("specimen_collected_at", "resulted_at").str.replace(" ", "T", literal=True)
    )


# -- round trip with the renderer -----------------------------------------------------------


def test_round_trip_gives_back_every_string() -> None:
    frame = generate_lab_rows(160, seed=5, file_date=FILE_DATE, canary_names=[SECRET])
    data = render_lab_hl7(frame)
    parsed = read(data)
    assert parsed.declared_count is None
    assert parsed.frame.columns == [*COLUMNS, ROW_COLUMN]
    assert parsed.frame.schema[ROW_COLUMN] == pl.UInt32
    assert parsed.frame[ROW_COLUMN].to_list() == list(range(1, 161))
    assert all(parsed.frame.schema[c] == pl.String for c in COLUMNS)
    assert parsed.frame.drop(ROW_COLUMN).null_count().sum_horizontal().item() == 0
    assert parsed.frame.drop(ROW_COLUMN).equals(canonical(frame))
    # Patients were grouped: fewer messages than rows, several OBX per message.
    assert data.count(b"\rMSH|") < 160 / 2
    assert data.count(b"\rOBX|") == 160


def test_round_trip_keeps_the_schema_order_of_columns() -> None:
    frame = generate_lab_rows(8, seed=2, file_date=FILE_DATE)
    reordered = tuple(reversed(COLUMNS))
    parsed = read_hl7v2(render_lab_hl7(frame), FMT, reordered)
    assert parsed.frame.columns == [*reordered, ROW_COLUMN]


def test_planted_bad_rows_are_quarantined_for_the_same_reasons() -> None:
    bad_rows = dict.fromkeys(BAD_ROW_REASONS, 2)
    frame = generate_lab_rows(200, seed=11, file_date=FILE_DATE, bad_rows=bad_rows)
    from_csv = LAB_RESULTS.validate(frame.with_row_index(ROW_COLUMN, offset=1), CTX)
    parsed = read(render_lab_hl7(frame))
    from_hl7 = LAB_RESULTS.validate(parsed.frame, CTX)

    def reasons(quarantined: pl.DataFrame) -> list[tuple[str, tuple[str, ...]]]:
        return sorted(
            (rid, tuple(r)) for rid, r in quarantined.select("record_id", REASONS_COLUMN).rows()
        )

    assert from_hl7.quarantined.height == expected_quarantined(bad_rows)
    assert reasons(from_hl7.quarantined) == reasons(from_csv.quarantined)
    assert from_hl7.valid.height == 200 - expected_quarantined(bad_rows)


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
@pytest.mark.parametrize("batches", [1, 3])
def test_line_ends_and_several_batches(end: str, batches: int) -> None:
    frame = generate_lab_rows(40, seed=3, file_date=FILE_DATE)
    parsed = read(render_lab_hl7(frame, batches=batches, segment_end=end))
    assert parsed.frame.drop(ROW_COLUMN).equals(canonical(frame))


def test_batch_envelope_without_file_header_is_enough() -> None:
    frame = generate_lab_rows(10, seed=3, file_date=FILE_DATE)
    parsed = read(render_lab_hl7(frame, envelope="batch"))
    assert parsed.frame.height == 10


def test_bare_messages_are_read_when_the_envelope_is_not_required() -> None:
    frame = generate_lab_rows(10, seed=3, file_date=FILE_DATE)
    data = render_lab_hl7(frame, envelope="none")
    parsed = read(data, Hl7v2FormatConfig(require_batch_envelope=False))
    assert parsed.frame.drop(ROW_COLUMN).equals(canonical(frame))
    assert "not inside a batch" in rejected(data, MalformedFileError)


def test_an_empty_batch_is_a_valid_file_with_no_rows() -> None:
    frame = generate_lab_rows(0, seed=1, file_date=FILE_DATE)
    parsed = read(render_lab_hl7(frame))
    assert parsed.frame.height == 0
    assert parsed.frame.columns == [*COLUMNS, ROW_COLUMN]
    assert parsed.frame.schema[ROW_COLUMN] == pl.UInt32


def test_delimiters_and_line_breaks_in_values_survive() -> None:
    tricky = "a|b^c&d~e\\f\ng\rh\x00i"
    frame = generate_lab_rows(4, seed=1, file_date=FILE_DATE).with_columns(
        pl.lit(tricky).alias("test_name"),
        pl.lit(f"{SECRET}, Jr.").alias("patient_last_name"),
        pl.lit("\u2028\u202e\x85é").alias("patient_first_name"),
        pl.lit("M: 1-2\nF: 3-4 ").alias("reference_range"),
    )
    parsed = read(render_lab_hl7(frame))
    assert parsed.frame.drop(ROW_COLUMN).equals(canonical(frame))


def test_latin_1_files() -> None:
    frame = generate_lab_rows(30, seed=4, file_date=FILE_DATE).with_columns(
        pl.lit("Müller-Núñez").alias("patient_last_name")
    )
    data = render_lab_hl7(frame, encoding="latin-1")
    parsed = read(data, Hl7v2FormatConfig(encoding="latin-1"))
    assert parsed.frame.drop(ROW_COLUMN).equals(canonical(frame))
    message_text = rejected(data, MalformedFileError)
    assert message_text.startswith("not valid utf-8 at byte offset ")
    assert "(segment 4)" in message_text  # FHS, BHS, MSH, then the PID with the name


def test_bom_is_dropped() -> None:
    data = batch_file([message()])
    assert read(b"\xef\xbb\xbf" + data).frame.height == 1


def test_blank_lines_between_segments_are_skipped() -> None:
    data = batch_file([message()], end="\r\n\r\n")
    assert read(data).frame.height == 1


# -- the envelope and its counts ------------------------------------------------------------


def test_bts_count_mismatch() -> None:
    data = batch_file([message(1)], [message(2), message(3)], bts=[1, 3])
    assert rejected(data, TrailerMismatchError) == "batch 2: BTS says 3 messages, file has 2"


def test_renderer_can_corrupt_the_bts_count() -> None:
    frame = generate_lab_rows(20, seed=1, file_date=FILE_DATE)
    data = render_lab_hl7(frame, batches=2, bts_counts={2: 99})
    assert rejected(data, TrailerMismatchError).startswith("batch 2: BTS says 99 messages")


def test_fts_count_mismatch() -> None:
    data = batch_file([message(1)], [message(2)], fts=3)
    assert rejected(data, TrailerMismatchError) == "FTS says 3 batches, file has 2"
    frame = generate_lab_rows(5, seed=1, file_date=FILE_DATE)
    assert "FTS says 0 batches" in rejected(
        render_lab_hl7(frame, fts_count=0), TrailerMismatchError
    )


def test_missing_envelope_is_refused() -> None:
    bare = "\r".join(message()).encode() + b"\r"
    assert "message 1 (segment 1) is not inside a batch" in rejected(bare, MalformedFileError)
    header_only = b"FHS|^~\\&|LIS\rFTS|0\r"
    assert "no batch envelope" in rejected(header_only, MalformedFileError)
    assert read(header_only, Hl7v2FormatConfig(require_batch_envelope=False)).frame.height == 0


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (["FHS|^~\\&", "BHS|^~\\&", *message()], "batch 1 has no BTS (file truncated?)"),
        (["FHS|^~\\&", "BHS|^~\\&", *message(), "BTS|1"], "the file has FHS but no FTS"),
        (["BHS|^~\\&", *message(), "BTS|1", "FTS|1"], "segment 8: FTS without FHS"),
        (["BHS|^~\\&", "BHS|^~\\&", *message(), "BTS|1"], "segment 2: BHS inside batch 1"),
        (["BHS|^~\\&", *message(), "BTS|1", "BTS|1"], "segment 8: BTS without BHS"),
        (["FHS|^~\\&", "BHS|^~\\&", *message(), "FTS|1"], "segment 8: FTS inside batch 1"),
        (["BHS|^~\\&", *message(), "BTS|1", "FHS|^~\\&"], "segment 8: FHS must be the first"),
        (["FHS|^~\\&", "BHS|^~\\&", "BTS|0", "FTS|1", PID], "segment 5: segments after FTS"),
        (["BHS|^~\\&", PID, *message(), "BTS|1"], "segment 2 (PID) is outside any message"),
        (
            ["BHS|^~\\&", *message(), "BTS|", "FTS|1"],
            "BTS-1 (segment 7): the message count is empty",
        ),
        (["BHS|^~\\&", *message(), "BTS"], "BTS-1 (segment 7): the message count is empty"),
        (["BHS|^~\\&", *message(), f"BTS|{SECRET}"], "the message count is not a whole number"),
        (["BHS|^~\\&", *message(), "BTS|" + "9" * 40], "the message count has 40 digits"),
        (["BHS|^~\\&", *message(), "BTS|\uff11"], "the message count is not a whole number"),
        (["BHS|^~\\&", *message(), "BTS#1"], "field separator differs from BHS-1"),
        (["BHS", *message(), "BTS|1"], "batch 1 (segment 1): BHS-1/BHS-2 encoding characters"),
        (["BHS|^~", *message(), "BTS|1"], "BHS-1/BHS-2 encoding characters are missing"),
        (["BHS|^^\\&", *message(), "BTS|1"], "BHS-1/BHS-2 encoding characters are missing"),
        (["BHS|^~\\&", "msh|^~\\&", "BTS|0"], "segment 2: does not start with a segment id"),
        ([f"{SECRET}|^~\\&"], "segment 1: does not start with a segment id"),
    ],
)
def test_broken_envelopes(segments: list[str], expected: str) -> None:
    data = "\r".join(segments).encode() + b"\r"
    assert expected in rejected(data, FileRejectedError)


def test_empty_files_are_refused() -> None:
    for data in (b"", b"\r\n\r\n", b"   \n\t\n", b"\xef\xbb\xbf"):
        assert rejected(data, MalformedFileError) == "file is empty: no segments"


# -- messages -------------------------------------------------------------------------------


def test_a_message_that_is_not_oru_r01_is_named() -> None:
    adt = MSH.replace("ORU^R01", "ADT^A01")
    data = batch_file([message(1), message(2, msh=adt)])
    assert rejected(data, MalformedFileError) == "message 2 (segment 8): MSH-9 is not ORU^R01"
    oru_r30 = MSH.replace("ORU^R01", "ORU^R30")
    assert "MSH-9 is not ORU^R01" in rejected(
        batch_file([message(msh=oru_r30)]), MalformedFileError
    )


def test_a_message_without_obx_is_refused() -> None:
    data = batch_file([message(1), message(2, body=[PID, ORC, OBR])])
    assert "message 2 (segment 8): no OBX segment" in rejected(data, MalformedFileError)


def test_an_obx_before_any_obr_is_refused() -> None:
    data = batch_file([message(body=[PID, OBX.format(n=1), OBR])])
    assert "message 1, segment 5: OBX before any OBR" in rejected(data, MalformedFileError)


def test_a_segment_with_another_field_separator_is_refused() -> None:
    data = batch_file([message(body=[PID, ORC, OBR, OBX.format(n=1).replace("|", "#")])])
    assert "segment 7 (OBX): field separator differs from MSH-1 of message 1" in rejected(
        data, MalformedFileError
    )


def test_broken_msh_encoding_characters() -> None:
    data = batch_file([message(msh="MSH|^~\\")])
    assert "message 1 (segment 3): MSH-1/MSH-2" in rejected(data, MalformedFileError)


def test_a_message_may_declare_its_own_delimiters() -> None:
    msh = "MSH!#$%*!LIS!LAB!BB!ACME!20261120!!ORU#R01!C1!P!2.5.1"
    body = [
        "PID!1!!ABC1234#####MR!!Doe#Ann%S%!!19800101!F",
        "OBR!1!!F9!!!!202611190830",
        "OBX!1!ST!GLU#Glucose%T%x!!a|b^c~d%E%!!!!!!F",
    ]
    row = only_row(batch_file([message(msh=msh, body=body)]))
    assert row["patient_first_name"] == "Ann#"
    assert row["test_name"] == "Glucose*x"
    assert row["result_value"] == "a|b^c~d%"
    assert row["record_id"] == "F9-GLU"


# -- field mapping --------------------------------------------------------------------------


def test_the_field_mapping() -> None:
    row = only_row(batch_file([message()]))
    assert row == {
        "record_id": "OBS1.1",
        "patient_mrn": "ABC1234",
        "patient_first_name": "Ann",
        "patient_last_name": SECRET,
        "patient_dob": "1980-01-01",
        "patient_sex": "F",
        "patient_zip": "60601",
        "ordering_provider_npi": "1234567893",
        "specimen_collected_at": "2026-11-19T08:30",
        "resulted_at": "2026-11-19T10:00-06:00",
        "local_test_code": "GLU",
        "test_name": "Glucose, fasting",
        "result_value": "95",
        "result_unit": "mg/dL",
        "reference_range": "70-99",
        "abnormal_flag": "N",
        "result_status": "F",
    }
    result = LAB_RESULTS.validate(read(batch_file([message()])).frame, CTX)
    assert result.quarantined.height == 0


def test_record_id_rules() -> None:
    no_obx21 = OBX.format(n=1).removesuffix("OBS1")
    assert only_row(batch_file([message(body=[PID, OBR, no_obx21])]))["record_id"] == "F100-GLU"
    with_sub_id = no_obx21.replace("^L||95", "^L|2|95")
    row = only_row(batch_file([message(body=[PID, OBR, with_sub_id])]))
    assert row["record_id"] == "F100-GLU-2"
    no_filler = OBR.replace("||F100|", "|||")
    parsed = read(batch_file([message(7, body=[PID, no_filler, no_obx21, no_obx21])]))
    assert parsed.frame["record_id"].to_list() == ["CTRL7-1", "CTRL7-2"]
    no_control = MSH.replace("|CTRL{n}|", "||")
    row = only_row(batch_file([message(msh=no_control, body=[PID, no_filler, no_obx21])]))
    assert row["record_id"] == ""  # nothing invented: quarantined as record_id:required


def test_provider_patient_and_time_fallbacks() -> None:
    pid = "PID|1||999^^^SSA^SS~ABC1234^^^ACME^MR||Doe^Ann~Alias^Al||19800101|F"
    obr = OBR.replace("||||||202611191000-0600|||F", "||||||||||F")
    obx = OBX.format(n=1).replace("|F||||||||||OBS", "|F||||||||20261119101500||OBS")
    row = only_row(batch_file([message(body=[pid, obr, obx])]))
    assert row["patient_mrn"] == "ABC1234"  # the MR repetition, not the first
    assert (row["patient_last_name"], row["patient_first_name"]) == ("Doe", "Ann")
    assert row["ordering_provider_npi"] == "1234567893"  # OBR-16 without an ORC
    assert row["resulted_at"] == "2026-11-19T10:15:00"  # OBX-19 without OBR-22
    assert row["patient_zip"] == ""
    legal_second = "PID|1||ABC1234||Alias^Al^^^^^A~Doe^Ann^^^^^L|||F~M"
    row = only_row(batch_file([message(body=[legal_second, obr, obx])]))
    assert (row["patient_last_name"], row["patient_first_name"]) == ("Doe", "Ann")
    assert row["patient_mrn"] == "ABC1234"  # no type code: the first repetition
    assert row["patient_sex"] == "F~M"  # not a list of alternatives: passed whole, quarantined


def test_an_orc_belongs_to_the_next_obr_only() -> None:
    obr2 = OBR.replace("1234567893", "")
    data = batch_file([message(body=[PID, ORC, OBR, OBX.format(n=1), obr2, OBX.format(n=2)])])
    npis = read(data).frame["ordering_provider_npi"].to_list()
    assert npis == ["1234567893", ""]


@pytest.mark.parametrize(
    ("hl7", "iso"),
    [
        ("202611190830", "2026-11-19T08:30"),
        ("20261119083015", "2026-11-19T08:30:15"),
        ("20261119083015.1234", "2026-11-19T08:30:15.1234"),
        ("20261119083015+0000", "2026-11-19T08:30:15Z"),
        ("202611190830-0530", "2026-11-19T08:30-05:30"),
        ("20261345990000", "2026-13-45T99:00:00"),  # converted; the schema judges it
        ("20261119", "20261119"),  # no time: passed through, quarantined as iso_datetime
        ("2026111908", "2026111908"),
        ("2026-11-19T08:30:00", "2026-11-19T08:30:00"),
        ("soon", "soon"),
    ],
)
def test_date_times(hl7: str, iso: str) -> None:
    obr = OBR.replace("202611190830", hl7)
    row = only_row(batch_file([message(body=[PID, obr, OBX.format(n=1)])]))
    assert row["specimen_collected_at"] == iso


@pytest.mark.parametrize(
    ("hl7", "iso"),
    [
        ("19800101", "1980-01-01"),
        ("198001011230", "1980-01-01"),
        ("19800230", "1980-02-30"),
        ("198001", "198001"),
        ("", ""),
        ("1980-01-01", "1980-01-01"),
    ],
)
def test_birth_dates(hl7: str, iso: str) -> None:
    pid = PID.replace("19800101", hl7)
    assert only_row(batch_file([message(body=[pid, OBR, OBX.format(n=1)])]))["patient_dob"] == iso


@pytest.mark.parametrize(
    ("value_type", "value", "expected"),
    [
        ("NM", "95", "95"),
        ("ST", "see note^x", "see note^x"),
        ("CWE", "260415000^Not detected^SCT", "Not detected"),
        ("CE", "POS", "POS"),
        ("SN", "<^0.5", "<0.5"),
        ("SN", "^1^:^40", "1:40"),
        ("NM", "95~96", "95~96"),
    ],
)
def test_result_values(value_type: str, value: str, expected: str) -> None:
    obx = OBX.format(n=1).replace("|NM|", f"|{value_type}|").replace("||95|", f"||{value}|")
    assert only_row(batch_file([message(body=[PID, OBR, obx])]))["result_value"] == expected


def test_escape_sequences() -> None:
    pid = (
        "PID|1||ABC1234^^^ACME^MR||"
        "\\F\\\\S\\\\T\\\\R\\\\E\\ \\H\\bold\\N\\ \\X0A\\\\X4142\\ \\.br\\ "
        "\\Z1\\ \\XZZ\\ \\XC3\\ end\\^Ann||19800101"
    )
    row = only_row(batch_file([message(body=[pid, OBR, OBX.format(n=1)])]))
    # Known sequences decoded, highlighting dropped, unknown or broken ones kept as they are.
    assert row["patient_last_name"] == "|^&~\\ bold \nAB \n \\Z1\\ \\XZZ\\ \\XC3\\ end\\"
    assert row["patient_first_name"] == "Ann"


def test_escaped_hex_is_decoded_in_the_file_encoding() -> None:
    pid = "PID|1||ABC1234^^^ACME^MR||M\\XFC\\ller^Ann"
    data = batch_file([message(body=[pid, OBR, OBX.format(n=1)])])
    assert read(data, Hl7v2FormatConfig(encoding="latin-1")).frame["patient_last_name"].item() == (
        "Müller"
    )
    pid = "PID|1||ABC1234^^^ACME^MR||M\\XC3BC\\ller^Ann"
    data = batch_file([message(body=[pid, OBR, OBX.format(n=1)])])
    assert read(data).frame["patient_last_name"].item() == "Müller"


def test_renderer_escape_is_undone_by_the_reader() -> None:
    value = "x\\y|z^&~\n\r\t\x7f"
    pid = f"PID|1||ABC1234^^^ACME^MR||{escape(value)}^Ann"
    row = only_row(batch_file([message(body=[pid, OBR, OBX.format(n=1)])]))
    assert row["patient_last_name"] == value


def test_trailing_whitespace_of_a_message_is_kept() -> None:
    obx = OBX.format(n=1) + "  "
    assert only_row(batch_file([message(body=[PID, OBR, obx])]))["record_id"] == "OBS1  "


# -- edges of reading every segment at once -------------------------------------------------


def test_escapes_are_decoded_per_piece_never_across_a_separator() -> None:
    def row_for(value_type: str, value: str, code: str = "GLU^Glucose^L") -> dict[str, str]:
        obx = f"OBX|1|{value_type}|{code}||{value}|||||F||||||||||OBS1"
        return only_row(batch_file([message(body=[PID, OBR, obx])]))

    # SN parts are decoded one by one: '\F' + '\1' is not the sequence '\F\'.
    assert row_for("SN", "\\F^\\1")["result_value"] == "\\F\\1"
    assert row_for("SN", "\\S\\^5")["result_value"] == "^5"
    # A whole field is decoded as written: 'F^' between two escapes is no known sequence.
    assert row_for("ST", "a\\F^\\b")["result_value"] == "a\\F^\\b"
    # Components of one field are cut before decoding, so an escaped delimiter stays data.
    row = row_for("NM", "95", code="GLU\\T\\X^Glu\\S\\cose^L")
    assert (row["local_test_code"], row["test_name"]) == ("GLU&X", "Glu^cose")
    # A coded value's text is chosen as written (.2 unless empty), then decoded.
    assert row_for("CWE", "POS^\\H\\")["result_value"] == ""
    assert row_for("CWE", "POS^")["result_value"] == "POS"


def test_many_messages_in_one_batch() -> None:
    """Each message reads its own PID, ORC and OBR; none carries into the next message."""
    messages: list[list[str]] = []
    expected: list[tuple[str, str, str]] = []  # record_id, patient_mrn, ordering_provider_npi
    for n in range(1, 251):
        body = [] if n % 5 == 0 else [f"PID|1||MRN{n}^^^ACME^MR||Doe^Ann"]
        if n % 2 == 0:
            body.append(f"ORC|RE|||||||||||NPI{n}")
        body.append("OBR|1||" + ("" if n % 7 == 0 else f"F{n}") + "|GLU")
        for k in range(1, n % 3 + 2):
            obx21 = "" if n % 7 == 0 else f"OBS{n}.{k}"
            body.append(f"OBX|{k}|NM|GLU^Glucose||9{k}||||||F||||||||||{obx21}")
            record_id = f"CTRL{n}-{k}" if n % 7 == 0 else f"OBS{n}.{k}"
            mrn = "" if n % 5 == 0 else f"MRN{n}"
            expected.append((record_id, mrn, f"NPI{n}" if n % 2 == 0 else ""))
        messages.append(message(n, body=body))
    frame = read(batch_file(messages[:100], messages[100:])).frame
    assert frame[ROW_COLUMN].to_list() == list(range(1, len(expected) + 1))
    assert frame.select("record_id", "patient_mrn", "ordering_provider_npi").rows() == expected


def test_a_pid_inside_a_message_starts_a_new_patient() -> None:
    """A second PID takes over the rows after it; the OBX count (for '<MSH-10>-<k>') runs on."""
    obx = "OBX|1|NM|GLU||95|||||F"
    body = ["PID|1||A1", ORC, "OBR|1", obx, "PID|2||B2", "OBR|2", obx]
    rows = read(batch_file([message(4, body=body)])).frame
    assert rows.select("record_id", "patient_mrn", "ordering_provider_npi").rows() == [
        ("CTRL4-1", "A1", "1234567893"),
        ("CTRL4-2", "B2", ""),
    ]
    orphan = ["PID|1||A1", "OBR|1", obx, "PID|2||B2", obx]
    assert "message 1, segment 8: OBX before any OBR" in rejected(
        batch_file([message(body=orphan)]), MalformedFileError
    )


def test_segment_ends_may_differ_within_one_file() -> None:
    segments = batch_file([message(1, obx=2), message(2)]).decode().split("\r")[:-1]
    ends = ["\r", "\r\n", "\n", "\n\r", "\r\r\n"]  # the last two leave a blank segment
    mixed = "".join(s + ends[i % len(ends)] for i, s in enumerate(segments)).encode()
    assert read(mixed).frame.equals(read(batch_file([message(1, obx=2), message(2)])).frame)
    # Numbers in messages count the non-blank segments only (two blank ones come before).
    broken = mixed.replace(b"OBX|1.2|", b"OBX#1.2|")
    assert "segment 8 (OBX): field separator differs" in rejected(broken, MalformedFileError)


def test_messages_with_swapped_delimiters_beside_standard_ones() -> None:
    """A message whose field and component characters are '^' and '|' reads like any other,
    and its '|' as data (in a standard message, the field separator) stays data."""
    swapped = [
        "MSH^|~\\&^LIS^LAB^BB^ACME^20261120^^ORU|R01^C2^P^2.5.1",
        "PID^1^^X9|||ACME|MR~Y8|||ACME|SS^^Roe|Bo",
        "OBR^1^^F9",
        "OBX^1^CWE^GLU|Glucose^^123|High a\\S\\b|L^^^^^^F",
        "OBX^2^ST^GLU^^x\\F\\y~z^^^^^^F",
    ]
    frame = read(batch_file([message(1), swapped, message(3)])).frame
    assert frame.select(
        "record_id", "patient_mrn", "patient_last_name", "test_name", "result_value"
    ).rows() == [
        ("OBS1.1", "ABC1234", SECRET, "Glucose, fasting", "95"),
        ("F9-GLU", "X9", "Roe", "Glucose", "High a|b"),
        ("F9-GLU", "X9", "Roe", "", "x^y~z"),
        ("OBS3.1", "ABC1234", SECRET, "Glucose, fasting", "95"),
    ]


# -- bytes, config, registry ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02\xff" * 50,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
        ("hello " + SECRET).encode(),
        b"\x0b" + "\r".join(message()).encode() + b"\x1c\r",  # MLLP framing
        "\r".join(message()).encode("utf-16"),
        b"%PDF-1.7\n" + SECRET.encode() + b"\n%%EOF",
    ],
)
def test_garbage_bytes_are_refused(data: bytes) -> None:
    rejected(data, MalformedFileError)


def test_a_nul_byte_is_located() -> None:
    data = batch_file([message()]).replace(b"Ann", b"A\x00n")
    offset = data.index(b"\x00")
    assert rejected(data, MalformedFileError) == f"NUL byte at byte offset {offset} (segment 4)"


def test_columns_other_than_lab_results_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lab observations only"):
        read_hl7v2(batch_file([message()]), FMT, ("id", "name"))
    with pytest.raises(ConfigError):
        read_hl7v2(batch_file([message()]), FMT, (*COLUMNS, "extra"))


def test_the_format_registry_reads_hl7v2() -> None:
    frame = generate_lab_rows(12, seed=8, file_date=FILE_DATE)
    parsed = read_plaintext(render_lab_hl7(frame), FMT, COLUMNS)
    assert parsed.frame.height == 12
    validated = parse_and_validate(render_lab_hl7(frame), FMT, LAB_RESULTS, CTX)
    assert validated.rows_read == 12 and validated.rows_declared is None
    assert validated.result.valid.height == 12
    with pytest.raises(FileRejectedError):  # the same bytes are no CSV file
        read_plaintext(render_lab_hl7(frame), FormatConfig(), COLUMNS)


BREAKAGES = {
    "bts": lambda d: d.replace(b"BTS|", b"BTS|9"),
    "fts": lambda d: d.replace(b"FTS|1", b"FTS|2"),
    "truncated": lambda d: d[: d.index(b"BTS|")],
    "adt": lambda d: d.replace(b"ORU^R01", b"ADT^A01", 1),
    "no_obx": lambda d: d.replace(b"\rOBX|", b"\rNTE|"),
    "utf8": lambda d: d.replace(SECRET.encode(), SECRET.encode() + b"\xff"),
    "nul": lambda d: d.replace(SECRET.encode(), SECRET.encode() + b"\x00"),
    "pid_outside": lambda d: d.replace(b"\rMSH|", b"\rPID|" + SECRET.encode() + b"\rMSH|", 1),
    "bad_id": lambda d: d.replace(b"\rPID|", b"\r" + SECRET.encode() + b"|"),
    "separator": lambda d: d.replace(b"\rPID|", b"\rPID#" + SECRET.encode() + b"|"),
    "count": lambda d: d.replace(b"BTS|", b"BTS|" + SECRET.encode()),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_no_value_in_any_error_message(breakage: str) -> None:
    frame = generate_lab_rows(12, seed=6, file_date=FILE_DATE, canary_names=[SECRET])
    data = BREAKAGES[breakage](render_lab_hl7(frame))
    assert SECRET.encode() in data or breakage in {"bts", "fts", "truncated", "adt", "no_obx"}
    rejected(data, FileRejectedError)
