"""ct-lungs: left and right lung of a chest CT (airway removed), lung volumes, LAA-950, mean lung density and
an emphysema grade.

Lung air is below -500 HU inside the body (Hu et al., IEEE TMI 2001;20:490-498 use an optimal threshold near
that value). The airway tree is the component of voxels below -950 HU that reaches the superior end of the
scan (the trachea). LAA-950 is the percentage of lung voxels below -950 HU.

Emphysema grade from whole-lung LAA-950: below 5 % absent, the common quantitative cut-off for CT emphysema
used in COPDGene analyses (study design: Regan et al., COPD 2010;7:32-43; see also the Fleischner Society
statement, Lynch et al., Radiology 2015;277:192-205); 5-10 % mild, 10-20 % moderate, 20 % and above severe
(pacsnode's own bands, not a published standard; set in ``EMPHYSEMA_GRADES``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from pydicom.dataset import Dataset

from pipelines import codes
from pipelines.builtin import morphology
from pipelines.builtin.base import BuiltinPipeline
from pipelines.builtin.ct_tissue import accepts_ct, body_mask, volume_and_mean
from pipelines.registry import register_builtin
from pipelines.settings import PipelineSettings
from pipelines.types import Classification, Code, Measurement, PipelineResult, Segment, UnsupportedSeries, Volume

logger = logging.getLogger(__name__)

NAME = "ct-lungs"
VERSION = "1.0.0"
LUNG_MAX_HU = -500.0
AIRWAY_MAX_HU = -950.0
LAA_THRESHOLD_HU = -950.0
MIN_LUNG_ML = 50.0
"""Less air than this inside the body is no pair of lungs."""
SUPERIOR_FRACTION = 0.1
"""The trachea must reach the most superior tenth of the slices."""
EMPHYSEMA_GRADES: list[tuple[float, Code]] = [(20.0, codes.SEVERE), (10.0, codes.MODERATE), (5.0, codes.MILD)]
"""(lowest LAA-950 %, grade), highest first; below the last: absent."""
CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "THORAC", "TORSO")


def accepts_chest_ct(header: Dataset) -> str | None:
    """None for a CT whose body part or descriptions name the chest; else why not."""
    reason = accepts_ct(header)
    if reason:
        return reason
    described = " ".join(
        str(getattr(header, keyword, "") or "")
        for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName")
    ).upper()
    if not any(word in described for word in CHEST_WORDS):
        return "not a chest CT (BodyPartExamined and the study/series descriptions name no chest, thorax or lung)"
    return None


def emphysema_grade(laa950_percent: float) -> Code:
    for lowest, grade in EMPHYSEMA_GRADES:
        if laa950_percent >= lowest:
            return grade
    return codes.ABSENT


def superior_slices(volume: Volume) -> slice:
    """The slice range at the superior (head) end of the volume."""
    count = max(1, int(round(volume.array.shape[0] * SUPERIOR_FRACTION)))
    head_last = volume.affine[2, 2] > 0  # k grows towards +z (superior) in LPS
    return slice(volume.array.shape[0] - count, None) if head_last else slice(0, count)


def airway_mask(hu: torch.Tensor, air: torch.Tensor, volume: Volume) -> torch.Tensor:
    """The largest very-low-density component inside the body that reaches the superior end (trachea, bronchi)."""
    labels, count = morphology.label_components(air & (hu < AIRWAY_MAX_HU))
    if count == 0:
        return torch.zeros_like(air)
    top = torch.unique(labels[superior_slices(volume)])
    top = top[top > 0]
    if top.numel() == 0:
        return torch.zeros_like(air)
    sizes = morphology.component_sizes(labels, count)
    trachea = int(top[torch.argmax(sizes[top])])
    return labels == trachea


def lung_air(hu: torch.Tensor, volume: Volume) -> tuple[torch.Tensor, torch.Tensor]:
    """Air inside the body below ``LUNG_MAX_HU``, and the airway within it (see ``airway_mask``)."""
    air = body_mask(hu, min(volume.spacing[:2])) & (hu < LUNG_MAX_HU)
    return air, airway_mask(hu, air, volume)


def split_lungs(lungs: torch.Tensor, volume: Volume, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(right, left): the two largest components, sided by their mean LPS x (patient left is +x)."""
    labels, count = morphology.label_components(lungs)
    if count == 0 or int(torch.count_nonzero(lungs)) * volume.voxel_volume_ml < MIN_LUNG_ML:
        raise UnsupportedSeries(
            f"no lungs found: less than {MIN_LUNG_ML:g} mL of air below {LUNG_MAX_HU:g} HU inside the body "
            "apart from the airway; is this a chest CT covering the lungs?"
        )
    sizes = morphology.component_sizes(labels, count)
    sizes[0] = 0
    order = torch.argsort(sizes, descending=True)
    first = labels == int(order[0])
    if count >= 2 and sizes[order[1]] >= 0.1 * sizes[order[0]]:
        second = labels == int(order[1])
    else:
        # One connected lung region: cut it at the sagittal plane through its centre.
        notes.append("lungs touch: split at the sagittal plane through their centre")
        x = _lps_x(volume, lungs.device)
        middle = float(x[first].mean())
        first, second = first & (x < middle), first & (x >= middle)
    if _mean_x(first, volume) < _mean_x(second, volume):
        return first, second
    return second, first


