"""Viewer reach: SEG size per writer option, and time from results delivered to overlay visible in OHIF.

For the 300-slice 512x512 benchmark chest CT (sample_dicom, generated once into bench/out/viewer/ct), the
ct-lungs pipeline's result is written as BINARY with and without empty frames, LABELMAP, and both compressed.
Each SEG is sent by the node's C-STORE SCU into Orthanc (DICOMweb plugin); then a fresh headless Chromium
opens the study in OHIF, loads that SEG and the clock stops when overlay colour shows on the screen.

Run: ``python -m bench.viewer [--options binary,binary-sparse,...] [--out bench/out]``. Needs Orthanc with
orthanc-dicomweb, Chromium and OHIF (scripts/fetch_ohif.sh).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.settings import ResultOptions
from node.dicom.scu import send_objects
from pipelines.registry import create_pipeline
from pipelines.results import write_results
from pipelines.volume import load_series
from tests.support.ohif import ViewerPage, chromium, ohif_dist, ohif_server, orthanc_with_dicomweb

OPTIONS: dict[str, dict[str, object]] = {
    "binary": {"seg_type": "binary"},
    "binary-sparse": {"seg_type": "binary", "omit_empty_frames": True},
    "labelmap": {"seg_type": "labelmap"},
    "binary-compressed": {"seg_type": "binary", "compress": True},
    "labelmap-compressed": {"seg_type": "labelmap", "compress": True},
}
OUT = Path(__file__).resolve().parent / "out"
OVERLAY_TIMEOUT_S = 180.0


def benchmark_ct(folder: Path) -> list[Path]:
    """The 300-slice benchmark CT, generated on first use (about half a minute)."""
    paths = sorted(folder.glob("CT_*.dcm"))
    if len(paths) != 300:
        from sample_dicom.generate import BENCHMARK, write_phantom

        paths = write_phantom(folder, BENCHMARK, series="benchmark")
    return paths


def overlay_visible(rgb: np.ndarray, margin: int = 90) -> bool:
    """Saturated pixels away from the viewport's edges (where OHIF draws its blue UI): the overlay shows."""
    spread = rgb.max(axis=2).astype(int) - rgb.min(axis=2)
    return int((spread[margin:-margin, margin:-margin] > 40).sum()) > 200


def time_to_overlay(browser: object, base_url: str, study_uid: str, description: str, shot: Path) -> dict[str, float]:
    """Seconds from now to: first image shown, SEG loaded, overlay visible on screen."""
    started = time.perf_counter()
    viewer = ViewerPage(browser, base_url)
    try:
        viewer.open_study(study_uid, timeout_s=OVERLAY_TIMEOUT_S)
        first_image = time.perf_counter() - started
        viewer.load_series(description, timeout_s=OVERLAY_TIMEOUT_S)
        loaded = time.perf_counter() - started
        while time.perf_counter() - started < OVERLAY_TIMEOUT_S:
            if overlay_visible(viewer.viewport_screenshot(shot)):
                return {"first_image_s": first_image, "seg_loaded_s": loaded, "overlay_s": time.perf_counter() - started}
            time.sleep(0.2)
        raise TimeoutError(f"no overlay within {OVERLAY_TIMEOUT_S:g} s")
    finally:
        viewer.close()


def run(options: list[str], out: Path) -> list[dict[str, object]]:
    ct_paths = benchmark_ct(out / "viewer" / "ct")
    volume = load_series(ct_paths)
    result = create_pipeline("ct-lungs").run(volume)
    study_uid = str(volume.datasets[0].StudyInstanceUID)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="pacsnode-bench-viewer-") as tmp:
        work = Path(tmp)
        written = {}
        for name in options:
            config = ResultOptions(series_description_prefix=f"bench {name}", fallback_key_slices=0, **OPTIONS[name])
            began = time.perf_counter()
            files = write_results(volume, result, config, job_key=f"bench-viewer/{name}", out_dir=work / name)
            seg = next(w for w in files if w.kind == "seg")
            written[name] = (seg, time.perf_counter() - began)
        fallback = write_results(volume, result, ResultOptions(), job_key="bench-viewer/fallback", out_dir=work / "fb")
        fallback_bytes = sum(w.size_bytes for w in fallback if w.kind.startswith("fallback"))
        with orthanc_with_dicomweb(work / "orthanc") as orthanc, ohif_server(ohif_dist(), orthanc.http_port) as url:
            sent = send_objects(ct_paths, orthanc.ae_title, "127.0.0.1", orthanc.dicom_port)
            if not all(o.stored for o in sent):
                raise RuntimeError("Orthanc did not store the CT: " + sent[0].describe())
            with chromium() as browser:
                for name, (seg, write_s) in written.items():
                    began = time.perf_counter()
                    [outcome] = send_objects([seg.path], orthanc.ae_title, "127.0.0.1", orthanc.dicom_port)
                    if not outcome.stored:  # DCMTK-based peers may not know LABELMAP: STOW it through REST
                        orthanc.upload(seg.path)
                    delivered_s = time.perf_counter() - began
                    row: dict[str, object] = {"option": name, "seg_bytes": seg.size_bytes, "write_s": write_s,
                                              "deliver_s": delivered_s, "via": "c-store" if outcome.stored else "rest"}
                    try:
                        row.update(time_to_overlay(browser, url, study_uid, f"bench {name} ct-lungs SEG",
                                                   out / "viewer" / f"overlay-{name}.png"))
                    except Exception as exc:  # noqa: BLE001 - a viewer that cannot show an option is a result
                        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                    rows.append(row)
    rows.append({"option": "fallback (SC key slices)", "seg_bytes": fallback_bytes})
    return rows


def _table(rows: list[dict[str, object]]) -> str:
    lines = [f"{'option':<26}{'size MB':>9}{'write s':>9}{'deliver s':>10}{'1st image s':>12}{'overlay s':>11}  note"]
    for row in rows:
        def cell(key: str, width: int) -> str:
            value = row.get(key)
            return f"{value:>{width}.2f}" if isinstance(value, float) else f"{'-':>{width}}"
        size = f"{int(row['seg_bytes']) / 1e6:>9.1f}"
        lines.append(f"{row['option']:<26}{size}{cell('write_s', 9)}{cell('deliver_s', 10)}"
                     f"{cell('first_image_s', 12)}{cell('overlay_s', 11)}  {row.get('error', row.get('via', ''))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--options", default=",".join(OPTIONS), help="comma-separated: " + ", ".join(OPTIONS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    names = [n for n in args.options.split(",") if n]
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        parser.error(f"unknown option(s) {unknown}; choose from {list(OPTIONS)}")
    rows = run(names, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "viewer.json").write_text(json.dumps(rows, indent=2))
    print("Viewer reach, 300-slice 512x512 CT, ct-lungs (2 segments); times from SEG delivered to Orthanc:")
    print(_table(rows))


if __name__ == "__main__":
    main()
