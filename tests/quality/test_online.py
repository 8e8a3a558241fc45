"""End to end: DCMTK sends the sample chest CT to a running `pacsnode serve`, ct-lungs runs, then a viewer
stores a corrected SEG to the node; the node recognises it as a reference, scores the job against it, and the
score shows in `pacsnode quality`, in /metrics and on the dashboard's Quality page (headless Chromium)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from node.db import Job, JobState, QualityReference, QualityRun, QualityScore, ResultObject, Series, SeriesState
from pipelines.registry import create_pipeline
from pipelines.volume import load_series
from tests.operate.webcheck import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, log_in, metric, wait_web, web_config
from tests.quality.references import sample_files, shifted, truth_lungs, write_reference_seg, write_reference_sr
from tests.quality.test_evaluate import expected_dice, expected_hd95
from tests.support.dcmtk import storescu
from tests.support.node_process import NodeProcess, free_port

pytestmark = pytest.mark.timeout(300)
TOKEN = "quality-test-token"
PACSNODE = Path(sys.executable).with_name("pacsnode")
SEND_SEG = ["-R"]  # propose only the SOP classes present: storescu's default list has no SEG


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    web_port = free_port()
    extra = {
        "queue": {"embedded_worker": True, "reconcile_seconds": 1},
        "routes": [{"name": "chest", "match": {"Modality": "CT"}, "pipelines": ["ct-lungs"]}],
        "web": {**web_config(web_port, TOKEN), "refresh_seconds": 60},
    }
    with NodeProcess(tmp_path_factory.mktemp("quality"), extra=extra, start_timeout=90) as running:
        running.web_url = f"http://127.0.0.1:{web_port}"  # type: ignore[attr-defined]
        wait_web(running, running.web_url)  # type: ignore[attr-defined]
        yield running


def _job(node: NodeProcess) -> Job | None:
    with node.database.session() as session:
        job = session.scalars(select(Job).order_by(Job.id)).first()
        return job if job is not None and job.state in (JobState.succeeded, JobState.failed) else None


def _references(node: NodeProcess) -> dict[str, QualityReference] | None:
    """The two references by their series' modality, once both are scored (or failed)."""
    with node.database.session() as session:
        found = {session.get(Series, r.series_uid).modality: r for r in session.scalars(select(QualityReference))}
        return found if len(found) == 2 and all(r.state != "pending" for r in found.values()) else None


@pytest.fixture(scope="module")
def scored(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    sent = storescu(node.port, sample_files(), calling="SCANNER")
    assert sent.returncode == 0, sent.stderr
    job = node.wait_for(lambda: _job(node), timeout=150)
    assert job.state == JobState.succeeded, job.reason
    truth = truth_lungs()
    corrected = {"Right lung": shifted(truth["Right lung"], 2, axis=2), "Left lung": truth["Left lung"]}
    path = tmp_path_factory.mktemp("viewer") / "corrected.dcm"
    write_reference_seg(corrected, path)
    # The reader also disagrees with the emphysema grade, in a structured report.
    report = path.with_name("findings.dcm")
    write_reference_sr([(hd.sr.CodedConcept("87433001", "SCT", "Pulmonary emphysema"),
                         hd.sr.CodedConcept("24484000", "SCT", "Severe"))], report)
    sent = storescu(node.port, [path, report], calling="VIEWER", extra=SEND_SEG)
    assert sent.returncode == 0, sent.stderr
    references = node.wait_for(lambda: _references(node), timeout=60)
    predicted = {s.label: s.mask for s in create_pipeline("ct-lungs").run(load_series(sample_files())).segments}
    return {"job": job, "reference": references["SEG"], "report": references["SR"], "corrected": corrected,
            "predicted": predicted}


def test_the_corrected_seg_is_scored_against_the_job(node: NodeProcess, scored: dict) -> None:
    reference, job = scored["reference"], scored["job"]
    assert reference.state == "scored", reference.reason
    assert reference.referenced_series_uid == job.series_uid and reference.calling_ae_title == "VIEWER"
    with node.database.session() as session:
        scores = {s.name: s for s in session.scalars(select(QualityScore).where(QualityScore.reference_id == reference.id))}
        seg_series = session.get(Series, reference.series_uid)
        jobs = session.scalars(select(Job)).all()
        run = session.get(QualityRun, job.id)
    assert set(scores) == {"Right lung", "Left lung"}
    right = scores["Right lung"]
    assert (right.job_id, right.pipeline, right.pipeline_version) == (job.id, "ct-lungs", "1.0.0")
    ours, theirs = scored["predicted"]["Right lung"], scored["corrected"]["Right lung"]
    assert right.dice == pytest.approx(expected_dice(ours, theirs), abs=1e-6)
    assert right.hd95_mm == pytest.approx(expected_hd95(ours, theirs, (4.0, 2.2, 2.2)), abs=1e-4)
    assert scores["Left lung"].dice > 0.999
    # The SEG was scored, not fed to a pipeline: its series is a reference and no job was made for it.
    assert seg_series.state == SeriesState.reference
    assert [j.series_uid for j in jobs] == [job.series_uid]
    assert run.pipeline_version == "1.0.0" and run.inputs["Manufacturer"] and not run.refused


def test_the_readers_report_is_scored_against_the_jobs_finding(node: NodeProcess, scored: dict) -> None:
    report = scored["report"]
    assert report.state == "scored", report.reason
    with node.database.session() as session:
        (finding,) = session.scalars(select(QualityScore).where(QualityScore.reference_id == report.id)).all()
    assert (finding.kind, finding.name, finding.job_id) == ("classification", "Pulmonary emphysema", scored["job"].id)
    assert (finding.predicted, finding.reference_value) == ("Absent", "Severe")


def test_pacsnode_quality_prints_the_score(node: NodeProcess, scored: dict) -> None:
    right = expected_dice(scored["predicted"]["Right lung"], scored["corrected"]["Right lung"])
    shown = subprocess.run(
        [str(PACSNODE), "quality", "--config", str(node.config_path), "--pipeline", "ct-lungs"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "220"},
    )
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "Right lung" in line]
    assert any(f"{right:.3f}" in line and "1.0.0" in line and "VIEWER" in line for line in lines), shown.stdout
    assert any("Absent / Severe" in line for line in shown.stdout.splitlines()), shown.stdout
    none_since = subprocess.run(
        [str(PACSNODE), "quality", "--config", str(node.config_path), "--since", "2999-01-01"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "220"},
    )
    assert none_since.returncode == 0 and f"{right:.3f}" not in none_since.stdout


