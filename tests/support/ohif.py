"""The OHIF viewer as a test peer: Orthanc with its DICOMweb plugin, OHIF's prebuilt app served same-origin, and
headless Chromium driven by Playwright.

One HTTP server on 127.0.0.1 serves OHIF's ``dist/`` (with an app-config.js pointing at ``/dicom-web``) and
proxies ``/dicom-web/*`` to Orthanc, so the browser needs no CORS. OHIF itself is fetched by
``scripts/fetch_ohif.sh`` into ``.cache/ohif`` and never committed.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from node.ports import free_port
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch_ohif.sh"
OHIF_VERSION = os.environ.get("OHIF_VERSION", "3.13.2")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

APP_CONFIG = """window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  disableConfirmationPrompts: true,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'pacsnode test Orthanc',
        name: 'orthanc',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""



def ohif_dist() -> Path:
    """OHIF's prebuilt ``dist/``; runs the idempotent fetch script when it is not there yet."""
    dist = REPO_ROOT / ".cache" / "ohif" / OHIF_VERSION / "dist"
    if not (dist / "index.html").is_file():
        subprocess.run(["bash", str(FETCH_SCRIPT)], check=True, env={**os.environ, "OHIF_VERSION": OHIF_VERSION})
    return dist


@dataclass
class OrthancWeb:
    """A running Orthanc with DICOMweb: its HTTP and DICOM ports on 127.0.0.1."""

    http_port: int
    dicom_port: int
    ae_title: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def upload(self, path: Path) -> str:
        """Store one DICOM file through the REST API; returns Orthanc's instance ID."""
        response = requests.post(f"{self.url}/instances", data=path.read_bytes(), timeout=60)
        response.raise_for_status()
        return response.json()["ID"]

    def instance_count(self) -> int:
        return int(requests.get(f"{self.url}/statistics", timeout=10).json()["CountInstances"])


