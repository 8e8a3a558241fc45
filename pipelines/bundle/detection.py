"""Boxes from a detection bundle (the Model Zoo's RetinaNet layout) on the volume's voxel grid.

The bundle's own inferer (``RetinaNetInferer`` around a ``RetinaNetDetector``, with the box selection its
evaluator's ``_requires_`` set) gives, per image, boxes, labels and scores under the detector's keys. Its
postprocessing then runs as published on ``{box, label, label_scores, image}``: clipping to the image,
``AffineBoxToWorldCoordinated`` (world coordinates, LPS when it says ``affine_lps_to_ras``), ``ConvertBoxModed``
(centre and size, say). pacsnode reads what those transforms did and brings every box back to corner form on
the volume's grid: continuous voxel coordinates ``(i, j, k)``, integers at voxel centres, so a box maps to
patient coordinates through the volume's affine whatever grid the model worked on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.apps.detection.transforms.dictionary import AffineBoxToWorldCoordinated, ConvertBoxModed
from monai.data.box_utils import StandardMode, convert_box_mode
from monai.transforms import Compose

from pipelines import codes
from pipelines.bundle.errors import BundleRunError
from pipelines.bundle.output import LPS_TO_RAS
from pipelines.bundle.transforms import Loading
from pipelines.bundle.labels import PRIVATE_SCHEME
from pipelines.types import MORPHOLOGICALLY_ALTERED_STRUCTURE, Code, Finding, PipelineResult, Point3, SegmentLabel

BOX_KEY, LABEL_KEY = "box", "label"


@dataclass(frozen=True)
class DetectedBox:
    """One detection: the smallest box along the patient axes holding it (lowest and highest corner, LPS mm),
    the bundle's class index and its score (0..1)."""

    low: Point3
    high: Point3
    label: int
    score: float


@dataclass
class BoxSpace:
    """Where the postprocessing left the boxes: their mode and whether they are in world coordinates."""

    mode: Any = StandardMode
    world: bool = False
    lps: bool = False


def box_space(postprocessing: Any) -> BoxSpace:
    """What the bundle's box transforms did, read from its instantiated postprocessing."""
    space = BoxSpace()
    transforms = postprocessing.transforms if isinstance(postprocessing, Compose) else []
    for transform in transforms:
        if isinstance(transform, AffineBoxToWorldCoordinated) and BOX_KEY in transform.keys:
            space.world, space.lps = True, bool(transform.affine_lps_to_ras)
        elif isinstance(transform, ConvertBoxModed) and BOX_KEY in transform.keys:
            space.mode = transform.converter.dst_mode
    return space


def _keys(inferer: Any) -> tuple[str, str, str]:
    detector = getattr(inferer, "detector", None)
    box = getattr(detector, "target_box_key", BOX_KEY)
    label = getattr(detector, "target_label_key", LABEL_KEY)
    return box, label, getattr(detector, "pred_score_key", f"{label}_scores")


def postprocess(output: Any, image: torch.Tensor, postprocessing: Any, inferer: Any, loading: Loading) -> list[DetectedBox]:
    """The detector's output for one image, through the bundle's postprocessing, as boxes in patient
    coordinates (LPS); ``image`` is the preprocessed image, whose affine leads back from its grid."""
    predictions = output[0] if isinstance(output, (list, tuple)) else output
    if not isinstance(predictions, dict):
        raise BundleRunError(f"a detection bundle's inferer returns boxes per image (a dict), got {type(predictions).__name__}")
    box_key, label_key, score_key = _keys(inferer)
    item = {**predictions, loading.key: image}
    if postprocessing is not None:
        item = postprocessing(item)
    space = box_space(postprocessing)
    boxes = torch.as_tensor(item[box_key]).detach().float().cpu().reshape(-1, 6)
    corners = convert_box_mode(boxes, src_mode=space.mode, dst_mode=StandardMode).numpy().astype(np.float64)
    labels = torch.as_tensor(item[label_key]).detach().cpu().reshape(-1).tolist()
    scores = torch.as_tensor(item[score_key]).detach().float().cpu().reshape(-1).tolist()
    to_world = np.eye(4) if space.world else np.asarray(torch.as_tensor(image.affine).cpu(), dtype=np.float64)
    # the image's affine is RAS unless the loader kept LPS; AffineBoxToWorldCoordinated may flip it once more
    world_is_lps = (not loading.ras) != (space.world and space.lps)
    to_lps = np.eye(4) if world_is_lps else LPS_TO_RAS  # LPS_TO_RAS is its own inverse
    return [_box(corner, to_lps @ to_world, int(label), float(score)) for corner, label, score in
            zip(corners, labels, scores, strict=True)]


def _box(corner: np.ndarray, to_lps: np.ndarray, label: int, score: float) -> DetectedBox:
    """A box given by its corners in some space, with the matrix from that space to patient LPS."""
    points = np.array([[a, b, c, 1.0] for a in (corner[0], corner[3]) for b in (corner[1], corner[4])
                       for c in (corner[2], corner[5])])
    mapped = (to_lps @ points.T)[:3]
    low, high = mapped.min(axis=1), mapped.max(axis=1)
    return DetectedBox((float(low[0]), float(low[1]), float(low[2])), (float(high[0]), float(high[1]), float(high[2])),
                       label, min(1.0, max(0.0, score)))


def class_label(index: int, classes: dict[int, SegmentLabel]) -> SegmentLabel:
    """The coded label of a detected class: the pipeline's ``labels`` entry, else a private code naming it."""
    if index in classes:
        return classes[index]
    return f"Class {index}", MORPHOLOGICALLY_ALTERED_STRUCTURE, Code(f"CLASS{index}", PRIVATE_SCHEME, f"Class {index}"), None


def result(pipeline: str, version: str, found: list[DetectedBox], classes: dict[int, SegmentLabel]) -> PipelineResult:
    """The detections of one run as located findings (patient-axis boxes with the model's score), best first."""
    findings = []
    for box in sorted(found, key=lambda item: -item.score):
        label, category, kind, _ = class_label(box.label, classes)
        findings.append(Finding(kind, label, category, box=(box.low, box.high), probability=box.score))
    return PipelineResult(pipeline, version, codes.ARTIFICIAL_INTELLIGENCE, findings=findings)
