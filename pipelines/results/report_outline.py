"""The content trees the SR and KOS writers make, as text: an example result written in memory and walked.

The conformance statement (``node.conformance``) lists these outlines, so it shows exactly the templates,
value types and codes the writers produce rather than a description that could drift from them.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipelines import codes
from pipelines.results.kos import build_key_objects
from pipelines.results.seg import build_segmentation
from pipelines.results.sr import build_report
from pipelines.results.uids import job_uid, result_uids, tracking_uid
from pipelines.settings import ResultOptions
from pipelines.types import Classification, Finding, Measurement, PipelineResult, Segment, Volume, box_of_voxels
from pipelines.volume import load_datasets

_SIZE, _SLICES = 16, 4


def example_volume() -> Volume:
    """A small axial CT in memory (no files), enough for every kind of group."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in range(_SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID, ds.InstanceNumber = "CT", "Example^Patient", "EXAMPLE", k + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.0 * k], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = [1.0, 1.0], 2.0, _SIZE, _SIZE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.zeros((_SIZE, _SIZE), np.int16).tobytes()
        datasets.append(ds)
    return load_datasets(datasets)


def example_result(volume: Volume) -> PipelineResult:
    """A segment, a segment that is a finding, a point, a circle and a box finding, a whole-volume measurement
    and a classification of each scope."""
    mask = np.zeros(volume.array.shape, bool)
    mask[1:3, 4:9, 4:9] = True
    other = np.zeros_like(mask)
    other[2:4, 10:13, 10:13] = True
    segments = [
        Segment(1, "Lung", codes.ANATOMICAL_STRUCTURE, codes.LUNG, mask),
        Segment(2, "Cyst", codes.MORPHOLOGICALLY_ALTERED_STRUCTURE, codes.CYST, other),
    ]
    return PipelineResult(
        pipeline="example",
        version="1.0.0",
        algorithm_family=codes.ARTIFICIAL_INTELLIGENCE,
        segments=segments,
        measurements=[
            Measurement(codes.VOLUME, 0.05, codes.MILLILITER, 1),
            Measurement(codes.VOLUME, 0.018, codes.MILLILITER, 2),
            Measurement(codes.LAA_950, 3.0, codes.PERCENT),
        ],
        classifications=[
            Classification(codes.PULMONARY_EMPHYSEMA, codes.ABSENT, 0.9),
            Classification(codes.PULMONARY_EMPHYSEMA, codes.ABSENT, 0.8, scope="image", slice_index=1),
            Classification(codes.PULMONARY_EMPHYSEMA, codes.ABSENT, 0.7, scope="study"),
        ],
        findings=[
            Finding(codes.CYST, "Cyst", segment_number=2, probability=0.9),
            Finding(codes.CYST, "Point", point=volume.to_patient((3, 3, 1)), probability=0.8),
            Finding(codes.CYST, "Circle", point=volume.to_patient((12, 3, 2)), diameter_mm=3.0, probability=0.6),
            Finding(codes.CYST, "Box", box=box_of_voxels(volume, (9, 2, 0), (12, 5, 2)), probability=0.7),
        ],
        parameters={"threshold": "-950 HU"},
    )


def example_documents() -> tuple[Dataset, Dataset]:
    """The SR and the KOS of the example result."""
    volume, options, key = example_volume(), ResultOptions(), "example/job"
    result = example_result(volume)
    tracking = [tracking_uid(key, s.number) for s in result.segments]
    seg_uids, sr_uids, kos_uids = (result_uids(key, kind) for kind in ("seg", "sr", "kos"))
    seg = build_segmentation(volume, result, options, series_uid=seg_uids.series_uid,
                             sop_instance_uid=seg_uids.sop_instance_uid, tracking_uids=tracking)
    report = build_report(
        volume, result, options, series_uid=sr_uids.series_uid, sop_instance_uid=sr_uids.sop_instance_uid,
        segment_tracking_uids=tracking,
        group_tracking_uids=[job_uid(key, "group", n) for n in range(len(result.classifications) + 1)],
        finding_tracking_uids=[job_uid(key, "finding", n) for n in range(len(result.findings))],
        seg=seg,
    )
    selection = build_key_objects(volume, result, options, series_uid=kos_uids.series_uid,
                                  sop_instance_uid=kos_uids.sop_instance_uid)
    assert selection is not None
    return report, selection


def _describe(item: Dataset) -> str:
    """One content item: value type, concept name (scheme value), and the kind of value it holds."""
    name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
    concept = f'"{name.CodeMeaning}" ({name.CodingSchemeDesignator} {name.CodeValue})' if name is not None else ""
    text = f"{item.get('RelationshipType', 'ROOT')} {item.ValueType} {concept}".strip()
    if "ContentTemplateSequence" in item:
        text += f" [TID {item.ContentTemplateSequence[0].TemplateIdentifier}]"
    if item.ValueType in ("SCOORD", "SCOORD3D"):
        text += f": {item.GraphicType}"
    if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
        unit = item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
        text += f", unit {unit.CodingSchemeDesignator} {unit.CodeValue}"
    if item.ValueType == "CODE":
        value = item.ConceptCodeSequence[0]
        text += f" = {value.CodingSchemeDesignator} {value.CodeValue} \"{value.CodeMeaning}\""
    return text


def outline(item: Dataset, depth: int = 0) -> list[str]:
    """The content tree under ``item`` as indented lines; a child shaped like an earlier sibling (another
    group of the same kind, another image reference) is listed once."""
    lines = ["  " * depth + "- " + _describe(item)]
    seen: set[str] = set()
    for child in item.get("ContentSequence", []):
        shape = "\n".join(outline(child))
        if shape not in seen:
            seen.add(shape)
            lines += outline(child, depth + 1)
    return lines
