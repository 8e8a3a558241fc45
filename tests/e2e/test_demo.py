"""`make demo` (python -m node.demo): the whole loop with a local PACS, a readable summary and PNG previews."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_loop_and_writes_previews(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "node.demo", "--var", str(tmp_path / "var"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180, env={"PATH": "/usr/sbin:/usr/bin:/bin", "COLUMNS": "200"},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert elapsed < 120
    text = done.stdout
    for expected in ("Per-stage timings", "ct-tissue: inference", "ct-lungs: delivery", "Right lung",
                     "Pulmonary emphysema", "demo succeeded", "SEG -> local-pacs: delivered"):
        assert expected in text, f"{expected!r} missing from the summary:\n{text}"
    previews = sorted(out.glob("*.png"))
    assert {p.name.split("-slice")[0] for p in previews} == {"ct-tissue", "ct-lungs"}
    for path in previews:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 160
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50  # a CT slice with coloured overlays, not a blank
