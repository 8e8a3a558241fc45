"""Agreement between a pipeline's output and a reference: Dice, HD95 and volumes of segments, classification
metrics, and a bootstrap confidence interval of a mean.

The formulas come from MONAI (Dice, Hausdorff distance on mask surfaces with the voxel spacing), scikit-learn
(accuracy, balanced accuracy, precision/recall/F1, confusion matrix) and SciPy (bootstrap). Empty masks are
decided here, before any library sees them: both empty gives Dice 1 and no HD95, one empty gives Dice 0 and no
HD95 (a distance to nothing is undefined).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from pipelines.types import Box, bounding_box

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
"""A fixed seed: the same scores always give the same interval, so reports can be compared run to run."""


@dataclass(frozen=True)
class SegmentScore:
    """One segment of one case against its reference."""

    dice: float
    hd95_mm: float | None
    volume_ml: float
    reference_volume_ml: float

    def as_dict(self) -> dict[str, float | None]:
        return {
            "dice": self.dice,
            "hd95_mm": self.hd95_mm,
            "volume_ml": self.volume_ml,
            "reference_volume_ml": self.reference_volume_ml,
        }


def _union_box(a: Box, b: Box, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The box holding both boxes, one voxel larger on each side (surfaces at a box edge stay surfaces)."""
    parts = []
    for axis, (x, y) in enumerate(zip(a, b)):
        starts = [s.start for s in (x, y) if s.stop > s.start]
        stops = [s.stop for s in (x, y) if s.stop > s.start]
        parts.append(slice(max(0, min(starts) - 1), min(shape[axis], max(stops) + 1)))
    return tuple(parts)


def segment_score(prediction: np.ndarray, reference: np.ndarray, spacing_kji: Sequence[float]) -> SegmentScore:
    """Dice, HD95 (mm) and both volumes (mL) of two boolean masks on one ``[k, j, i]`` grid.

    ``spacing_kji`` is the voxel size along the array's axes in mm (slice, row, column), so surface distances
    are measured in patient space whatever the voxel shape.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} are on different grids")
    voxel_ml = float(np.prod(spacing_kji)) / 1000.0
    predicted, referenced = int(np.count_nonzero(prediction)), int(np.count_nonzero(reference))
    volumes = {"volume_ml": predicted * voxel_ml, "reference_volume_ml": referenced * voxel_ml}
    if predicted == 0 and referenced == 0:
        return SegmentScore(dice=1.0, hd95_mm=None, **volumes)
    if predicted == 0 or referenced == 0:
        return SegmentScore(dice=0.0, hd95_mm=None, **volumes)
    # Both masks lie inside the union of their boxes: the metrics see only that part of the volume.
    box = _union_box(bounding_box(prediction), bounding_box(reference), prediction.shape)
    y_pred = torch.from_numpy(np.ascontiguousarray(prediction[box], dtype=np.float64))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(reference[box], dtype=np.float64))[None, None]
    dice = float(compute_dice(y_pred, y, include_background=True, ignore_empty=False)[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own call of a deprecated argument
        distance = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=list(spacing_kji))
    hd95 = float(distance[0, 0])
    return SegmentScore(dice=dice, hd95_mm=hd95, **volumes)


def mean_with_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, list[float] | None]:
    """The mean of ``values`` and its percentile-bootstrap confidence interval.

    No interval for fewer than two values; a degenerate one (both ends the mean) when all values are equal.
    """
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if data.size == 0:
        return None, None
    mean = float(data.mean())
    if data.size < 2:
        return mean, None
    if np.all(data == data[0]):
        return mean, [mean, mean]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            (data,),
            np.mean,
            confidence_level=confidence,
            n_resamples=BOOTSTRAP_RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        )
    return mean, [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def median(values: Sequence[float | None]) -> float | None:
    data = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.median(data)) if data else None


def classification_summary(predicted: Sequence[str], reference: Sequence[str]) -> dict[str, object]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support and the confusion matrix.

    Classes are every value seen in either list, so a class the pipeline never predicts still shows its recall
    of 0, and one it predicts but no reference holds shows its precision of 0 (support 0). Balanced accuracy
    averages recall over the classes the references hold.
    """
    if len(predicted) != len(reference):
        raise ValueError("predicted and reference values must pair up")
    if not predicted:
        return {"accuracy": None, "balanced_accuracy": None, "per_class": {}, "confusion": {}, "cases": 0}
    classes = sorted(set(predicted) | set(reference))
    precision, recall, f1, support = precision_recall_fscore_support(
        reference, predicted, labels=classes, zero_division=0
    )
    matrix = confusion_matrix(reference, predicted, labels=classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true": expected here
        balanced = balanced_accuracy_score(reference, predicted)
    return {
        "accuracy": float(accuracy_score(reference, predicted)),
        "balanced_accuracy": float(balanced),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion": {
            truth: {guess: int(matrix[row, column]) for column, guess in enumerate(classes)}
            for row, truth in enumerate(classes)
        },
        "cases": len(predicted),
    }
