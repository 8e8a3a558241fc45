"""Preview images of results: key slices of the source series with the SEG's segments overlaid (PNG).

Rendered on first request from the stored SEG file and the source instances it references, then cached
under ``<storage_dir>/previews/`` so the dashboard keeps showing it after retention removed the sources.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut
from sqlalchemy import select

from node.config import Settings
from node.db import Database, Instance, ResultObject
from pipelines.results.render import draw_segments, greyscale, key_slice_indices, seg_colours, window_of

log = logging.getLogger(__name__)

KEY_SLICES = 3
TILE_MIN_SIZE = 256


class PreviewUnavailable(Exception):
    """No preview can be made for this result; the message says why."""


def preview_dir(settings: Settings) -> Path:
    return Path(settings.node.storage_dir) / "previews"


def preview_path(settings: Settings, result_id: int) -> Path:
    return preview_dir(settings) / f"{result_id}.png"


def _slice_position(dataset: pydicom.Dataset) -> float:
    position = dataset.get("ImagePositionPatient")
    orientation = dataset.get("ImageOrientationPatient")
    if position is not None and orientation is not None:
        normal = np.cross(np.array(orientation[:3], float), np.array(orientation[3:], float))
        return float(np.dot(normal, np.array(position, float)))
    return float(dataset.get("InstanceNumber") or 0)


def _tile(dataset: pydicom.Dataset, masks: np.ndarray, colours: list[tuple[int, int, int]]) -> Image.Image:
    """The slice in its window with each segment of ``masks`` (rows, columns, segments) tinted in its colour."""
    values = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float32)
    image = greyscale(values, window_of(dataset, values))
    return Image.fromarray(draw_segments(image, [(masks[..., i] > 0, colours[i]) for i in range(masks.shape[-1])]))


def _load_sources(database: Database, sop_uids: list[str]) -> list[pydicom.Dataset]:
    with database.session() as session:
        paths = dict(
            session.execute(
                select(Instance.sop_instance_uid, Instance.path).where(Instance.sop_instance_uid.in_(sop_uids))
            ).all()
        )
    datasets = []
    for uid in sop_uids:
        path = paths.get(uid)
        if path and Path(path).is_file():
            datasets.append(pydicom.dcmread(path))
    if not datasets:
        raise PreviewUnavailable("the source instances of this SEG are no longer stored")
    return sorted(datasets, key=_slice_position)


def render_preview(seg_path: Path, database: Database, key_slices: int = KEY_SLICES) -> bytes:
    """PNG bytes: the ``key_slices`` source slices with the largest segmented area, segments overlaid."""
    try:
        seg = hd.seg.segread(seg_path)
    except (OSError, ValueError, AttributeError) as exc:
        raise PreviewUnavailable(f"cannot read SEG {seg_path.name}: {exc}") from exc
    sop_uids = [str(sop) for _, _, sop in seg.get_source_image_uids()]
    sources = _load_sources(database, sop_uids)
    masks = seg.get_pixels_by_source_instance(
        [str(ds.SOPInstanceUID) for ds in sources],
        ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True,
    )
    areas = masks.reshape(masks.shape[0], -1).sum(axis=1, dtype=np.int64)
    by_number = seg_colours(seg)
    colours = [by_number[int(n)] for n in seg.segment_numbers]
    tiles = [_tile(sources[i], masks[i], colours) for i in key_slice_indices(areas, key_slices)]
    scale = max(1, -(-TILE_MIN_SIZE // max(tiles[0].size)))
    tiles = [tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST) for tile in tiles]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), max(t.height for t in tiles)))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 4
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def preview_png(settings: Settings, database: Database, result_id: int) -> bytes:
    """The cached preview of result ``result_id``, rendering and caching it on first use."""
    cached = preview_path(settings, result_id)
    if cached.is_file():
        return cached.read_bytes()
    with database.session() as session:
        result = session.get(ResultObject, result_id)
        if result is None:
            raise PreviewUnavailable(f"no result {result_id}")
        kind, path = result.kind, Path(result.path)
    if kind != "seg":
        raise PreviewUnavailable(f"result {result_id} is a {kind}, not a SEG")
    if not path.is_file():
        raise PreviewUnavailable(f"the SEG file of result {result_id} is no longer stored")
    png = render_preview(path, database)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    partial.write_bytes(png)
    os.replace(partial, cached)
    log.info("rendered preview of result %d (%s)", result_id, path.name)
    return png
