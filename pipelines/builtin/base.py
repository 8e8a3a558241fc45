"""What every built-in pipeline shares: its device, the volume as HU on that device, the timing of a run and
the result's identification."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from pipelines import codes
from pipelines.device import inference_mode, select_device
from pipelines.settings import PipelineSettings
from pipelines.types import PipelineResult, UnsupportedSeries, Volume

logger = logging.getLogger(__name__)


def hu_tensor(volume: Volume, device: torch.device) -> torch.Tensor:
    """The volume's values (HU for CT) as a tensor on ``device``; UnsupportedSeries for a volume too small."""
    if volume.array.ndim != 3 or min(volume.array.shape) < 2:
        raise UnsupportedSeries(f"volume of shape {volume.array.shape} is too small for 3D segmentation")
    return torch.from_numpy(np.ascontiguousarray(volume.array)).to(device)


class BuiltinPipeline:
    """A built-in pipeline on the device its settings name (``device``), else CUDA when there is one.

    ``run`` times ``infer``, which subclasses write, under inference mode with the volume's HU on the device.
    """

    name = ""
    version = ""
    description = ""

    def __init__(self, settings: PipelineSettings | None = None) -> None:
        self.device = select_device(settings.device if settings is not None else None)

    def run(self, volume: Volume) -> PipelineResult:
        started = time.perf_counter()
        with inference_mode(self.device):
            result = self.infer(volume, hu_tensor(volume, self.device))
        result.timings["inference"] = time.perf_counter() - started
        logger.info("%s ran on %s in %.2f s", self.name, self.device, result.timings["inference"])
        return result

    def infer(self, volume: Volume, hu: torch.Tensor) -> PipelineResult:
        """The result of the pipeline on ``volume`` (``hu``: its values on the pipeline's device)."""
        raise NotImplementedError

    def result(self, **parts: Any) -> PipelineResult:
        """A result named after this pipeline, made by morphological operations (thresholds and masks)."""
        return PipelineResult(
            pipeline=self.name, version=self.version, algorithm_family=codes.MORPHOLOGICAL_OPERATIONS, **parts
        )
