"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from node.db import Series, SeriesState, Study, utcnow
from tests.support.node_state import TOKEN, WORKER, NodeState
from tests.operate.webcheck import ARTIFACTS


pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def page(browser, web):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=web.url, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto("/")
    assert page.url.endswith("/login")  # not logged in: the login page
    page.fill("#token", TOKEN)
    page.click("#login")
    page.wait_for_url(f"{web.url}/")
    yield page
    context.close()


def test_overview_shows_the_study_and_a_preview(page, node_state: NodeState) -> None:  # type: ignore[no-untyped-def]
    row = page.locator(f"tr[data-series='{node_state.series_uid}']")
    assert node_state.study_uid in row.inner_text()
    assert "routed" in row.inner_text() and "ACC0001" in row.inner_text()
    assert page.inner_text("#queue-depth") == "1"
    preview = page.locator(f"img[data-result='{node_state.seg_result_id}']")
    preview.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.std() > 20  # not a blank page
    red_overlay = (image[..., 0] - image[..., 1] > 30) & (image[..., 0] - image[..., 2] > 30)
    assert red_overlay.sum() > 2000  # the segment overlay of the preview made it onto the screen


def test_jobs_page_shows_stage_timings_and_errors(page) -> None:  # type: ignore[no-untyped-def]
    page.click("text=Jobs")
    text = page.inner_text("#jobs")
    assert "infer 2.10" in text and "load 0.40" in text
    assert "slice spacing 4.0 mm above 2.5 mm" in text


def test_deliveries_page_shows_attempts_and_status(page) -> None:  # type: ignore[no-untyped-def]
    page.click("text=Deliveries")
    rows = page.locator(".delivery-row")
    assert rows.count() == 2
    failed = rows.filter(has_text="viewer").inner_text()
    assert "failed" in failed and "5" in failed and "called AE title not recognised" in failed


def test_health_page_shows_worker_queue_and_audit(page) -> None:  # type: ignore[no-untyped-def]
    page.click("text=Health")
    assert WORKER in page.inner_text("#workers")
    assert "NOT READY" not in page.inner_text("#checks")
    assert "dicom-instances-received" in page.inner_text("#audit")
    assert "queue gpu" in page.inner_text("#broker")


def test_the_page_refreshes_itself(page, node_state: NodeState) -> None:  # type: ignore[no-untyped-def]
    new_uid = "1.2.826.0.1.3680043.8.498.999"
    now = utcnow()
    with node_state.database.session() as session:
        session.add(Study(study_uid=new_uid + ".1", first_received_at=now, last_received_at=now))
        session.flush()
        session.add(Series(series_uid=new_uid, study_uid=new_uid + ".1", modality="MR", state=SeriesState.receiving,
                           instance_count=3, first_received_at=now, last_received_at=now))
    # No navigation here: the page reloads itself every web.refresh_seconds (1 s in this fixture).
    page.wait_for_selector(f"tr[data-series='{new_uid}']", timeout=10_000)
