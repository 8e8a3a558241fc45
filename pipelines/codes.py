"""Coded concepts used by the pipelines' outputs (SNOMED CT, DICOM DCM, UCUM).

Values and meanings are those of DICOM PS3.16 (the context groups named per code); pydicom's
``pydicom.sr.codedict.codes`` holds the same values. LAA-950 has no standard code, so it carries a private
pacsnode code (a ``99``-prefixed coding scheme, as PS3.3 8.2 allows).
"""

from __future__ import annotations

from typing import Any

from pipelines.types import MORPHOLOGICALLY_ALTERED_STRUCTURE, Code  # noqa: F401 - a CID 7150 category

# Segmentation property categories (CID 7150).
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
BODY_SUBSTANCE = Code("91720002", "SCT", "Body Substance")

# Segmentation property types.
ENTIRE_BODY = Code("38266002", "SCT", "Entire body")
BONE = Code("272673000", "SCT", "Bone")
ADIPOSE_TISSUE = Code("55603005", "SCT", "Adipose tissue")
GAS = Code("74947009", "SCT", "Gas")
LUNG = Code("39607008", "SCT", "Lung")
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
TRACHEA = Code("44567001", "SCT", "Trachea")

# Segmentation algorithm families (CID 7162).
MORPHOLOGICAL_OPERATIONS = Code("123104", "DCM", "Morphological Operations")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")

# Measurements and their units.
VOLUME = Code("118565006", "SCT", "Volume")
MEAN_ATTENUATION = Code("112181", "DCM", "Mean Attenuation Coefficient")
LAA_950 = Code("LAA950", "99PACSNODE", "Percentage of lung volume below -950 HU")
MILLILITER = Code("mL", "UCUM", "milliliter")
HOUNSFIELD_UNIT = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
PERCENT = Code("%", "UCUM", "Percent")

# Findings and qualifier values.
CYST = Code("367643001", "SCT", "Cyst")
PULMONARY_EMPHYSEMA = Code("87433001", "SCT", "Pulmonary emphysema")
ABSENT = Code("272519000", "SCT", "Absent")
MILD = Code("255604002", "SCT", "Mild")
MODERATE = Code("6736007", "SCT", "Moderate")
SEVERE = Code("24484000", "SCT", "Severe")


def code_from_config(value: Any, where: str) -> Code:
    """A Code from a config mapping ``{value, scheme, meaning}`` or a list ``[value, scheme, meaning]``."""
    if isinstance(value, Code):
        return value
    if isinstance(value, dict):
        parts = [value.get("value"), value.get("scheme") or value.get("scheme_designator"), value.get("meaning")]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = []
    if len(parts) != 3 or not all(isinstance(p, (str, int)) and str(p) for p in parts):
        raise ValueError(f"{where}: a code needs value, scheme and meaning, e.g. [\"3341006\", \"SCT\", \"Right lung\"]; got {value!r}")
    return Code(str(parts[0]), str(parts[1]), str(parts[2]))