def _mean_x(mask: torch.Tensor, volume: Volume) -> float:
    """LPS x of the mask's centroid (the affine is linear, so the centroid of indices maps to it)."""
    if mask.device.type == "cuda":
        per_slice = mask.sum(dim=(1, 2)).double().cpu().numpy()
        plane = mask.sum(dim=0).double().cpu().numpy()
    else:  # NumPy counts booleans without widening them, several times faster than torch's sum here
        array = mask.numpy()
        per_slice, plane = np.count_nonzero(array, axis=(1, 2)), np.count_nonzero(array, axis=0)
    count = float(per_slice.sum())
    centroid = (
        float(plane.sum(axis=0) @ np.arange(plane.shape[1])) / count,
        float(plane.sum(axis=1) @ np.arange(plane.shape[0])) / count,
        float(per_slice @ np.arange(per_slice.shape[0])) / count,
    )
    return float(volume.affine[0] @ [*centroid, 1.0])


def _lps_x(volume: Volume, device: torch.device) -> torch.Tensor:
    k, j, i = (torch.arange(n, device=device, dtype=torch.float32) for n in volume.array.shape)
    a = volume.affine[0]
    return a[0] * i[None, None, :] + a[1] * j[None, :, None] + a[2] * k[:, None, None] + a[3]


class CtLungsPipeline(BuiltinPipeline):
    """Right and left lung with volume, mean lung density and LAA-950, and an emphysema grade."""

    name = NAME
    version = VERSION
    description = "chest CT: right and left lung (airway removed), volumes, LAA-950, mean lung density, emphysema grade"
    memory_mb = 1536
    """Peak memory of a job on a 300-slice 512x512 CT (volume, inference, results) with a margin; the
    worker reserves it while the job runs (README: memory per pipeline)."""

    def accepts(self, header: Dataset) -> str | None:
        return accepts_chest_ct(header)

    def infer(self, volume: Volume, hu: torch.Tensor) -> PipelineResult:
        notes: list[str] = []
        air, airway = lung_air(hu, volume)
        if not bool(airway.any()):
            notes.append("no airway reaching the superior end found; nothing removed as airway")
        right, left = split_lungs(air & ~airway, volume, notes)
        segments, measurements = [], []
        for number, (label, kind, mask) in enumerate(
            (("Right lung", codes.RIGHT_LUNG, right), ("Left lung", codes.LEFT_LUNG, left)), start=1
        ):
            segments.append(Segment(number, label, codes.ANATOMICAL_STRUCTURE, kind, mask.cpu().numpy()))
            measurements += volume_and_mean(hu, mask, volume.voxel_volume_ml, number)
            measurements.append(Measurement(codes.LAA_950, _laa(hu, mask), codes.PERCENT, number))
        laa = _laa(hu, right | left)
        grade = emphysema_grade(laa)
        logger.info("%s: LAA-950 %.1f %% (%s)%s", NAME, laa, grade.meaning, "; " + "; ".join(notes) if notes else "")
        return self.result(
            segments=segments,
            measurements=measurements,
            classifications=[Classification(codes.PULMONARY_EMPHYSEMA, grade)],
        )


def _laa(hu: torch.Tensor, mask: torch.Tensor) -> float:
    count = int(torch.count_nonzero(mask))
    return 100.0 * int(torch.count_nonzero(mask & (hu < LAA_THRESHOLD_HU))) / count if count else float("nan")


@register_builtin(NAME, CtLungsPipeline.description)
def create(settings: PipelineSettings | None = None) -> CtLungsPipeline:
    return CtLungsPipeline(settings)
