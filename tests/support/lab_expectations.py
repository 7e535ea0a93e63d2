"""What the synthetic lab's planted bad rows must cause: the quarantine reasons per kind."""

from __future__ import annotations

from batchbridge.demo.bad_rows import BAD_ROW_KINDS

BAD_ROW_REASONS: dict[str, tuple[str, ...]] = {
    "bad_npi": ("ordering_provider_npi:npi_luhn",),
    "bad_dob": ("patient_dob:date_in_range",),
    "invalid_dob": ("patient_dob:iso_date",),
    "missing_dob": ("patient_dob:required",),
    "unmapped_code": ("local_test_code:unmapped_code",),
    "missing_last_name": ("patient_last_name:required",),
    "bad_sex": ("patient_sex:one_of",),
    "bad_mrn": ("patient_mrn:pattern",),
    "bad_zip": ("patient_zip:pattern",),
    "duplicate_id": ("record_id:unique",),
    "collected_after_resulted": ("specimen_collected_at:not_after_resulted_at",),
    "bad_collected_at": ("specimen_collected_at:iso_datetime",),
    "non_numeric_value": ("result_value:numeric_for_quantitative",),
    "missing_unit": ("result_unit:required_when_numeric",),
    "bad_status": ("result_status:one_of",),
}
"""Every kind `generate_lab_rows(bad_rows=…)` can plant, with the reasons it must cause."""

# The tests iterate over these kinds: a kind the generator gained without an expected
# reason here would go untested, so a mismatch stops the session at import.
if set(BAD_ROW_REASONS) != set(BAD_ROW_KINDS):
    raise RuntimeError("BAD_ROW_REASONS must list exactly the kinds of BAD_ROW_KINDS")
