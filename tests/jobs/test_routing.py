"""Routing rules: conditions on DICOM keywords (the values of the whole series) and AE titles, per-called-AE
routes, validation naming the rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from node.config import Settings
from node.db import Job, Series, SeriesState
from node.jobs.dispatch import route_complete
from node.route.rules import (RouteError, add_series_values, check_routes, instance_level_keywords, route_problems,
                              route_series)
from tests.support.node_harness import Node, base_config, queue_slice


def header(**attributes: object) -> Dataset:
    ds = Dataset()
    ds.Modality, ds.BodyPartExamined, ds.SliceThickness = "CT", "CHEST", "1.25"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = "Thorax 1.25 mm B70f"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def settings(*routes: dict) -> Settings:
    return Settings(routes=list(routes), destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1"}])


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ({"Modality": "CT"}, True),
        ({"Modality": "MR"}, False),
        ({"Modality": ["MR", "CT"]}, True),
        ({"ImageType": "AXIAL"}, True),  # one value of a multi-valued element
        ({"SeriesDescription": "~(?i)thorax.*b70"}, True),
        ({"SeriesDescription": "~^Abdomen"}, False),
        ({"SliceThickness": {"max": 1.5}}, True),
        ({"SliceThickness": {"min": 2, "max": 5}}, False),
        ({"SliceThickness": 1.25}, True),  # numbers compare as numbers
        ({"Modality": "CT", "BodyPartExamined": "HEAD"}, False),  # every condition must hold
        ({"ContrastBolusAgent": "~.*"}, False),  # absent keyword
        ({}, True),
    ],
)
def test_conditions(condition: dict, matches: bool) -> None:
    decision = route_series(settings({"name": "r", "match": condition, "pipelines": ["ct-lungs"]}).routes,
                            header(), "PACSNODE", "CT1")
    assert bool(decision.pipelines) is matches


def test_failed_conditions_are_all_named() -> None:
    decision = route_series(
        settings({"name": "lungs", "match": {"Modality": "MR", "SliceThickness": {"max": 1}},
                  "pipelines": ["ct-lungs"]}).routes,
        header(), "PACSNODE", "CT1",
    )
    assert decision.unrouted_reason() == (
        "no route matched: lungs: Modality='CT' is not 'MR'; SliceThickness='1.25' not in range [None, 1]"
    )


def test_several_routes_merge_pipelines_and_destinations() -> None:
    decision = route_series(
        settings(
            {"name": "chest", "match": {"BodyPartExamined": "CHEST"}, "pipelines": ["ct-lungs"], "destinations": ["pacs"]},
            {"name": "all-ct", "match": {"Modality": "CT"}, "pipelines": ["ct-lungs", "ct-tissue"]},
        ).routes,
        header(), "PACSNODE", "CT1",
    )
    assert decision.pipelines == {"ct-lungs": ["chest", "all-ct"], "ct-tissue": ["all-ct"]}
    assert decision.destinations == {"ct-lungs": ["pacs"], "ct-tissue": []}


def test_a_called_ae_title_has_its_own_routes() -> None:
    routes = settings(
        {"name": "lung-ae", "called_ae_title": "AI_LUNG", "pipelines": ["ct-lungs"]},
        {"name": "general", "match": {"Modality": "CT"}, "pipelines": ["ct-tissue"]},
        {"name": "from-ct2", "calling_ae_title": ["CT2", "CT3"], "pipelines": ["ct-lungs"]},
    ).routes
    assert set(route_series(routes, header(), "AI_LUNG", "CT1").pipelines) == {"ct-lungs"}
    assert set(route_series(routes, header(), "PACSNODE", "CT1").pipelines) == {"ct-tissue"}
    assert set(route_series(routes, header(), "PACSNODE", "CT3").pipelines) == {"ct-tissue", "ct-lungs"}


def test_bad_rules_are_refused_at_start_naming_the_rule() -> None:
    bad = settings(
        {"name": "typo", "match": {"Modality": "CT"}, "pipelines": ["ct-lung"]},
        {"name": "regex", "match": {"SeriesDescription": "~(unclosed"}, "pipelines": ["ct-lungs"]},
        {"name": "keyword", "match": {"BodyPart": "CHEST", "SliceThickness": {"least": 1}}, "pipelines": ["ct-lungs"]},
    )
    with pytest.raises(RouteError) as error:
        check_routes(bad)
    message = str(error.value)
    assert "routes[typo]: unknown pipeline 'ct-lung'" in message
    assert "routes[regex]: match.SeriesDescription: bad regular expression '(unclosed'" in message
    assert "routes[keyword]: match.BodyPart: not a DICOM keyword" in message
    assert "routes[keyword]: match.SliceThickness: a range takes only min and max" in message
    assert route_problems(settings({"name": "ok", "pipelines": ["ct-lungs"]}), ["ct-lungs"]) == []


def test_unknown_destination_is_refused_naming_the_rule() -> None:
    with pytest.raises(ValueError, match=r"routes\[r\]: unknown destination 'nowhere'"):
        Settings(routes=[{"name": "r", "pipelines": ["ct-lungs"], "destinations": ["nowhere"]}])


def test_route_test_command_explains_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(2):
        queue_slice("1.2.3", "1.2.3.4", k, "CT", BodyPartExamined="CHEST").save_as(
            folder / f"{k}.dcm", enforce_file_format=True)
    config = base_config(tmp_path / "storage")
    config["routes"] = [
        {"name": "chest", "match": {"BodyPartExamined": "CHEST"}, "pipelines": ["noop"]},
        {"name": "head", "match": {"BodyPartExamined": "HEAD"}, "pipelines": ["sleep"]},
    ]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-c", "from node.cli import app; app()", "route", "test", str(folder),
         "--config", str(tmp_path / "c.yaml")],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "series 1.2.3.4 (2 files)" in result.stdout
    assert "MATCH chest: matched BodyPartExamined='CHEST'" in result.stdout
    assert "no    head: BodyPartExamined='CHEST' is not 'HEAD'" in result.stdout
    assert "-> pipeline noop (routes chest)" in result.stdout


def test_reasons_never_show_patient_data() -> None:
    decision = route_series(
        settings({"name": "vip", "match": {"PatientName": "~^Smith", "PatientID": ["1", "2"]},
                  "pipelines": ["ct-lungs"]}).routes,
        header(PatientName="Doe^Jane", PatientID="12345"), "PACSNODE", "CT1",
    )
    reason = decision.unrouted_reason()
    assert "Doe" not in reason and "12345" not in reason
    assert "PatientName=(value withheld) does not match" in reason and "PatientID (value withheld)" in reason


def test_a_route_matches_the_series_as_a_whole_not_only_its_first_instance(tmp_path: Path) -> None:
    node = Node(tmp_path, {
        "node": {"storage_dir": str(tmp_path / "storage")},
        "pipelines": [{"name": "threshold", "factory": "tests.support.pipelines:ThresholdPipeline"}],
        "routes": [
            # Satisfied by different instances, whichever is stored first: the series' values are their set.
            {"name": "scout-and-contrast", "match": {"ImageType": "LOCALIZER", "ContrastBolusAgent": "~.+"},
             "pipelines": ["threshold"]},
            {"name": "thin", "match": {"SliceThickness": {"max": 1}}, "pipelines": ["threshold"]},
        ],
    })
    study, varying, uniform = generate_uid(), generate_uid(), generate_uid()
    slices = [queue_slice(study, varying, k) for k in range(4)]
    slices[1].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    slices[3].ContrastBolusAgent = "IODINE"
    slices[3].SliceThickness = 5
    plain = [queue_slice(study, uniform, k) for k in range(3)]
    node.add_study({"varying": slices, "uniform": plain})

    route_complete(node.settings, node.database, [varying, uniform])

    with node.database.session() as session:
        matched, unmatched = session.get(Series, varying), session.get(Series, uniform)
        jobs = session.scalars(select(Job).where(Job.series_uid == varying)).all()
    assert matched.state == SeriesState.routed and [job.routes for job in jobs] == [["scout-and-contrast"]]
    assert unmatched.state == SeriesState.unrouted
    assert "ImageType='ORIGINAL\\\\PRIMARY\\\\AXIAL' is not 'LOCALIZER'" in unmatched.state_reason
    assert "ContrastBolusAgent is absent" in unmatched.state_reason  # absent from every instance
    node.close()


def test_values_differing_between_instances_are_matched_as_their_set() -> None:
    first = header(SliceThickness="1.25")
    others = [header(SliceThickness="5", ImageType=["DERIVED", "SECONDARY", "MPR"]), header(SliceThickness="1.25")]
    add_series_values(first, others, ["SliceThickness", "ImageType"])
    assert list(first.SliceThickness) == [1.25, 5.0]
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL", "DERIVED", "SECONDARY", "MPR"]
    routes = settings({"name": "mpr", "match": {"ImageType": "MPR", "SliceThickness": {"min": 3}},
                       "pipelines": ["ct-lungs"]},
                      {"name": "mr", "match": {"Modality": "MR"}, "pipelines": ["ct-lungs"]}).routes
    assert instance_level_keywords(routes) == {"ImageType", "SliceThickness"}  # Modality: series level
    assert route_series(routes, first, "PACSNODE", "CT1").pipelines == {"ct-lungs": ["mpr"]}
