"""A node index holding a received study, its jobs, a SEG and deliveries, as the operate tests read it.

The SEG holds the sample phantom's ground-truth lungs (a reference segmentation written with highdicom), so
the dashboard's previews have a real SEG file and real source instances to render from.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from node.operate import audit
from node.config import Settings
from node.db import (
    Database,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    ResultObject,
    Series,
    SeriesState,
    Study,
    open_database,
    utcnow,
)

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom" / "chest_ct"
TOKEN = "operate-test-token"
WORKER = "worker-host:4242:abcd1234"
TIMINGS = {"load": 0.4, "infer": 2.1, "write": 0.3, "total": 2.9}


@dataclass
class NodeState:
    settings: Settings
    database: Database
    study_uid: str
    series_uid: str
    seg_result_id: int
    instance_count: int
    received_bytes: int


def make_settings(storage: Path, database_url: str = "", **web: object) -> Settings:
    """Settings with ``storage`` (and the index at ``database_url``, default SQLite) and the web server on an
    ephemeral loopback port."""
    return Settings(
        node={"storage_dir": storage, "database_url": database_url},
        web={"enabled": True, "host": "127.0.0.1", "port": 0, "token": TOKEN, **web},
    )


def _reference_seg(sources: list[pydicom.Dataset], labels: np.ndarray, path: Path) -> str:
    """Write a BINARY SEG of the phantom's right and left lungs; returns its SOP Instance UID."""
    algorithm = hd.AlgorithmIdentificationSequence(name="phantom-truth", version="1", family=codes.DCM.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Lung,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, label in ((1, "right lung"), (2, "left lung"))
    ]
    masks = np.stack([labels == 4, labels == 5], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=9100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pacsnode",
        manufacturer_model_name="phantom-truth",
        software_versions="1",
        device_serial_number="0",
    )
    seg.save_as(path)
    return str(seg.SOPInstanceUID)


def build_state(storage: Path, database_url: str = "", **web: object) -> NodeState:
    """Index a received sample study with one succeeded and one failed job, a SEG result and deliveries."""
    settings = make_settings(storage, database_url, **web)
    storage.mkdir(parents=True)
    database = open_database(settings.node.resolved_database_url())
    series_dir = storage / "instances" / "sample"
    series_dir.mkdir(parents=True)
    files = sorted(SAMPLE.glob("CT_*.dcm"))
    sources = []
    for file in files:
        shutil.copy(file, series_dir / file.name)
        sources.append(pydicom.dcmread(series_dir / file.name))
    first = sources[0]
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    labels = np.load(SAMPLE / "ground_truth.npz")["labels"]
    results = storage / "results"
    results.mkdir()
    seg_uid = _reference_seg(sources, labels, results / "seg.dcm")
    now = utcnow()
    sizes = [(series_dir / f.name).stat().st_size for f in files]
    with database.session() as session:
        session.add(Study(study_uid=study_uid, accession_number="ACC0001", first_received_at=now, last_received_at=now))
        session.flush()
        session.add(
            Series(
                series_uid=series_uid, study_uid=study_uid, modality="CT", state=SeriesState.routed,
                calling_ae_title="CT_SCANNER", called_ae_title="PACSNODE", calling_host="127.0.0.1",
                instance_count=len(files), first_received_at=now, last_received_at=now, completed_at=now,
            )
        )
        session.flush()
        for ds, file, size in zip(sources, files, sizes, strict=True):
            session.add(
                Instance(
                    sop_instance_uid=str(ds.SOPInstanceUID), series_uid=series_uid, sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), path=str(series_dir / file.name),
                    size_bytes=size, calling_ae_title="CT_SCANNER", called_ae_title="PACSNODE", received_at=now,
                )
            )
        good = Job(
            series_uid=series_uid, pipeline="lungs", state=JobState.succeeded, attempts=1, run_count=1,
            worker=WORKER, timings=TIMINGS, started_at=now - dt.timedelta(seconds=3), heartbeat_at=now, finished_at=now,
        )
        bad = Job(
            series_uid=series_uid, pipeline="emphysema", state=JobState.failed, attempts=3, worker=WORKER,
            reason="pipeline declined the series: slice spacing 4.0 mm above 2.5 mm", finished_at=now,
        )
        session.add_all([good, bad, Job(series_uid=series_uid, pipeline="queued-one", state=JobState.queued)])
        session.flush()
        seg = ResultObject(
            job_id=good.id, kind="seg", sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
            sop_instance_uid=seg_uid, series_uid=seg_uid, study_uid=study_uid, path=str(results / "seg.dcm"),
            size_bytes=(results / "seg.dcm").stat().st_size,
        )
        session.add(seg)
        session.flush()
        session.add_all(
            [
                Delivery(result_id=seg.id, destination="pacs", state=DeliveryState.delivered, attempts=1,
                         last_status="0x0000", delivered_at=now),
                Delivery(result_id=seg.id, destination="viewer", state=DeliveryState.failed, attempts=5,
                         last_status="rejected", error="association rejected by VIEWER: called AE title not recognised"),
            ]
        )
        seg_result_id = seg.id
    audit.instances_received(
        database, calling_ae_title="CT_SCANNER", calling_host="127.0.0.1", called_ae_title="PACSNODE",
        study_uid=study_uid, series_uid=series_uid, sop_instance_uids=[str(ds.SOPInstanceUID) for ds in sources],
        size_bytes=sum(sizes), association_id="assoc-1",
    )
    audit.results_delivered(
        database, destination="pacs", destination_ae_title="PACS", destination_host="127.0.0.1",
        study_uid=study_uid, series_uid=seg_uid, sop_instance_uids=[seg_uid],
    )
    audit.results_delivered(
        database, destination="viewer", destination_ae_title="VIEWER", destination_host="127.0.0.1",
        study_uid=study_uid, series_uid=seg_uid, sop_instance_uids=[seg_uid], outcome=audit.Outcome.serious_failure,
    )
    return NodeState(settings, database, study_uid, series_uid, seg_result_id, len(files), sum(sizes))
