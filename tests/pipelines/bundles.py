"""Small MONAI bundles in the Model Zoo layout, with networks whose output is known, built by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

SEGMENT_THRESHOLD_HU = -500.0
"""The segmentation network marks voxels above this HU (after the bundle's intensity scaling)."""


class MeanClassifier(torch.nn.Module):
    """Logits from the mean intensity of the image: a known, checkable classifier."""

    def __init__(self, out_channels: int = 2) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, out_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image.mean(dim=(1, 2, 3, 4))[:, None])


def _transform(target: str, **kwargs: Any) -> dict[str, Any]:
    return {"_target_": target, **kwargs}


def _metadata(name: str) -> dict[str, Any]:
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.3.1",
        "changelog": {"0.3.1": "test bundle"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.0",
        "name": name,
        "task": "test",
        "description": "built by the pacsnode tests",
        "authors": "pacsnode",
        "copyright": "pacsnode",
        "network_data_format": {"inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 1}}},
    }


def _common(network_def: dict[str, Any], preprocessing: list[dict[str, Any]], postprocessing: list[dict[str, Any]],
            roi_size: list[int] | None) -> dict[str, Any]:
    """An inference config in the style of the Model Zoo's spleen_ct_segmentation."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            _transform("LoadImaged", keys="image"),
            _transform("EnsureChannelFirstd", keys="image"),
            *preprocessing,
            _transform("EnsureTyped", keys="image"),
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": roi_size, "sw_batch_size": 4, "overlap": 0.5}
        if roi_size else {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            *postprocessing,
            _transform("SaveImaged", keys="pred", output_dir="@output_dir", output_postfix="seg", resample=False),
        ]},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing"},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}},
        "initialize": ["$monai.utils.set_determinism(seed=123)"],
        "run": ["$@evaluator.run()"],
    }


def _write(bundle_dir: Path, name: str, config: dict[str, Any], fmt: str) -> None:
    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "models").mkdir(exist_ok=True)
    (bundle_dir / "configs" / "metadata.json").write_text(json.dumps(_metadata(name), indent=2))
    if fmt == "yaml":
        (bundle_dir / "configs" / "inference.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        (bundle_dir / "configs" / "inference.json").write_text(json.dumps(config, indent=2))


def threshold_conv() -> torch.nn.Conv3d:
    """1x1x1 conv with 2 channels; channel 1 wins where the scaled intensity is above -0.5 (HU above -500)."""
    conv = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([-10.0, 10.0]).reshape(2, 1, 1, 1, 1)
        conv.bias[:] = torch.tensor([-5.0, 5.0])
    return conv


def segmentation_bundle(bundle_dir: Path, *, pixdim: list[float] | None = None, roi_size: list[int] | None = None,
                        torchscript: bool = False, fmt: str = "json") -> Path:
    """A bundle segmenting HU > -500 (scaled -1000..1000 -> -1..1), optionally resampled to ``pixdim``."""
    preprocessing = [_transform("Orientationd", keys="image", axcodes="RAS")]
    if pixdim:
        preprocessing.append(_transform("Spacingd", keys="image", pixdim=pixdim, mode="bilinear"))
    preprocessing.append(_transform("ScaleIntensityRanged", keys="image", a_min=-1000, a_max=1000, b_min=-1.0, b_max=1.0, clip=True))
    postprocessing = [
        _transform("Activationsd", keys="pred", softmax=True),
        _transform("Invertd", keys="pred", transform="@preprocessing", orig_keys="image", meta_key_postfix="meta_dict",
                   nearest_interp=False, to_tensor=True),
        _transform("AsDiscreted", keys="pred", argmax=True),
    ]
    network_def = {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}
    _write(bundle_dir, "threshold_ct_segmentation", _common(network_def, preprocessing, postprocessing, roi_size), fmt)
    conv = threshold_conv()
    if torchscript:
        torch.jit.script(conv).save(str(bundle_dir / "models" / "model.ts"))
    else:
        torch.save(conv.state_dict(), bundle_dir / "models" / "model.pt")
    return bundle_dir


def classification_bundle(bundle_dir: Path, weight: float, bias: float) -> Path:
    """A bundle classifying by mean scaled intensity: logits (w*m + b, -(w*m + b))."""
    preprocessing = [_transform("ScaleIntensityRanged", keys="image", a_min=-1000, a_max=1000, b_min=-1.0, b_max=1.0, clip=True)]
    postprocessing = [_transform("Activationsd", keys="pred", softmax=True)]
    network_def = {"_target_": "tests.pipelines.bundles.MeanClassifier", "out_channels": 2}
    config = _common(network_def, preprocessing, postprocessing, None)
    config["postprocessing"]["transforms"] = postprocessing  # a classifier saves nothing
    _write(bundle_dir, "mean_intensity_classification", config, "json")
    model = MeanClassifier(2)
    with torch.no_grad():
        model.linear.weight[:] = torch.tensor([[weight], [-weight]])
        model.linear.bias[:] = torch.tensor([bias, -bias])
    torch.save(model.state_dict(), bundle_dir / "models" / "model.pt")
    return bundle_dir
