"""ct-lung-cysts: air-filled spaces in the lungs (bullae, cysts) of 1 mL and more, found by density.

The lungs are found as in ct-lungs (air inside the body, airway removed). Each slice's lung density is
averaged over 3 x 3 pixels of lung only (noise down, lung edges untouched). An air space is a connected
region of that averaged density below -950 HU (the LAA-950 threshold), grown to its half-way boundary: where
the averaged density crosses the middle between the air spaces' median density and the lung's. Spaces
smaller than ``MIN_CYST_ML`` are left out, and so are elongated ones (spread along their longest axis more
than ``MAX_ELONGATION`` times their shortest): bronchi that a coarse grid cuts off from the trachea. Each space
becomes a finding with its region (a segment), centre, bounding box, volume and mean density; a threshold
method gives no probability.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset
from scipy import ndimage

from pipelines import codes
from pipelines.builtin import morphology
from pipelines.builtin.base import BuiltinPipeline
from pipelines.builtin.ct_lungs import accepts_chest_ct, lung_air
from pipelines.builtin.ct_tissue import volume_and_mean
from pipelines.registry import register_builtin
from pipelines.settings import PipelineSettings
from pipelines.types import Finding, PipelineResult, Segment, Volume, box_of_voxels

logger = logging.getLogger(__name__)

NAME = "ct-lung-cysts"
VERSION = "1.0.0"
SEED_MAX_HU = -950.0
MIN_CYST_ML = 1.0
MAX_ELONGATION = 2.5
SMOOTHING_PIXELS = 3
CYST = codes.CYST
LABEL = "Lung air cyst"


def lung_mean(hu: torch.Tensor, lungs: torch.Tensor) -> torch.Tensor:
    """Each lung voxel's mean HU over the lung voxels of its in-plane 3 x 3 neighbourhood (0 elsewhere)."""
    weight = lungs.float()[:, None]
    pad = SMOOTHING_PIXELS // 2
    total = F.avg_pool2d(hu.float()[:, None] * weight, SMOOTHING_PIXELS, stride=1, padding=pad)
    count = F.avg_pool2d(weight, SMOOTHING_PIXELS, stride=1, padding=pad)
    return torch.where(lungs, total[:, 0] / count[:, 0].clamp_min(1e-6), torch.zeros_like(total[:, 0]))


def elongation(ijk: np.ndarray, affine: np.ndarray) -> float:
    """How much longer a region is than wide: the ratio of its largest to its smallest spread (in mm)."""
    if len(ijk) < 4:
        return float("inf")
    spread = np.linalg.eigvalsh(np.cov(affine[:3, :3] @ ijk.T.astype(float)))
    return float(np.sqrt(spread[-1] / max(spread[0], 1e-9)))


def air_spaces(hu: torch.Tensor, lungs: torch.Tensor, volume: Volume) -> tuple[np.ndarray, int]:
    """A label map of the round air spaces of ``MIN_CYST_ML`` and more (1..n, largest first) and n."""
    smooth = lung_mean(hu, lungs)
    seeds = lungs & (smooth < SEED_MAX_HU)
    if not bool(seeds.any()):
        return np.zeros(tuple(hu.shape), np.uint16), 0
    edge = (float(smooth[seeds].median()) + float(smooth[lungs].median())) / 2
    grown, count = morphology.label_components(lungs & (smooth < edge))
    sizes = morphology.component_sizes(grown, count)
    seeded = torch.zeros(count + 1, dtype=torch.bool, device=hu.device)
    seeded[torch.unique(grown[seeds]).long()] = True
    seeded[0] = False
    labels = grown.cpu().numpy()
    candidates = [int(n) for n in torch.nonzero(seeded & (sizes * volume.voxel_volume_ml >= MIN_CYST_ML)).flatten()]
    boxes = ndimage.find_objects(labels, max_label=max(candidates, default=0))
    kept = []
    for n in candidates:
        k, j, i = np.nonzero(labels[boxes[n - 1]] == n)
        offset = [boxes[n - 1][2].start, boxes[n - 1][1].start, boxes[n - 1][0].start]
        if elongation(np.stack([i, j, k], axis=1) + offset, volume.affine) <= MAX_ELONGATION:
            kept.append(n)
    kept.sort(key=lambda n: -int(sizes[n]))
    relabel = np.zeros(count + 1, np.uint16)
    relabel[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
    return relabel[labels], len(kept)


def cyst_finding(volume: Volume, segment: Segment) -> Finding:
    """The finding of one air space: its segment, centroid and bounding box in patient coordinates."""
    k, j, i = np.nonzero(segment.cropped)
    offset = np.array([segment.box[2].start, segment.box[1].start, segment.box[0].start], float)
    ijk = np.stack([i, j, k], axis=1) + offset
    low, high = ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5  # the voxels' outer faces
    return Finding(
        CYST,
        segment.label,
        point=volume.to_patient(ijk.mean(axis=0)),
        box=box_of_voxels(volume, low, high),
        segment_number=segment.number,  # the segment's measurements are reported with the finding
    )


class CtLungCystsPipeline(BuiltinPipeline):
    """Air-filled spaces in the lungs as findings with their regions, centres, boxes and volumes."""

    name = NAME
    version = VERSION
    description = "chest CT: air-filled spaces in the lungs (bullae, cysts) of 1 mL and more, as located findings"

    def accepts(self, header: Dataset) -> str | None:
        return accepts_chest_ct(header)

    def infer(self, volume: Volume, hu: torch.Tensor) -> PipelineResult:
        air, airway = lung_air(hu, volume)
        lungs = air & ~airway
        labels, count = air_spaces(hu, lungs, volume)
        kinds = {n: (f"{LABEL} {n}", codes.MORPHOLOGICALLY_ALTERED_STRUCTURE, CYST) for n in range(1, count + 1)}
        segments = Segment.from_label_map(labels, kinds)
        measurements = []
        for segment in segments:
            mask = torch.zeros_like(lungs)
            mask[segment.box] = torch.from_numpy(segment.cropped).to(self.device)
            measurements += volume_and_mean(hu, mask, volume.voxel_volume_ml, segment.number)
        logger.info("%s: %d air spaces", NAME, len(segments))
        return self.result(
            segments=segments,
            measurements=measurements,
            findings=[cyst_finding(volume, segment) for segment in segments],
            parameters={
                "seed below": f"{SEED_MAX_HU:g} HU",
                "smallest": f"{MIN_CYST_ML:g} mL",
                "most elongated": f"{MAX_ELONGATION:g}",
            },
        )


@register_builtin(NAME, CtLungCystsPipeline.description)
def create(settings: PipelineSettings | None = None) -> CtLungCystsPipeline:
    return CtLungCystsPipeline(settings)
