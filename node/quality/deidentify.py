"""De-identification of the DICOM headers a training set carries, by the DICOM PS3.15 Basic Application
Level Confidentiality Profile (Table E.1-1 actions as dicom-anonymizer implements them), with the attributes
PS3.15 E.1.1 asks a de-identified object to carry."""

from __future__ import annotations

import functools

from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions
from pydicom.dataset import Dataset

PROFILE_TABLE = "dicomfields_2026c"
"""The edition of PS3.15 Table E.1-1 dicom-anonymizer applies."""
METHOD = "DICOM PS3.15 Basic Application Confidentiality Profile (dicom-anonymizer, PS3.15 2026c Table E.1-1)"
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")


def deidentify(dataset: Dataset) -> Dataset:
    """Apply the Basic Profile to ``dataset`` in place (private attributes removed) and mark it de-identified.

    UIDs are replaced consistently within the process, so one series' instances keep one new Series UID.
    """
    dataset.remove_private_tags()
    anonymize_dataset(dataset, delete_private_tags=True, base_rules_gen=functools.partial(initialize_actions, PROFILE_TABLE))
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = METHOD[:64]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    dataset.DeidentificationMethodCodeSequence = [code]
    return dataset
