"""What each validation rule a row can fail means, in words a data steward acts on."""

from __future__ import annotations

RULE_WORDS: dict[str, str] = {
    "required": "must not be empty",
    "unique": "must be unique in the file: another row carries the same value",
    "pattern": "does not have the expected shape",
    "one_of": "is not one of the allowed values",
    "iso_date": "must be a date written YYYY-MM-DD",
    "date_format": "must be a date written MM/DD/YYYY",
    "date_in_range": "must be a real date from 1900-01-01 up to the file's date",
    "not_in_future": "must be a real date from 1900-01-01 up to the file's date",
    "iso_datetime": (
        "must be a date and time written YYYY-MM-DDThh:mm (seconds and a zone such as "
        "Z or -06:00 optional)"
    ),
    "local_time_exists": (
        "names a local time that does not exist (skipped by the daylight-saving change): "
        "correct it or add the zone offset"
    ),
    "local_time_unambiguous": (
        "names a local time that happens twice (the daylight-saving fall-back hour): "
        "add the zone offset"
    ),
    "npi_luhn": "must be a 10-digit NPI whose check digit is right (NPI Luhn check)",
    "unmapped_code": (
        "is not in the feed's mapping table: correct the code, or add it to the table and release"
    ),
    "numeric_for_quantitative": (
        "must be a plain number (such as 5.4), because the mapping table marks this test "
        "as quantitative"
    ),
    "required_when_numeric": "must not be empty when the result is a number",
    "not_after_resulted_at": "must not be after the time the result was reported (resulted_at)",
    "not_before_effective_from": "must not be before the coverage start (effective_from)",
    "ten_digits": "must hold exactly 10 digits (spaces and punctuation around them are fine)",
    "plausible_email": "must look like an e-mail address: one @, no spaces, a dot in the domain",
}
"""Rule name -> sentence, for every rule of the shipped schemas (a test checks they all are)."""

COLUMN_RULE_WORDS: dict[str, str] = {
    "patient_mrn:pattern": "must be 6 to 12 capital letters or digits",
    "mrn:pattern": "must be 6 to 12 capital letters or digits",
    "patient_zip:pattern": "must be a ZIP code: 5 digits, or 5 digits, a dash and 4 digits",
    "patient_sex:one_of": "must be M, F, O or U",
    "gender:one_of": "must be male, female, other or unknown",
    "abnormal_flag:one_of": "must be empty or one of N, L, H, LL, HH, A",
    "result_status:one_of": "must be F (final), C (corrected) or P (preliminary)",
}
"""Where the rule alone says too little: 'column:rule' -> sentence."""


def rule_words(reason: str) -> str:
    """A 'column:rule' reason as a sentence about the column; unknown rules are named as such."""
    column, sep, rule = reason.partition(":")
    if not sep:
        column, rule = "", reason
    words = COLUMN_RULE_WORDS.get(reason) or RULE_WORDS.get(rule)
    if words is None:
        words = f"fails the rule {rule}"
    return f"{column} {words}" if column else words
