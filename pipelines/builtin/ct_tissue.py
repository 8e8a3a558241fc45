"""ct-tissue: body outline, bone, adipose tissue and air inside the body of any CT, by HU thresholds.

Thresholds: body above -500 HU; bone from 200 HU; adipose tissue -190 to -30 HU (Yoshizumi et al.,
Radiology 1999;211:283-286); air inside the body below -500 HU.
"""

from __future__ import annotations

import torch
from pydicom.dataset import Dataset

from pipelines import codes
from pipelines.builtin import morphology
from pipelines.builtin.base import BuiltinPipeline
from pipelines.registry import register_builtin
from pipelines.settings import PipelineSettings
from pipelines.types import Measurement, PipelineResult, Segment, UnsupportedSeries, Volume

NAME = "ct-tissue"
VERSION = "1.0.0"
BODY_MIN_HU = -500.0
BONE_MIN_HU = 200.0
FAT_HU = (-190.0, -30.0)
AIR_MAX_HU = -500.0
TABLE_OPENING_MM = 3.0
"""Opening radius that cuts thin bridges (cushions, straps) between the patient and the table."""


def accepts_ct(header: Dataset) -> str | None:
    modality = str(getattr(header, "Modality", ""))
    return None if modality == "CT" else f"modality {modality or 'missing'} is not CT"


def body_mask(hu: torch.Tensor, pixel_spacing: float) -> torch.Tensor:
    """The patient: the largest object above -500 HU after an in-plane opening (drops the table), holes filled."""
    candidate = hu > BODY_MIN_HU
    radius = morphology.radius_in_pixels(TABLE_OPENING_MM, pixel_spacing)
    opened = morphology.dilate_in_plane(morphology.erode_in_plane(candidate, radius), radius)
    patient = morphology.largest_component(opened)
    patient = morphology.dilate_in_plane(patient, radius) & candidate
    return morphology.fill_holes_in_plane(morphology.largest_component(patient))


def volume_and_mean(hu: torch.Tensor, mask: torch.Tensor, voxel_ml: float, number: int) -> list[Measurement]:
    """Volume (mL) and mean HU of one segment."""
    count = int(torch.count_nonzero(mask))
    measurements = [Measurement(codes.VOLUME, count * voxel_ml, codes.MILLILITER, number)]
    if count:  # an empty segment has no mean
        mean = float(hu[mask].double().mean())
        measurements.append(Measurement(codes.MEAN_ATTENUATION, mean, codes.HOUNSFIELD_UNIT, number))
    return measurements


def fat_mask(hu: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """Adipose tissue inside the body, without the one-voxel rim next to air where tissue and air average
    into the fat range (partial volume)."""
    air_rim = morphology.dilate_in_plane(hu < AIR_MAX_HU, 1)
    return body & (hu >= FAT_HU[0]) & (hu <= FAT_HU[1]) & ~air_rim


class CtTissuePipeline(BuiltinPipeline):
    """Body, bone, adipose tissue and air inside the body, with volume and mean HU of each."""

    name = NAME
    version = VERSION
    description = "CT: body outline (table removed, holes filled), bone, adipose tissue, air inside the body"
    memory_mb = 2048
    """Peak memory of a job on a 300-slice 512x512 CT (volume, inference, results) with a margin; the
    worker reserves it while the job runs (README: memory per pipeline)."""

    def accepts(self, header: Dataset) -> str | None:
        return accepts_ct(header)

    def infer(self, volume: Volume, hu: torch.Tensor) -> PipelineResult:
        body = body_mask(hu, min(volume.spacing[:2]))
        if not bool(body.any()):
            raise UnsupportedSeries("no body found: no object above -500 HU in the volume")
        masks = {
            "Body": body,
            "Bone": body & (hu >= BONE_MIN_HU),
            "Adipose tissue": fat_mask(hu, body),
            "Air inside the body": body & (hu < AIR_MAX_HU),
        }
        kinds = {
            "Body": (codes.ANATOMICAL_STRUCTURE, codes.ENTIRE_BODY),
            "Bone": (codes.TISSUE, codes.BONE),
            "Adipose tissue": (codes.TISSUE, codes.ADIPOSE_TISSUE),
            "Air inside the body": (codes.BODY_SUBSTANCE, codes.GAS),
        }
        segments, measurements = [], []
        for number, (label, mask) in enumerate(masks.items(), start=1):
            category, kind = kinds[label]
            segments.append(Segment(number, label, category, kind, mask.cpu().numpy()))
            measurements += volume_and_mean(hu, mask, volume.voxel_volume_ml, number)
        return self.result(segments=segments, measurements=measurements)


@register_builtin(NAME, CtTissuePipeline.description)
def create(settings: PipelineSettings | None = None) -> CtTissuePipeline:
    return CtTissuePipeline(settings)