def test_metrics_carry_the_rolling_scores(node: NodeProcess, scored: dict) -> None:
    url = node.web_url  # type: ignore[attr-defined]
    right = expected_dice(scored["predicted"]["Right lung"], scored["corrected"]["Right lung"])
    labels = {"pipeline": "ct-lungs", "version": "1.0.0", "segment": "Right lung"}
    assert metric(url, "pacsnode_quality_dice_mean", **labels) == pytest.approx(right, abs=1e-6)
    assert metric(url, "pacsnode_quality_scores", **labels) == 1
    assert metric(url, "pacsnode_quality_references", state="scored") == 2
    assert metric(url, "pacsnode_series", state="reference") == 2
    assert metric(url, "pacsnode_quality_agreement", pipeline="ct-lungs", finding="Pulmonary emphysema") == 0


def test_the_quality_page_shows_the_score_and_its_plot(node: NodeProcess, scored: dict) -> None:
    from playwright.sync_api import sync_playwright

    url = node.web_url  # type: ignore[attr-defined]
    right = expected_dice(scored["predicted"]["Right lung"], scored["corrected"]["Right lung"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            log_in(page, url, TOKEN)
            page.click("text=Quality")
            page.wait_for_url(f"{url}/quality")
            summary = page.locator(".quality-summary-row", has_text="Right lung").inner_text()
            assert "ct-lungs" in summary and "1.0.0" in summary and f"{right:.3f}" in summary
            assert page.locator("#quality-plots svg").count() == 2  # Dice over time, agreement of findings
            finding = page.locator(".quality-summary-row", has_text="Pulmonary emphysema").inner_text()
            assert "0.00" in finding  # the one finding scored disagrees
            assert "VIEWER" in page.inner_text("#scores")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "quality-page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    coloured = (np.abs(image[..., 0] - image[..., 2]) > 60).sum()
    assert coloured > 200  # the plotted Dice line made it onto the screen


def test_the_nodes_own_seg_sent_back_is_not_a_reference(node: NodeProcess, scored: dict) -> None:
    with node.database.session() as session:
        own = session.scalars(select(ResultObject).where(ResultObject.kind == "seg")).one()
    sent = storescu(node.port, [Path(own.path)], calling="PACS", extra=SEND_SEG)
    assert sent.returncode == 0, sent.stderr

    def settled() -> Series | None:
        with node.database.session() as session:
            series = session.get(Series, own.series_uid)
            return series if series is not None and series.state not in (SeriesState.receiving, SeriesState.complete) else None

    series = node.wait_for(settled, timeout=30)
    assert series.state != SeriesState.reference
    with node.database.session() as session:
        assert len(session.scalars(select(QualityReference)).all()) == 2


def test_export_writes_a_deidentified_monai_dataset(node: NodeProcess, scored: dict, tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    out = tmp_path / "dataset"
    done = subprocess.run([str(PACSNODE), "export", "--pipeline", "ct-lungs", "--out", str(out),
                           "--config", str(node.config_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["labels"] == {"0": "background", "1": "Right lung", "2": "Left lung"}
    assert datalist["modality"] == {"0": "CT"} and "Basic Application Confidentiality Profile" in datalist["deidentification"]
    items = load_decathlon_datalist(str(out / "datalist.json"), data_list_key="training", base_dir=str(out))
    assert len(items) == 1
    loaded = LoadImaged(keys=["image", "label"], image_only=True)(items[0])
    image, label = np.asarray(loaded["image"]), np.asarray(loaded["label"])
    volume = load_series(sample_files())
    assert image.shape == (160, 160, 72) and np.allclose(image, volume.array.transpose(2, 1, 0))
    expected = np.zeros(volume.array.shape, dtype=np.uint8)
    expected[scored["corrected"]["Right lung"]] = 1
    expected[scored["corrected"]["Left lung"]] = 2
    assert np.array_equal(label, expected.transpose(2, 1, 0))  # the corrected reference, not the AI's result
    # Nothing written names the patient or carries an original UID.
    source = pydicom.dcmread(sample_files()[0], stop_before_pixels=True)
    written = b"".join(path.read_bytes() for path in out.rglob("*") if path.is_file() and path.suffix != ".gz")
    for identifying in (str(source.PatientName), source.PatientID, source.StudyInstanceUID, source.SeriesInstanceUID,
                        source.SOPInstanceUID, source.FrameOfReferenceUID, source.PatientBirthDate):
        assert identifying and identifying.encode() not in written
    header = pydicom.Dataset.from_json(json.loads((out / "metadata" / "case-0001.json").read_text()))
    assert header.PatientIdentityRemoved == "YES" and header.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert header.Modality == "CT" and header.Manufacturer == source.Manufacturer  # what training needs is kept
