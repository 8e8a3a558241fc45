"""SNOMED CT codes for the names models give their output channels ("spleen", "kidney_right", "Left-Putamen").

A name is looked up, after lower-casing and turning separators into spaces, among the meanings of DICOM's own
segmentation property types (PS3.16 CID 7192 anatomical structures, CID 7191 tissues, CID 7194
morphologically abnormal structures, CID 7197 body substances, from pydicom's copy of PS3.16), then in
``data/anatomy_names.csv``, the names models use for those concepts and TotalSegmentator's published codes
for its classes (the file names its sources). A "left" or "right" in the name becomes the type's laterality
modifier (CID 244) unless the concept itself is lateral ("Left atrium"); a lesion word at its end ("pancreatic
tumor") codes the lesion. A name found nowhere has no code: :func:`lookup` says so and :func:`suggestions`
offers the nearest known names, for the pipeline's ``labels`` setting.
"""

from __future__ import annotations

import csv
import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom.sr.codedict import Collection

from pipelines import codes
from pipelines.types import Code

TABLE_PATH = Path(__file__).resolve().parent / "data" / "anatomy_names.csv"

CATEGORIES = {
    "anatomical": codes.ANATOMICAL_STRUCTURE,
    "tissue": codes.TISSUE,
    "abnormal": codes.MORPHOLOGICALLY_ALTERED_STRUCTURE,
    "substance": codes.BODY_SUBSTANCE,
}
"""Segmentation property categories (CID 7150) by the word the table uses."""

DICOM_GROUPS = {"CID7192": "anatomical", "CID7191": "tissue", "CID7194": "abnormal", "CID7197": "substance"}
"""DICOM's segmentation property type groups and the category each belongs to (CID 7150 pairs them)."""

LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
SIDES = {"left": LEFT, "right": RIGHT}
LESION_WORDS = frozenset({"tumor", "tumour", "neoplasm", "lesion", "cyst", "nodule", "mass", "edema", "necrosis",
                          "hemorrhage"})
"""A name ending in one of these ("pancreatic tumor") is coded as that lesion."""
BACKGROUND_NAMES = frozenset({"background", "bg", "other", "none"})


@dataclass(frozen=True)
class AnatomyCode:
    """The codes of one segment: category (CID 7150), type, and the type's laterality where the name has one."""

    category: Code
    type: Code
    modifier: Code | None = None


def normalise(name: str) -> str:
    """Lower case, every run of other characters than letters and digits one space: "Left-Kidney" -> "left kidney"."""
    return " ".join(re.split(r"[^a-z0-9]+", str(name).lower())).strip()


def is_background(name: str) -> bool:
    return normalise(name) in BACKGROUND_NAMES


@functools.cache
def table() -> dict[str, tuple[Code, Code]]:
    """Every known normalised name -> (category, type): DICOM's meanings, then the shipped table's names."""
    known: dict[str, tuple[Code, Code]] = {}
    for cid, category in DICOM_GROUPS.items():
        for concept in Collection(cid).concepts.values():
            code = Code(str(concept.value), str(concept.scheme_designator), str(concept.meaning))
            known.setdefault(normalise(concept.meaning), (CATEGORIES[category], code))
    for row in table_rows():
        known.setdefault(row["name"], (CATEGORIES[row["category"]], Code(row["code"], "SCT", row["meaning"])))
    return known


def table_rows() -> list[dict[str, str]]:
    """The rows of the shipped table (comment lines left out)."""
    with TABLE_PATH.open(newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def lookup(name: str) -> AnatomyCode | None:
    """The codes for a channel name, or None when neither DICOM nor the table knows it."""
    known = table()
    key = normalise(name)
    if key in known:
        return AnatomyCode(*known[key])
    words = key.split()
    sides = [word for word in words if word in SIDES]
    if len(sides) == 1:
        rest = " ".join(word for word in words if word not in SIDES)
        if rest in known:
            category, kind = known[rest]
            lateral = sides[0] in normalise(kind.meaning).split()
            return AnatomyCode(category, kind, None if lateral else SIDES[sides[0]])
    if len(words) > 1 and words[-1] in LESION_WORDS and words[-1] in known:
        return AnatomyCode(*known[words[-1]])
    return None


def suggestions(name: str, count: int = 3) -> list[str]:
    """The known names nearest to ``name`` (laterality left out), to help write a ``labels`` entry."""
    words = [word for word in normalise(name).split() if word not in SIDES]
    return difflib.get_close_matches(" ".join(words), list(table()), n=count, cutoff=0.75)
