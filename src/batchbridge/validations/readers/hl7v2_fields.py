"""Raw pieces of HL7 v2 fields, for every segment of a kind at once (Polars expressions).

Part of the hl7v2 reader (its module docstring says which piece feeds which column).
Segments arrive with the standard delimiters ('|', '^', '~'; see hl7v2_values.to_standard)
and their text split at '|' in the list column PARTS. The pieces are raw: escape
sequences are decoded afterwards (hl7v2_values.unescape_columns), because some choices
are made on raw text (PID-3.5 'MR', PID-5.7 'L', OBX-5.2 before .1) and some parts are
decoded one by one (the components of an SN value).

These reproduce the python-hl7 reading the reader was first written with: field n is item
n of the split (for MSH, item n - 1: MSH-1 is the separator itself), absent when the
segment is shorter; a field's repetitions are its text split at '~', a repetition's
components its text split at '^', each kept raw (subcomponents and all).
"""

from __future__ import annotations

import polars as pl

PARTS = "parts"
"""List column: a segment's text split at the field separator."""

_COMPONENT = "^"
_REPETITION = "~"
_CODED_TYPES = ("CE", "CWE", "CNE", "CF")


def field(number: int, *, msh: bool = False) -> pl.Expr:
    """Field `number`, raw; null when the segment is shorter."""
    return pl.col(PARTS).list.get(number - 1 if msh else number, null_on_oob=True)


def component(value: pl.Expr, number: int) -> pl.Expr:
    """Component `number` (1-based) of a repetition, raw; '' when it has fewer or is absent."""
    return value.str.split(_COMPONENT).list.get(number - 1, null_on_oob=True).fill_null("")


def first_repetition(value: pl.Expr) -> pl.Expr:
    """The first repetition of a field (null when the field is absent)."""
    return value.str.split(_REPETITION).list.first()


def whole(value: pl.Expr) -> pl.Expr:
    """The whole field, repetitions and components included; '' when absent."""
    return value.fill_null("")


def value_of(value: pl.Expr, number: int = 1) -> pl.Expr:
    """Component `number` of a field, or the whole field when it repeats; '' when absent."""
    repeats = value.str.contains(_REPETITION, literal=True)
    return pl.when(repeats).then(value).otherwise(component(value, number)).fill_null("")


def chosen(value: pl.Expr, number: int, code: str) -> pl.Expr:
    """The first repetition whose component `number` is `code`, else the first one."""
    repetitions = value.str.split(_REPETITION)
    hits = repetitions.list.eval(
        pl.element()
        .str.split(_COMPONENT)
        .list.get(number - 1, null_on_oob=True)
        .eq(code)
        .fill_null(False)
    )
    # arg_max gives the first True, and 0 (the first repetition) when there is none.
    return repetitions.list.get(hits.list.arg_max())


# -- the pieces each segment gives (names are those the rows are assembled from) --------------


def msh_pieces() -> list[pl.Expr]:
    """MSH-9.1 and MSH-9.2 (checked raw), MSH-10 (the message control id)."""
    message_type = first_repetition(field(9, msh=True))
    return [
        component(message_type, 1).alias("type_1"),
        component(message_type, 2).alias("type_2"),
        value_of(field(10, msh=True)).alias("control_id"),
    ]


def pid_pieces() -> list[pl.Expr]:
    """Identifier (the MR repetition of PID-3), legal name (PID-5), birth date, sex, zip."""
    name = chosen(field(5), 7, "L")
    return [
        component(chosen(field(3), 5, "MR"), 1).alias("patient_mrn"),
        component(name, 1).alias("patient_last_name"),
        component(name, 2).alias("patient_first_name"),
        value_of(field(7)).alias("patient_dob"),
        whole(field(8)).alias("patient_sex"),
        component(first_repetition(field(11)), 5).alias("patient_zip"),
    ]


def orc_pieces() -> list[pl.Expr]:
    """ORC-12.1 (ordering provider) of the first repetition."""
    return [component(first_repetition(field(12)), 1).alias("orc_provider")]


def obr_pieces() -> list[pl.Expr]:
    """Filler order number, collection time, OBR-16.1 provider, results time."""
    return [
        value_of(field(3)).alias("filler"),
        value_of(field(7)).alias("specimen_collected_at"),
        component(first_repetition(field(16)), 1).alias("obr_provider"),
        value_of(field(22)).alias("obr_resulted_at"),
    ]


OBX_DECODED = (
    "value_type",
    "local_test_code",
    "test_name",
    "sub_id",
    "value_whole",
    "value_coded",
    "value_sn_1",
    "value_sn_2",
    "value_sn_3",
    "value_sn_4",
    "result_unit",
    "reference_range",
    "abnormal_flag",
    "result_status",
    "obx_resulted_at",
    "observation_id",
)
"""The OBX pieces that are decoded (every one but `value_single`)."""


def obx_pieces() -> list[pl.Expr]:
    """Everything a row takes from its OBX, OBX-5 in the forms each value type needs."""
    value = field(5)
    return [
        value_of(field(2)).alias("value_type"),
        value_of(field(3)).alias("local_test_code"),
        value_of(field(3), 2).alias("test_name"),
        whole(field(4)).alias("sub_id"),
        # OBX-5 is read by its parts only when it is there and does not repeat.
        (value.is_not_null() & ~value.str.contains(_REPETITION, literal=True))
        .fill_null(False)
        .alias("value_single"),
        whole(value).alias("value_whole"),
        # Coded: the text (.2) unless it is empty as written, then the code (.1).
        pl.when(component(value, 2) != "")
        .then(component(value, 2))
        .otherwise(component(value, 1))
        .alias("value_coded"),
        *(component(value, n).alias(f"value_sn_{n}") for n in range(1, 5)),
        value_of(field(6)).alias("result_unit"),
        whole(field(7)).alias("reference_range"),
        whole(field(8)).alias("abnormal_flag"),
        whole(field(11)).alias("result_status"),
        value_of(field(19)).alias("obx_resulted_at"),
        value_of(field(21)).alias("observation_id"),
    ]


def result_value() -> pl.Expr:
    """result_value from the decoded OBX pieces: coded text, SN parts joined, or whole."""
    value_type = pl.col("value_type")
    sn_parts = [pl.col(f"value_sn_{n}") for n in range(1, 5)]
    return (
        pl.when(~pl.col("value_single"))
        .then(pl.col("value_whole"))
        .when(value_type.is_in(_CODED_TYPES))
        .then(pl.col("value_coded"))
        .when(value_type == "SN")
        .then(pl.concat_str(sn_parts))
        .otherwise(pl.col("value_whole"))
        .alias("result_value")
    )
