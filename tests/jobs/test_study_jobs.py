"""Study-level routes: four MR series of one study make one job with four channels, or a recorded reason."""

from __future__ import annotations

import datetime as dt

import highdicom as hd
from sqlalchemy import update

from node.db import JobState, Series, SeriesState
from node.jobs.dispatch import tick
from node.jobs.runner import Outcome, process_job
from tests.support.node_harness import base_config
from tests.pipelines import zoo_networks
from tests.support.mr_study import INPUTS, Geometry, mr_study

def brain_node(make_node, tmp_path, **node):
    config = base_config(tmp_path / "storage")
    bundle_dir = zoo_networks.brats(tmp_path / "brats_mri_segmentation")
    config["node"].update(node)
    config["pipelines"] = [{"name": "brats", "bundle_dir": str(bundle_dir), "modalities": ["MR"],
                            "labels": zoo_networks.BRATS_LABELS}]
    config["routes"] = [{"name": "brain-tumour", "match": {"Modality": "MR"}, "inputs": INPUTS, "reference": "t1",
                         "pipelines": ["brats"]}]
    return make_node(config)


def test_four_series_make_one_job_with_four_channels_in_the_model_order(make_node, tmp_path):
    node = brain_node(make_node, tmp_path)
    study = mr_study({"FLAIR": Geometry(shape=(14, 30, 40), spacing=(2.6, 3.1, 5.0))})
    uids = node.add_study(study)
    tick(node.settings, node.database)
    [job] = node.jobs()
    assert job.state == JobState.queued and job.series_uid == uids["T1"]
    assert job.inputs == {"reference": "t1", "series": {"t1": uids["T1"], "t1c": uids["T1c"], "t2": uids["T2"],
                                                        "flair": uids["FLAIR"]}}
    assert {node.series(uid).state for uid in uids.values()} == {SeriesState.routed}
    assert "brain-tumour (t1)" in node.series(uids["T1"]).state_reason

    assert process_job(node.settings, node.database, job.id) == Outcome.succeeded
    [done] = node.jobs()
    assert done.state == JobState.succeeded
    seg_path = next((node.settings.node.storage_dir / "results" / str(job.id)).glob("*seg*.dcm"))
    seg = hd.seg.segread(seg_path)
    assert {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence} == set(uids.values())
    labels = {item.SegmentLabel for item in seg.SegmentSequence}
    assert labels == {"Necrotic tumor core", "Peritumoral edema", "Enhancing tumor"}  # T1c, T1 and T2 in place


def test_a_missing_input_waits_then_fails_naming_it_and_a_late_series_completes_the_job(make_node, tmp_path):
    node = brain_node(make_node, tmp_path, study_quiet_seconds=60)
    study = mr_study()
    flair = study.pop("FLAIR")
    uids = node.add_study(study)
    tick(node.settings, node.database)
    [job] = node.jobs()
    assert job.state == JobState.waiting and job.inputs["series"] == {"t1": uids["T1"], "t1c": uids["T1c"],
                                                                      "t2": uids["T2"]}
    assert "input flair: no series of the study meets SeriesDescription='~(?i)flair'" in job.reason

    with node.database.session() as session:  # the study has been quiet for longer than study_quiet_seconds
        session.execute(update(Series).values(last_received_at=Series.last_received_at - dt.timedelta(minutes=5)))
    tick(node.settings, node.database)
    [failed] = node.jobs()
    assert failed.state == JobState.failed
    assert failed.reason.startswith("the study has been complete for 60 s without every input: input flair: no series")

    flair_uid = node.add_study({"FLAIR": flair})["FLAIR"]
    tick(node.settings, node.database)
    [queued] = node.jobs()
    assert queued.id == job.id and queued.state == JobState.queued and queued.inputs["series"]["flair"] == flair_uid