@contextmanager
def orthanc_with_dicomweb(workdir: Path, ae_title: str = "ORTHANC") -> Iterator[OrthancWeb]:
    """Start Orthanc with the DICOMweb plugin under ``workdir``; stopped and waited for on exit."""
    orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(orthanc).exists() or not DICOMWEB_PLUGIN.exists():
        raise RuntimeError("Orthanc and its DICOMweb plugin are needed: apt-get install orthanc orthanc-dicomweb")
    storage = workdir / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "pacsnode-viewer-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "StudiesMetadata": "Full"},
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log_file = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [orthanc, str(config_path)], stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"}
    )
    server = OrthancWeb(http_port, dicom_port, ae_title, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start; see {workdir / 'orthanc.log'}")
            try:
                if requests.get(f"{server.url}/dicom-web/studies", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer DICOMweb in 30 s; see {workdir / 'orthanc.log'}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


class _ViewerHandler(SimpleHTTPRequestHandler):
    """Static OHIF files, our app-config.js, the SPA fallback, and /dicom-web proxied to Orthanc."""

    server: "_ViewerHTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("viewer http: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/dicom-web/"):
            self._proxy()
        elif self.path.split("?")[0] == "/app-config.js":
            self._send_bytes(APP_CONFIG.encode(), "application/javascript")
        else:
            local = Path(self.translate_path(self.path))
            if not local.is_file():
                self.path = "/index.html"  # SPA routes such as /viewer
            super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        if self.path.startswith("/dicom-web/"):
            self._proxy()
        else:
            self.send_error(405)

    def _send_bytes(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection", "accept-encoding"}}
        connection = http.client.HTTPConnection("127.0.0.1", self.server.orthanc_port, timeout=120)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError as exc:
            self.send_error(502, f"Orthanc unreachable: {exc}")
            return
        finally:
            connection.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in {"connection", "transfer-encoding", "content-length", "keep-alive"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _ViewerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    orthanc_port: int


@contextmanager
def ohif_server(dist: Path, orthanc_http_port: int) -> Iterator[str]:
    """Serve OHIF from ``dist`` on an ephemeral 127.0.0.1 port; yields its base URL."""

    def handler(*args: Any, **kwargs: Any) -> _ViewerHandler:
        return _ViewerHandler(*args, directory=str(dist), **kwargs)

    server = _ViewerHTTPServer(("127.0.0.1", 0), handler)
    server.orthanc_port = orthanc_http_port
    thread = threading.Thread(target=server.serve_forever, name="ohif-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (no browser download); yields the Browser."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError("Chromium is needed for the viewer tests: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


SKIP_TOURS = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));"

_JUMP_TO_INSTANCE = """(uid) => {
  const enabled = cornerstone.getEnabledElements()[0];
  const ids = enabled.viewport.getImageIds();
  const index = ids.findIndex(id => id.includes('/instances/' + uid + '/'));
  if (index >= 0) cornerstone.utilities.jumpToSlice(enabled.viewport.element, {imageIndex: index});
  return index;
}"""

_SHOWN = """(uid) => {
  const enabled = cornerstone.getEnabledElements()[0];
  if (!enabled) return false;
  if ((enabled.viewport.getCurrentImageId() || '').includes('/instances/' + uid + '/')) return true;
  // Not there (yet): a viewport that was still loading, or was reset by a SEG's hydration, lost the jump.
  const index = enabled.viewport.getImageIds().findIndex(id => id.includes('/instances/' + uid + '/'));
  if (index >= 0) cornerstone.utilities.jumpToSlice(enabled.viewport.element, {imageIndex: index});
  return false;
}"""

_VIEWPORT_RECT = """() => {
  const r = cornerstone.getEnabledElements()[0].viewport.element.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height};
}"""

_SEGMENTATION_COUNT = "() => (window.services ? services.segmentationService.getSegmentations().length : 0)"


class ViewerPage:
    """One browser page on OHIF's viewer route, with the steps the tests need."""

    def __init__(self, browser: Any, base_url: str, width: int = 1400, height: int = 900) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.page.add_init_script(SKIP_TOURS)
        self.base_url = base_url
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open_study(self, study_uid: str, timeout_s: float = 120) -> None:
        """Open the viewer on one study and wait until its first image is rendered."""
        self.page.goto(f"{self.base_url}/viewer?StudyInstanceUIDs={study_uid}")
        # Toasts would cover the image in screenshots; their texts stay readable through notifications().
        self.page.add_style_tag(content="[data-sonner-toaster] { visibility: hidden !important; }")
        self.page.wait_for_function(
            "() => window.cornerstone && cornerstone.getEnabledElements().length > 0 && "
            "!!cornerstone.getEnabledElements()[0].viewport.getCurrentImageId()",
            timeout=timeout_s * 1000,
        )

    def load_series(self, series_description: str, timeout_s: float = 120) -> None:
        """Double-click a series in the study browser (a SEG is hydrated at once: prompts are off)."""
        before = self.page.evaluate(_SEGMENTATION_COUNT)
        item = self.page.get_by_text(series_description, exact=True).first
        item.wait_for(timeout=timeout_s * 1000)
        item.dblclick()
        self.page.wait_for_function(f"() => ({_SEGMENTATION_COUNT})() > {before}", timeout=timeout_s * 1000)

    def show_series(self, series_description: str, timeout_s: float = 120) -> None:
        """Double-click a series in the study browser and wait until the viewport shows one of its images."""
        before = self.page.evaluate(
            "() => { const e = cornerstone.getEnabledElements()[0]; return e ? e.viewport.getCurrentImageId() : null; }"
        )
        item = self.page.get_by_text(series_description, exact=True).first
        item.wait_for(timeout=timeout_s * 1000)
        item.dblclick()
        self.page.wait_for_function(
            "(before) => { const e = cornerstone.getEnabledElements()[0]; const id = e && e.viewport.getCurrentImageId();"
            " return !!id && id !== before; }",
            arg=before, timeout=timeout_s * 1000,
        )
        self.settle()

    def show_instance(self, sop_instance_uid: str, timeout_s: float = 120) -> None:
        """Scroll the viewport to the slice of one source instance and wait for it to render."""
        index = self.page.evaluate(_JUMP_TO_INSTANCE, sop_instance_uid)
        if index < 0:
            raise AssertionError(f"instance {sop_instance_uid} is not in the viewport's stack")
        self.page.wait_for_function(_SHOWN, arg=sop_instance_uid, polling=250, timeout=timeout_s * 1000)
        self.settle()

    def settle(self) -> None:
        """Let cornerstone finish rendering: wait for several animation frames."""
        self.page.evaluate(
            "() => new Promise(done => { let n = 0; const tick = () => (++n >= 10 ? done() : "
            "requestAnimationFrame(tick)); requestAnimationFrame(tick); })"
        )
        self.page.wait_for_timeout(300)

    def viewport_screenshot(self, path: Path) -> Any:
        """Screenshot of the image viewport only, saved to ``path``; returns it as an RGB array."""
        import numpy as np
        from PIL import Image

        rect = self.page.evaluate(_VIEWPORT_RECT)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip=rect)
        return np.asarray(Image.open(path).convert("RGB"))

    def notifications(self) -> list[str]:
        """Texts of the notifications (toasts) OHIF shows now, e.g. warnings about a loaded SEG."""
        return [text.strip() for text in self.page.locator("[data-sonner-toast]").all_inner_texts()]

    def close(self) -> None:
        self.page.close()


_WORLD_TO_CANVAS = """(points) => {
  const viewport = cornerstone.getEnabledElements()[0].viewport;
  return points.map(p => Array.from(viewport.worldToCanvas(p)));
}"""


def world_to_screen(viewer: ViewerPage, points: list[list[float]]) -> list[tuple[float, float]]:
    """Where OHIF draws patient-space points (LPS mm) in the viewport, in screenshot pixels (x, y)."""
    scale = float(viewer.page.evaluate("() => window.devicePixelRatio"))
    return [(x * scale, y * scale) for x, y in viewer.page.evaluate(_WORLD_TO_CANVAS, points)]


def series_listed(viewer: ViewerPage, series_description: str) -> bool:
    """True when the study browser lists a series with this description."""
    return viewer.page.get_by_text(series_description, exact=True).count() > 0


_SR_MEASUREMENTS = """(description) => {
  const sets = services.displaySetService.getActiveDisplaySets()
    .filter(d => d.Modality === 'SR' && d.SeriesDescription === description);
  return sets.length ? (sets[0].measurements || []).length : -1;
}"""


def load_sr_measurements(viewer: ViewerPage, series_description: str, timeout_s: float = 60) -> int:
    """Open the SR series in the viewport and return how many measurements OHIF read from it (0 if none).

    OHIF draws only measurements with spatial coordinates (SCOORD); others are read but not drawn.
    """
    viewer.page.get_by_text(series_description, exact=True).first.dblclick()
    try:
        viewer.page.wait_for_function(f"(d) => ({_SR_MEASUREMENTS})(d) > 0", arg=series_description,
                                      timeout=timeout_s * 1000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: the count below says what was read
        pass
    return max(0, int(viewer.page.evaluate(_SR_MEASUREMENTS, series_description)))


_SR_IN_VIEWPORT = """(description) => {
  const sr = services.displaySetService.getActiveDisplaySets()
    .filter(d => d.Modality === 'SR' && d.SeriesDescription === description).map(d => d.displaySetInstanceUID);
  const shown = Array.from(services.viewportGridService.getState().viewports.values())
    .some(v => (v.displaySetInstanceUIDs || []).some(uid => sr.includes(uid)));
  return shown && cornerstone.getEnabledElements().length > 0;
}"""


def open_structured_report(viewer: ViewerPage, series_description: str, timeout_s: float = 90) -> None:
    """Show the SR series in the viewport (OHIF's SR viewport draws its measurements on their images).

    A double-click that lands while the study browser is still settling selects the series without opening
    it, so the double-click is repeated until the viewport shows the SR.
    """
    item = viewer.page.get_by_text(series_description, exact=True).first
    item.wait_for(timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while True:
        item.dblclick()
        try:
            viewer.page.wait_for_function(_SR_IN_VIEWPORT, arg=series_description, timeout=5000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again until the deadline
            if time.monotonic() > deadline:
                raise AssertionError(f"OHIF did not show the SR {series_description!r} in the viewport") from None
    viewer.settle()


_DRAWN = """() => {
  const svg = cornerstone.getEnabledElements()[0].viewport.element.querySelector('svg.svg-layer')
    || cornerstone.getEnabledElements()[0].viewport.element.querySelector('svg');
  const points = text => { const v = (text.match(/-?[0-9.]+(e-?[0-9]+)?/g) || []).map(Number);
    return v.filter((_, i) => i % 2 === 0).map((x, i) => [x, v[2 * i + 1]]); };
  return {
    polylines: Array.from(svg.querySelectorAll('polyline')).map(n => points(n.getAttribute('points'))),
    lines: Array.from(svg.querySelectorAll('line')).filter(n => !n.getAttribute('stroke-dasharray'))
      .map(n => [[+n.getAttribute('x1'), +n.getAttribute('y1')], [+n.getAttribute('x2'), +n.getAttribute('y2')]]),
    ellipses: Array.from(svg.querySelectorAll('ellipse')).map(n =>
      [+n.getAttribute('cx'), +n.getAttribute('cy'), +n.getAttribute('rx'), +n.getAttribute('ry')]),
    texts: Array.from(svg.querySelectorAll('text'))
      .map(n => Array.from(n.querySelectorAll('tspan')).map(t => t.textContent)),
  };
}"""


@dataclass
class Drawn:
    """What OHIF's annotation layer draws on the current slice, in screenshot pixels: polylines (outlines,
    boxes), solid lines (a point's arrow; label connectors are dashed and left out), ellipses (centre x, y and
    radii) and the lines of each text box."""

    polylines: list[list[tuple[float, float]]]
    lines: list[tuple[tuple[float, float], tuple[float, float]]]
    ellipses: list[tuple[float, float, float, float]]
    texts: list[list[str]]


def drawn_annotations(viewer: ViewerPage) -> Drawn:
    """The SVG annotations OHIF draws on the viewport's current slice."""
    scale = float(viewer.page.evaluate("() => window.devicePixelRatio"))
    found = viewer.page.evaluate(_DRAWN)
    return Drawn(
        polylines=[[(x * scale, y * scale) for x, y in line] for line in found["polylines"]],
        lines=[((a[0] * scale, a[1] * scale), (b[0] * scale, b[1] * scale)) for a, b in found["lines"]],
        ellipses=[(x * scale, y * scale, rx * scale, ry * scale) for x, y, rx, ry in found["ellipses"]],
        texts=found["texts"],
    )
