"""Which series of a study are a study-level route's inputs."""

from __future__ import annotations

from node.config import RouteConfig
from node.route.study import StudySeries, decide_study, study_inputs
from tests.support.mr_study import INPUTS, mr_study

ROUTE = RouteConfig(name="brain", match={"Modality": "MR"}, inputs=INPUTS, reference="t1", pipelines=["brats"])


def series_of(study) -> list[StudySeries]:
    return [StudySeries(datasets[0].SeriesInstanceUID, datasets[0]) for datasets in study.values()]


def test_each_input_takes_its_series_and_the_latest_of_repeats():
    study = mr_study()
    repeat = [ds.copy() for ds in study["T2"]]
    for ds in repeat:
        ds.SeriesInstanceUID, ds.SeriesNumber = "1.2.826.0.1.3680043.8.498.2", 9
    decision = decide_study(ROUTE, series_of(study) + [StudySeries(repeat[0].SeriesInstanceUID, repeat[0])])
    assert decision.complete and decision.anchor == study["T1"][0].SeriesInstanceUID
    assert decision.found["t2"] == "1.2.826.0.1.3680043.8.498.2"  # SeriesNumber 9 is the later acquisition


def test_inputs_that_cannot_be_told_apart_and_unrelated_studies():
    loose = RouteConfig(name="loose", inputs={"a": {"Modality": "MR"}, "b": {"Modality": "MR"}}, pipelines=["x"])
    decision = decide_study(loose, series_of({"T1": mr_study()["T1"]}))
    assert not decision.complete and "also input a" in decision.missing["b"]
    ct_only = RouteConfig(name="ct", match={"Modality": "CT"}, inputs=INPUTS, pipelines=["brats"])
    assert decide_study(ct_only, series_of(mr_study())) is None
    assert study_inputs([ROUTE], series_of(mr_study())[3]) == ["brain (flair)"]
