"""`pacsnode export`: the cases that have references, as a MONAI-style training set.

Each case becomes ``imagesTr/case-NNNN.nii.gz`` (the series in HU), ``labelsTr/case-NNNN.nii.gz`` (the latest
reference, its segments numbered as the pipeline numbers its own) and ``metadata/case-NNNN.json`` (the first
image's header, de-identified by the PS3.15 Basic Profile, without pixel data). ``datalist.json`` lists them
under ``training`` the way MONAI's ``load_decathlon_datalist`` reads it. Nothing written names a patient, and
no original UID appears: cases are numbered, the headers' UIDs replaced.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from sqlalchemy import select

from node.db import Database, Instance, Job, QualityReference, QualityScore, ResultObject
from node.jobs.results import series_paths
from node.quality.deidentify import METHOD, deidentify

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""NIfTI's world space is RAS; DICOM's patient space LPS."""


@dataclass(frozen=True)
class ExportCase:
    job_id: int
    source_paths: tuple[Path, ...]
    reference_path: Path
    seg_path: Path


def cases_with_references(database: Database, pipeline: str) -> list[ExportCase]:
    """Each job of ``pipeline`` scored against a reference SEG, with its latest one; in job order."""
    with database.session() as session:
        rows = session.execute(
            select(QualityScore.job_id, Instance.path, ResultObject.path, Job.series_uid)
            .join(QualityReference, QualityReference.id == QualityScore.reference_id)
            .join(Instance, Instance.sop_instance_uid == QualityReference.sop_instance_uid)
            .join(ResultObject, (ResultObject.job_id == QualityScore.job_id) & (ResultObject.kind == "seg"))
            .join(Job, Job.id == QualityScore.job_id)
            .where(QualityScore.pipeline == pipeline, QualityScore.kind == "segment", QualityReference.state == "scored")
            .order_by(QualityScore.job_id, QualityReference.received_at)
        ).all()
        latest = {job_id: (reference, seg, series) for job_id, reference, seg, series in rows}
        return [
            ExportCase(job_id, series_paths(session, series), Path(reference), Path(seg))
            for job_id, (reference, seg, series) in sorted(latest.items())
        ]


def _nifti(array_kji: np.ndarray, affine_ijk: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(np.ascontiguousarray(array_kji.transpose(2, 1, 0)), LPS_TO_RAS @ affine_ijk)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _as_stored(hu: np.ndarray) -> np.ndarray:
    rounded = np.round(hu)
    if np.allclose(rounded, hu) and rounded.min() >= np.iinfo(np.int16).min and rounded.max() <= np.iinfo(np.int16).max:
        return rounded.astype(np.int16)
    return hu.astype(np.float32)


def export_case(case: ExportCase, name: str, out: Path, labels: dict[int, str]) -> str:
    """Write one case's image, label map and de-identified header; ``labels`` gains the segments it numbers.
    Returns the series' modality."""
    from pipelines.evaluation.reference import read_reference_seg
    from pipelines.evaluation.scoring import match_segments
    from pipelines.volume import load_series

    volume = load_series(case.source_paths)
    ours = read_reference_seg(case.seg_path, volume)
    pairs, _ = match_segments(ours, read_reference_seg(case.reference_path, volume))
    label_map = np.zeros(volume.array.shape, dtype=np.uint8)
    for segment, reference in pairs:
        label_map[reference.mask] = segment.number  # type: ignore[attr-defined]
        labels.setdefault(segment.number, segment.label)  # type: ignore[attr-defined]
    _nifti(_as_stored(volume.array), volume.affine, out / "imagesTr" / f"{name}.nii.gz")
    _nifti(label_map, volume.affine, out / "labelsTr" / f"{name}.nii.gz")
    header = pydicom.dcmread(case.source_paths[0], stop_before_pixels=True)
    modality = str(getattr(header, "Modality", "") or "unknown")
    deidentified = deidentify(header)
    (out / "metadata" / f"{name}.json").write_text(json.dumps(deidentified.to_json_dict(), indent=1))
    return modality


def export(database: Database, pipeline: str, out: Path) -> list[str]:
    """Write the training set of ``pipeline``'s cases with references into ``out``; the cases' names."""
    cases = cases_with_references(database, pipeline)
    for folder in ("imagesTr", "labelsTr", "metadata"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    labels: dict[int, str] = {}
    training, skipped, modalities = [], [], set()
    for number, case in enumerate(cases, start=1):
        name = f"case-{number:04d}"
        try:
            modalities.add(export_case(case, name, out, labels))
        except (OSError, ValueError) as exc:
            log.warning("job %s: not exported: %s", case.job_id, exc)
            skipped.append(f"{name}: {exc}")
            continue
        training.append({"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz",
                         "metadata": f"metadata/{name}.json"})
    datalist = {
        "name": f"{pipeline} references",
        "description": f"Series processed by {pipeline} with the references (corrected or reference SEGs) received for them",
        "labels": {"0": "background", **{str(number): label for number, label in sorted(labels.items())}},
        "modality": {"0": "/".join(sorted(modalities)) or "unknown"},
        "deidentification": METHOD,
        "numTraining": len(training),
        "training": training,
    }
    (out / "datalist.json").write_text(json.dumps(datalist, indent=2))
    for reason in skipped:
        log.warning("not exported: %s", reason)
    return [Path(item["image"]).name.removesuffix(".nii.gz") for item in training]
