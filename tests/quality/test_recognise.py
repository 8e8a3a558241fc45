"""Which received SEGs the dispatcher takes as references: foreign SEGs of processed series that pass the
configured filters; everything else is routed as before."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from node.db import Instance, QualityReference, QualityScore, Series, SeriesState, Study
from node.jobs.runner import Outcome, process_job
from node.quality import online
from node.jobs.dispatch import route_complete
from tests.quality.references import write_reference_seg, write_reference_sr
from tests.support.node_harness import Node

pytestmark = pytest.mark.timeout(60)


def _node(tmp_path: Path, **quality: object) -> Node:
    return Node(tmp_path, {
        "node": {"storage_dir": str(tmp_path / "storage")},
        "pipelines": [{"name": "threshold", "factory": "tests.support.pipelines:ThresholdPipeline"}],
        "routes": [{"name": "all-ct", "match": {"Modality": "CT"}, "pipelines": ["threshold"]}],
        "quality": quality,
    })


def _processed(node: Node) -> str:
    series_uid = node.add_series(slices=3)
    (job_id,) = route_complete(node.settings, node.database, [series_uid])
    assert process_job(node.settings, node.database, job_id) == Outcome.succeeded
    return series_uid


def _receive_seg(node: Node, source_series: str, *, calling: str, description: str = "corrected lungs") -> str:
    """Store and index a viewer's SEG of ``source_series`` (the dense square, one row less) as complete."""
    with node.database.session() as session:
        paths = [Path(p) for p in session.scalars(select(Instance.path).where(Instance.series_uid == source_series).order_by(Instance.path))]
    sources = [pydicom.dcmread(p) for p in paths]
    mask = np.stack([s.pixel_array > 1024 for s in sources])
    mask[:, 4] = False
    path = node.settings.node.storage_dir / "instances" / "viewer" / f"{source_series}.dcm"
    # Coded as plain "Tissue" by the viewer: paired with the pipeline's segment by its label.
    seg = write_reference_seg({"dense": mask}, path, sources=sources, types={}, description=description)
    with node.database.session() as session:
        session.add(Series(series_uid=seg.SeriesInstanceUID, study_uid=seg.StudyInstanceUID, modality="SEG",
                           state=SeriesState.complete, calling_ae_title=calling, instance_count=1))
        session.flush()
        session.add(Instance(sop_instance_uid=seg.SOPInstanceUID, series_uid=seg.SeriesInstanceUID,
                             sop_class_uid=seg.SOPClassUID, transfer_syntax_uid=ExplicitVRLittleEndian, path=str(path),
                             size_bytes=path.stat().st_size, calling_ae_title=calling))
    route_complete(node.settings, node.database, [str(seg.SeriesInstanceUID)])
    return str(seg.SeriesInstanceUID)


def _state(node: Node, series_uid: str) -> SeriesState:
    with node.database.session() as session:
        return session.get(Series, series_uid).state


def test_a_foreign_seg_of_a_processed_series_is_scored_not_routed(tmp_path: Path) -> None:
    node = _node(tmp_path)
    source = _processed(node)
    seg_series = _receive_seg(node, source, calling="VIEWER")
    assert _state(node, seg_series) == SeriesState.reference
    assert online.tick(node.settings, node.database) == 1
    with node.database.session() as session:
        reference = session.scalars(select(QualityReference)).one()
        score = session.scalars(select(QualityScore)).one()
    assert reference.state == "scored" and reference.referenced_series_uid == source
    assert (score.pipeline, score.pipeline_version, score.name) == ("threshold", "1.0", "dense")
    assert score.dice == pytest.approx(2 * 56 * 3 / (64 * 3 + 56 * 3))  # the 8x8 square against 7x8 on 3 slices
    assert len(node.jobs()) == 1  # no job for the SEG


@pytest.mark.parametrize("quality, calling, description", [
    ({"reference_calling_ae_titles": ["OHIF"]}, "PACS", "corrected lungs"),
    ({"reference_series_description": "(?i)^corrected"}, "VIEWER", "AI lungs"),
])
def test_filters_keep_other_segs_out(tmp_path: Path, quality: dict, calling: str, description: str) -> None:
    node = _node(tmp_path, **quality)
    source = _processed(node)
    seg_series = _receive_seg(node, source, calling=calling, description=description)
    assert _state(node, seg_series) == SeriesState.unrouted  # routed like any series: no route takes a SEG
    with node.database.session() as session:
        assert session.scalars(select(QualityReference)).all() == []


def test_a_seg_of_a_series_the_node_never_processed_is_no_reference(tmp_path: Path) -> None:
    node = _node(tmp_path)
    other = node.add_series(slices=3, complete=False)  # received, never routed: no job
    seg_series = _receive_seg(node, other, calling="VIEWER")
    assert _state(node, seg_series) == SeriesState.unrouted
    with node.database.session() as session:
        assert session.get(Study, session.get(Series, other).study_uid) is not None
        assert session.scalars(select(QualityReference)).all() == []


def test_a_report_naming_no_finding_of_the_jobs_is_routed_as_before(tmp_path: Path) -> None:
    node = _node(tmp_path)
    source = _processed(node)  # the threshold pipeline reports no finding
    with node.database.session() as session:
        paths = [Path(p) for p in session.scalars(select(Instance.path).where(Instance.series_uid == source))]
    report_path = node.settings.node.storage_dir / "instances" / "reader" / "report.dcm"
    report_path.parent.mkdir(parents=True)
    report = write_reference_sr([(hd.sr.CodedConcept("87433001", "SCT", "Pulmonary emphysema"),
                                  hd.sr.CodedConcept("24484000", "SCT", "Severe"))], report_path,
                                sources=[pydicom.dcmread(p, stop_before_pixels=True) for p in paths])
    with node.database.session() as session:
        session.add(Series(series_uid=report.SeriesInstanceUID, study_uid=report.StudyInstanceUID, modality="SR",
                           state=SeriesState.complete, calling_ae_title="VIEWER", instance_count=1))
        session.flush()
        session.add(Instance(sop_instance_uid=report.SOPInstanceUID, series_uid=report.SeriesInstanceUID,
                             sop_class_uid=report.SOPClassUID, transfer_syntax_uid=ExplicitVRLittleEndian,
                             path=str(report_path), size_bytes=report_path.stat().st_size, calling_ae_title="VIEWER"))
    route_complete(node.settings, node.database, [str(report.SeriesInstanceUID)])
    assert _state(node, str(report.SeriesInstanceUID)) == SeriesState.unrouted
