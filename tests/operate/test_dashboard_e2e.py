"""End to end: DCMTK sends the sample chest CT to a real `pacsnode serve`, the ct-lungs pipeline runs in the
embedded worker, and the node's own dashboard (in headless Chromium) and /metrics show the result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from node.db import Job, JobState, ResultObject
from tests.operate.webcheck import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, metric, wait_web, web_config
from tests.support.dcmtk import storescu
from tests.support.node_process import NodeProcess, free_port

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom" / "chest_ct"

pytestmark = pytest.mark.timeout(240)

TOKEN = "e2e-test-token"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    web_port = free_port()
    extra = {
        "queue": {"embedded_worker": True, "reconcile_seconds": 1},
        "routes": [{"name": "chest", "match": {"Modality": "CT"}, "pipelines": ["ct-lungs"]}],
        "web": web_config(web_port, TOKEN),
    }
    with NodeProcess(tmp_path_factory.mktemp("e2e"), extra=extra, start_timeout=90) as running:
        running.web_url = f"http://127.0.0.1:{web_port}"  # type: ignore[attr-defined]
        wait_web(running, running.web_url)  # type: ignore[attr-defined]
        yield running


def _finished_job(node: NodeProcess) -> Job | None:
    with node.database.session() as session:
        job = session.scalars(select(Job)).first()
        return job if job is not None and job.state in (JobState.succeeded, JobState.failed) else None


def test_a_received_series_its_job_and_preview_show_on_the_dashboard(node: NodeProcess) -> None:
    result = storescu(node.port, sorted(SAMPLE.glob("CT_*.dcm")), calling="SCANNER")
    assert result.returncode == 0, result.stderr
    job = node.wait_for(lambda: _finished_job(node), timeout=120)
    assert job.state == JobState.succeeded, job.reason
    with node.database.session() as session:
        seg = session.scalars(select(ResultObject).where(ResultObject.job_id == job.id, ResultObject.kind == "seg")).one()
    url = node.web_url  # type: ignore[attr-defined]
    assert metric(url, "pacsnode_job_duration_seconds_count", pipeline="ct-lungs", stage="infer") == 1
    assert metric(url, "pacsnode_series_completed_total") == 1
    assert metric(url, "pacsnode_instances_received_total") == 72

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/login")
            page.fill("#token", TOKEN)
            page.click("#login")
            page.wait_for_url(f"{url}/")
            row = page.locator(f"tr[data-series='{job.series_uid}']")
            assert "ct-lungs: succeeded" in row.inner_text()
            preview = page.locator(f"img[data-result='{seg.id}']")
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "dashboard-e2e.png"
            page.screenshot(path=str(shot), full_page=True)
            page.click("text=Jobs")
            assert "infer" in page.inner_text("#jobs")
        finally:
            browser.close()
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    tinted = (np.abs(image[..., 0] - image[..., 1]) > 30) | (np.abs(image[..., 1] - image[..., 2]) > 30)
    assert tinted.sum() > 2000  # the pipeline's segments, overlaid on the CT, are on screen
