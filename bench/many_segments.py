"""A 104-segment bundle for the benchmarks, in the layout of the Model Zoo's wholeBody_ct_segmentation.

Its network (in the bundle's own ``scripts/``) cuts the body (scaled intensity above a threshold) into a grid of
blocks and gives each block one of 104 labels, so every label is a compact organ-like region; it has no weights
and needs the whole volume at once, so the pipeline overrides the bundle's sliding window with a
``SimpleInferer``. The bundle's own chain is kept: Orientation, Spacing, intensity scaling, softmax, argmax
before a nearest-neighbour ``Invertd`` onto the series' grid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

SEGMENTS = 104
NETWORK_SOURCE = '''"""Organ-like blocks: the body cut into a grid of cells, each cell holding body one of the labels."""

import torch


class Organs(torch.nn.Module):
    def __init__(self, out_channels: int = 105, cells=(4, 6, 6), threshold: float = 0.25) -> None:
        super().__init__()
        self.out_channels, self.cells, self.threshold = out_channels, tuple(cells), threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        index = [torch.arange(n, device=x.device) * c // n for n, c in zip(size, self.cells)]
        cell = (index[0][:, None, None] * self.cells[1] + index[1][None, :, None]) * self.cells[2] + index[2][None, None, :]
        body = x[:, 0] > self.threshold
        cells = cell.expand_as(body)
        occupied = torch.unique(cells[body])
        rank = torch.zeros(int(cell.max()) + 1, dtype=torch.long, device=x.device)
        rank[occupied] = torch.arange(len(occupied), device=x.device) % (self.out_channels - 1) + 1
        label = torch.where(body, rank[cells], 0)
        logits = torch.zeros((x.shape[0], self.out_channels, *size), dtype=x.dtype, device=x.device)
        return logits.scatter_(1, label[:, None], 10.0)
'''

OVERRIDES: dict[str, Any] = {"displayable_configs#highres": False, "inferer": {"_target_": "SimpleInferer"}}
"""The bundle's 3 mm variant (as wholeBody's own switch picks it), the whole volume at once."""


def _names() -> dict[str, str]:
    return {"0": "background", **{str(value): f"organ {value}" for value in range(1, SEGMENTS + 1)}}


def _config() -> dict[str, Any]:
    image = "@image_key"
    return {
        "displayable_configs": {"highres": True, "sw_overlap": 0.25, "sw_batch_size": 1},
        "imports": ["$import glob", "$import numpy", "$import os"],
        "bundle_root": ".",
        "image_key": "image",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "pixdim": "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]",
        "modelname": "$'model.pt' if @displayable_configs#highres else 'model_lowres.pt'",
        "network_def": {"_target_": "scripts.organs.Organs", "out_channels": SEGMENTS + 1},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": image}, {"_target_": "EnsureTyped", "keys": image},
            {"_target_": "EnsureChannelFirstd", "keys": image},
            {"_target_": "Orientationd", "keys": image, "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": image, "pixdim": "@pixdim", "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": image, "a_min": -1000, "a_max": 1000, "b_min": 0.0,
             "b_max": 1.0, "clip": True}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96],
                    "sw_batch_size": "@displayable_configs#sw_batch_size",
                    "overlap": "@displayable_configs#sw_overlap", "padding_mode": "replicate", "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": image,
             "nearest_interp": True, "to_tensor": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"}]},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/' + @modelname",
                             "load_dict": {"model": "@network"}},
    }


def write_bundle(bundle_dir: Path) -> Path:
    """Write the bundle (configs, its scripts package, empty weight files) into ``bundle_dir``."""
    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "models").mkdir(exist_ok=True)
    (bundle_dir / "scripts").mkdir(exist_ok=True)
    metadata = {
        "version": "0.1.0", "monai_version": "1.4.0", "name": f"{SEGMENTS} organ-like blocks",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": SEGMENTS + 1,
                                 "channel_def": _names()}}},
    }
    (bundle_dir / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (bundle_dir / "configs" / "inference.json").write_text(json.dumps(_config(), indent=2))
    (bundle_dir / "scripts" / "__init__.py").write_text("")
    (bundle_dir / "scripts" / "organs.py").write_text(NETWORK_SOURCE)
    for name in ("model.pt", "model_lowres.pt"):
        torch.save({}, bundle_dir / "models" / name)
    return bundle_dir
