"""The synthetic lab's catalogue: its orderable tests, with LOINC codes, and patient names.

Made-up data for the demo (and the tests that read its files); no real patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class LabTest:
    """One orderable test of the synthetic lab, with how to draw plausible results."""

    code: str
    loinc_code: str
    loinc_display: str
    test_name: str
    unit: str = ""
    mean: float = 0.0
    sd: float = 0.0
    decimals: int = 0
    low: float | None = None
    high: float | None = None
    reference_range: str = ""
    values: tuple[str, ...] = ()  # qualitative results; the first is the normal one

    @property
    def quantitative(self) -> bool:
        return not self.values


# Partner test names deliberately include commas and quotes, and one reference range
# spans two lines, so rendered files exercise RFC 4180 quoting.
LAB_TESTS: tuple[LabTest, ...] = (
    LabTest("GLU", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "Glucose, fasting",
            "mg/dL", 95, 18, 0, 70, 99, "70-99"),
    LabTest("HGB", "718-7", "Hemoglobin [Mass/volume] in Blood", "Hemoglobin", "g/dL",
            14.2, 1.6, 1, 12.0, 17.5, "M: 13.5-17.5\nF: 12.0-15.5"),
    LabTest("K", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "Potassium",
            "mmol/L", 4.2, 0.4, 1, 3.5, 5.1, "3.5-5.1"),
    LabTest("NA", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "Sodium", "mmol/L",
            140, 3, 0, 136, 145, "136-145"),
    LabTest("CL", "2075-0", "Chloride [Moles/volume] in Serum or Plasma", "Chloride",
            "mmol/L", 102, 3, 0, 98, 107, "98-107"),
    LabTest("CO2", "2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma",
            "Carbon dioxide, total", "mmol/L", 25, 2.5, 0, 22, 29, "22-29"),
    LabTest("BUN", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma",
            "Urea nitrogen (BUN)", "mg/dL", 14, 4, 0, 7, 20, "7-20"),
    LabTest("CREAT", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinine",
            "mg/dL", 0.95, 0.2, 2, 0.6, 1.3, "0.60-1.30"),
    LabTest("CA", "17861-6", "Calcium [Mass/volume] in Serum or Plasma", "Calcium", "mg/dL",
            9.4, 0.4, 1, 8.6, 10.3, "8.6-10.3"),
    LabTest("HBA1C", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood",
            'Hemoglobin A1c "HbA1c"', "%", 5.6, 0.7, 1, 4.0, 5.6, "4.0-5.6"),
    LabTest("TSH", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma",
            "TSH, 3rd generation", "uIU/mL", 2.1, 0.9, 2, 0.4, 4.0, "0.40-4.00"),
    LabTest("WBC", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "WBC count",
            "10*3/uL", 7.5, 1.8, 1, 4.5, 11.0, "4.5-11.0"),
    LabTest("RBC", "789-8", "Erythrocytes [#/volume] in Blood by Automated count",
            "RBC count", "10*6/uL", 4.8, 0.5, 2, 4.2, 5.9, "4.20-5.90"),
    LabTest("HCT", "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count",
            "Hematocrit", "%", 42, 4, 1, 38, 50, "38.0-50.0"),
    LabTest("PLT", "777-3", "Platelets [#/volume] in Blood by Automated count",
            "Platelet count", "10*3/uL", 260, 60, 0, 150, 400, "150-400"),
    LabTest("CHOL", "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma",
            "Cholesterol, total", "mg/dL", 190, 35, 0, None, 200, "<200"),
    LabTest("LDL", "13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
            "LDL cholesterol, calculated", "mg/dL", 110, 30, 0, None, 100, "<100"),
    LabTest("HDL", "2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
            "HDL cholesterol", "mg/dL", 52, 12, 0, 40, None, ">40"),
    LabTest("TRIG", "2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "Triglycerides",
            "mg/dL", 140, 50, 0, None, 150, "<150"),
    LabTest("ALT", "1742-6",
            "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "ALT (SGPT)", "U/L", 28, 10, 0, 7, 56, "7-56"),
    LabTest("AST", "1920-8",
            "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "AST (SGOT)", "U/L", 24, 8, 0, 10, 40, "10-40"),
    LabTest("ALKP", "6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
            "Alkaline phosphatase", "U/L", 85, 25, 0, 44, 147, "44-147"),
    LabTest("TBIL", "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma",
            "Bilirubin, total", "mg/dL", 0.7, 0.3, 1, 0.1, 1.2, "0.1-1.2"),
    LabTest("ALB", "1751-7", "Albumin [Mass/volume] in Serum or Plasma", "Albumin", "g/dL",
            4.2, 0.4, 1, 3.5, 5.0, "3.5-5.0"),
    LabTest("PSA", "2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma",
            "PSA, total", "ng/mL", 1.8, 1.2, 2, None, 4.0, "<4.00"),
    LabTest("VITD", "62292-8",
            "25-Hydroxyvitamin D2+25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma",
            "Vitamin D, 25-OH", "ng/mL", 34, 10, 0, 30, 100, "30-100"),
    LabTest("FERR", "2276-4", "Ferritin [Mass/volume] in Serum or Plasma", "Ferritin",
            "ng/mL", 120, 60, 0, 24, 336, "24-336"),
    LabTest("INR", "6301-6", "INR in Platelet poor plasma by Coagulation assay", "INR",
            "{INR}", 1.0, 0.15, 1, 0.8, 1.2, "0.8-1.2"),
    LabTest("UA-COLOR", "5778-6", "Color of Urine", "Urine color", reference_range="Yellow",
            values=("Yellow", "Straw", "Amber", "Red")),
    LabTest("UA-CLARITY", "5767-9", "Appearance of Urine", "Urine appearance",
            reference_range="Clear", values=("Clear", "Slightly cloudy", "Cloudy")),
    LabTest("COVID-PCR", "94500-6",
            "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory specimen by NAA with probe "
            "detection", 'SARS-CoV-2 RNA, "COVID-19" PCR', reference_range="Not detected",
            values=("Not detected", "Detected")),
    LabTest("FLU-A", "80382-5",
            "Influenza virus A Ag [Presence] in Upper respiratory specimen by Rapid immunoassay",
            "Influenza A antigen", reference_range="Negative", values=("Negative", "Positive")),
    LabTest("STREP-A", "78012-2",
            "Streptococcus pyogenes Ag [Presence] in Throat by Rapid immunoassay",
            "Strep A, rapid", reference_range="Negative", values=("Negative", "Positive")),
    LabTest("HCG-UR", "2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine",
            "hCG, urine, qualitative", reference_range="Negative",
            values=("Negative", "Positive")),
    LabTest("ABORH", "882-1", "ABO and Rh group [Type] in Blood", "ABO/Rh type",
            values=("O Pos", "A Pos", "B Pos", "AB Pos", "O Neg", "A Neg")),
)  # fmt: skip

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
    "Sarah", "Carlos", "Karen", "Wei", "Nancy", "Daniel", "Lisa", "Matthew", "Betty",
    "Anthony", "Margaret", "Mark", "Sandra", "José", "Ashley", "Steven", "Kimberly", "Paul",
    "Emily", "Andrew", "Donna", "Joshua", "Michelle", "Kenji", "Aaliyah", "Siobhán", "Zoë",
    'Robert "Bobby"', "Mary-Kate", "Nguyen", "Fatima", "Olusegun", "Priya",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
    "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "O'Brien", "Smith-Jones",
    "Van der Berg", "Nguyen", "Kowalski", "Müller", "Núñez", "Okafor", "Patel", "Kim",
    "Smith, Jr.", "De La Cruz", "MacDonald", "Schäfer", "Cohen", "Rossi", "Yamamoto",
    "Ivanova", "Dubois", "Haddad",
)  # fmt: skip


def mapping_frame() -> pl.DataFrame:
    """The synthetic lab's LOINC mapping (the content of acme_lab_loinc.csv), all strings."""
    return pl.DataFrame(
        {
            "local_test_code": [t.code for t in LAB_TESTS],
            "loinc_code": [t.loinc_code for t in LAB_TESTS],
            "loinc_display": [t.loinc_display for t in LAB_TESTS],
            "quantitative": ["true" if t.quantitative else "false" for t in LAB_TESTS],
        }
    )
