"""End to end with located findings: Orthanc sends the sample study, ct-lung-cysts runs in a real node, and
Orthanc gets back the SEG, an SR locating each air space, and the KOS its destination asked for."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
from sqlalchemy import select

from node.db import Delivery, DeliveryState
from sample_dicom import generate
from tests.support.sample import SAMPLE_DIR
from tests.support.node_process import NodeProcess

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def _delivered(node: NodeProcess, expected: int) -> bool:
    with node.database.session() as session:
        rows = session.scalars(select(Delivery)).all()
    return len(rows) == expected and all(r.state == DeliveryState.delivered for r in rows)


def test_located_findings_and_key_images_reach_the_pacs(pacs_and_node) -> None:  # type: ignore[no-untyped-def]
    orthanc, node = pacs_and_node(["ct-lung-cysts"], outputs=("seg", "sr", "kos"))
    paths = sorted(SAMPLE_DIR.glob("CT_*.dcm"))
    ids = orthanc.upload(paths)
    orthanc.send_to_modality("node", [orthanc.get(f"/instances/{ids[0]}/study")["ID"]])
    node.wait_for(lambda: _delivered(node, 3), timeout=150)

    study_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    received: dict[str, pydicom.Dataset] = {}
    for series in orthanc.series_of_study(study_uid):
        if series["MainDicomTags"].get("Modality") != "CT":
            (instance,) = series["Instances"]
            dataset = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
            received[dataset.Modality] = dataset
    assert set(received) == {"SEG", "SR", "KO"} and received["KO"].SOPClassUID == KOS_CLASS

    report = hd.sr.Comprehensive3DSR.from_dataset(received["SR"])
    centres = [group.roi.value[0] for group in report.content.get_planar_roi_measurement_groups()
               if group.roi.value_type.value == "SCOORD3D"]
    assert len(centres) == len(generate.EMPHYSEMA_SPHERES)
    for centre, _radius in generate.EMPHYSEMA_SPHERES:
        assert min(np.linalg.norm(np.subtract(found, centre)) for found in centres) < 1.1  # half a pixel
    outlined = {group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                for group in report.content.get_planar_roi_measurement_groups()
                if group.roi.value_type.value == "SCOORD"}
    flagged = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in received["KO"].ContentSequence
               if item.ValueType == "IMAGE"}
    assert flagged == outlined and len(flagged) >= 1
