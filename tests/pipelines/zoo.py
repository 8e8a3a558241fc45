"""MONAI bundles built by the tests in the layouts and styles of published Model Zoo bundles.

Each builder writes ``configs/metadata.json``, ``configs/inference.json|yaml`` shaped like its published
namesake (``@image_key`` references, ``$@bundle_root + ...`` checkpoint paths, CheckpointLoader at the top or
among handlers, ``scripts/`` packages, ``channel_def``/``label_def``), with the same component choices at a
tiny size, and weights chosen so the output is known:

* ``threshold`` networks mark voxels whose scaled intensity is above a threshold;
* ``band`` networks give label ``round(x / step)`` (clipped to the channels): intensity bands as classes;
* ``constant`` networks (all weights zero, one bias highest) give one known label everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.networks.nets import UNet

METADATA_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


def transform(target: str, **kwargs: Any) -> dict[str, Any]:
    return {"_target_": target, **kwargs}


def metadata(name: str, outputs: dict[str, Any], *, inputs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """metadata.json as the Model Zoo writes it."""
    return {
        "schema": METADATA_SCHEMA, "version": "0.5.9", "changelog": {"0.5.9": "built by the pacsnode tests"},
        "monai_version": "1.4.0", "pytorch_version": "2.4.0", "numpy_version": "1.24.4",
        "optional_packages_version": {"nibabel": "5.2.1", "pytorch-ignite": "0.4.11"},
        "name": name, "task": "test", "description": "built by the pacsnode tests", "authors": "pacsnode",
        "copyright": "pacsnode",
        "network_data_format": {
            "inputs": inputs or {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                                           "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", **outputs}},
        },
        **extra,
    }


def write(bundle_dir: Path, meta: dict[str, Any], config: dict[str, Any], *, fmt: str = "json",
          weights: dict[str, dict[str, torch.Tensor]] | None = None, scripts: dict[str, str] | None = None) -> Path:
    """Write a bundle folder: configs, weights under ``models/`` and the bundle's own Python files."""
    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "models").mkdir(exist_ok=True)
    (bundle_dir / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    if fmt == "yaml":
        (bundle_dir / "configs" / "inference.yaml").write_text("---\n" + yaml.safe_dump(config, sort_keys=False))
    else:
        (bundle_dir / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    for name, state in (weights or {}).items():
        torch.save(state, bundle_dir / "models" / name)
    for relative, source in (scripts or {}).items():
        path = bundle_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return bundle_dir


def known_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state with every weight and bias zero and every normalisation the identity."""
    state = {name: torch.zeros_like(value) for name, value in module.state_dict().items()}
    norms = (torch.nn.BatchNorm3d, torch.nn.InstanceNorm3d, torch.nn.GroupNorm, torch.nn.LayerNorm)
    for name, child in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(child, norms) and getattr(child, "weight", None) is not None:
            state[prefix + "weight"] = torch.ones_like(state[prefix + "weight"])
        if isinstance(child, torch.nn.BatchNorm3d):
            state[prefix + "running_var"] = torch.ones_like(state[prefix + "running_var"])
        if isinstance(child, torch.nn.PReLU):
            state[prefix + "weight"] = torch.full_like(state[prefix + "weight"], 0.25)
    return state


def inference_config(network_def: dict[str, Any], preprocessing: list[dict[str, Any]],
                     postprocessing: list[dict[str, Any]], inferer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An inference config in the shape of spleen_ct_segmentation's, with ``LoadImaged``/``SaveImaged`` keyed by
    ``@image_key`` and a top-level CheckpointLoader at ``$@bundle_root + '/models/model.pt'``."""
    return {
        "imports": ["$import glob", "$import numpy", "$import os"],
        "bundle_root": ".",
        "image_key": "image",
        "output_dir": "$@bundle_root + '/eval'",
        "output_ext": ".nii.gz",
        "output_dtype": "$numpy.float32",
        "output_postfix": "trans",
        "separate_folder": True,
        "load_pretrain": True,
        "dataset_dir": "/workspace/data/Task09_Spleen",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            transform("LoadImaged", keys="@image_key"), *preprocessing]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 4},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": [
            *postprocessing,
            transform("SaveImaged", keys="pred", output_dir="@output_dir", output_ext="@output_ext",
                      output_dtype="@output_dtype", output_postfix="@output_postfix",
                      separate_folder="@separate_folder")]},
        "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": True},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}},
        "initialize": ["$monai.utils.set_determinism(seed=123)",
                       "$@checkpointloader(@evaluator) if @load_pretrain else None"],
        "run": ["$@evaluator.run()"],
        **extra,
    }


def ct_preprocessing(pixdim: list[float] | None, a_min: float, a_max: float) -> list[dict[str, Any]]:
    """spleen_ct_segmentation's chain: channel first, RAS, resampling, intensity window to 0..1."""
    chain = [transform("EnsureChannelFirstd", keys="@image_key"),
             transform("Orientationd", keys="@image_key", axcodes="RAS")]
    if pixdim:
        chain.append(transform("Spacingd", keys="@image_key", pixdim=pixdim, mode="bilinear"))
    chain += [transform("ScaleIntensityRanged", keys="@image_key", a_min=a_min, a_max=a_max, b_min=0, b_max=1, clip=True),
              transform("EnsureTyped", keys="@image_key")]
    return chain


def softmax_invert_argmax(nearest: bool = False) -> list[dict[str, Any]]:
    """spleen's postprocessing: probabilities inverted onto the input grid, then the argmax."""
    return [transform("Activationsd", keys="pred", softmax=True),
            transform("Invertd", keys="pred", transform="@preprocessing", orig_keys="@image_key",
                      nearest_interp=nearest, to_tensor=True),
            transform("AsDiscreted", keys="pred", argmax=True)]


def threshold_unet_state(threshold: float) -> dict[str, torch.Tensor]:
    """A MONAI UNet (channels 4, 8; one stride-2 level; no residual units) marking scaled intensity above
    ``threshold``: the first convolution passes the intensity at stride 2, the deeper level gives zero, and
    the transposed convolution upsamples by repetition into two opposite logits."""
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0,
                norm="batch")
    state = known_state(unet)
    state["model.0.conv.weight"][0, 0, 1, 1, 1] = 1.0
    state["model.2.conv.weight"][0, 1, 1:, 1:, 1:] = 10.0
    state["model.2.conv.weight"][0, 0, 1:, 1:, 1:] = -10.0
    state["model.2.conv.bias"][:] = torch.tensor([10.0 * threshold, -10.0 * threshold])
    return state


def expected_unet(hu: np.ndarray, threshold_hu: float) -> np.ndarray:
    """What ``threshold_unet_state`` marks on a ``[k, j, i]`` grid of an axial LPS series (even sizes), run on
    the same grid in RAS: the threshold taken at every other voxel of the RAS grid, repeated to its neighbour."""
    ras = (hu > threshold_hu)[:, ::-1, ::-1]
    sampled = ras[::2, ::2, ::2]
    repeated = sampled.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    return repeated[:, ::-1, ::-1]


UNET_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
            "strides": [2], "num_res_units": 0, "norm": "batch"}
SPLEEN_WINDOW = (-57.0, 164.0)


def spleen(bundle_dir: Path, *, threshold_hu: float = 0.0, pixdim: list[float] | None = None,
           roi_size: list[int] | None = None) -> Path:
    """spleen_ct_segmentation's layout with a UNet marking HU above ``threshold_hu`` (as channel 'spleen')."""
    a_min, a_max = SPLEEN_WINDOW
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": roi_size or [32, 32, 16], "sw_batch_size": 4,
               "overlap": 0.5}
    config = inference_config(UNET_DEF, ct_preprocessing(pixdim or [5.0, 5.0, 10.0], a_min, a_max),
                              softmax_invert_argmax(), inferer)
    meta = metadata("Spleen CT segmentation", {"num_channels": 2, "channel_def": {"0": "background", "1": "spleen"}})
    state = threshold_unet_state((threshold_hu - a_min) / (a_max - a_min))
    return write(bundle_dir, meta, config, weights={"model.pt": state})


def threshold_conv() -> torch.nn.Conv3d:
    """1x1x1 conv with 2 channels; channel 1 wins where the intensity scaled from -1000..1000 to -1..1 is above
    -0.5 (HU above -500)."""
    conv = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([-10.0, 10.0]).reshape(2, 1, 1, 1, 1)
        conv.bias[:] = torch.tensor([-5.0, 5.0])
    return conv


SEGMENT_THRESHOLD_HU = -500.0


def pointwise(bundle_dir: Path, *, pixdim: list[float] | None = None, roi_size: list[int] | None = None,
              torchscript: bool = False, fmt: str = "json") -> Path:
    """spleen's layout with a 1x1x1 convolution marking HU above -500 (channel 'dense tissue'): exact on any
    grid, for geometry checks. As TorchScript, only ``models/model.ts`` is shipped."""
    chain = [transform("EnsureChannelFirstd", keys="@image_key"), transform("Orientationd", keys="@image_key", axcodes="RAS")]
    if pixdim:
        chain.append(transform("Spacingd", keys="@image_key", pixdim=pixdim, mode="bilinear"))
    chain += [transform("ScaleIntensityRanged", keys="@image_key", a_min=-1000, a_max=1000, b_min=-1.0, b_max=1.0,
                        clip=True), transform("EnsureTyped", keys="@image_key")]
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": roi_size, "sw_batch_size": 4, "overlap": 0.5} \
        if roi_size else {"_target_": "SimpleInferer"}
    network_def = {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}
    config = inference_config(network_def, chain, softmax_invert_argmax(), inferer)
    meta = metadata("Dense tissue", {"num_channels": 2, "channel_def": {"0": "background", "1": "soft tissue"}})
    conv = threshold_conv()
    write(bundle_dir, meta, config, fmt=fmt, weights=None if torchscript else {"model.pt": conv.state_dict()})
    if torchscript:
        torch.jit.script(conv).save(str(bundle_dir / "models" / "model.ts"))
    return bundle_dir


def band_segresnet_state(channels: int, step: float, shift: int = 0) -> dict[str, torch.Tensor]:
    """A SegResNet (batch norm, init_filters 4) labelling intensity bands: label ``round(x / step)``, or with
    ``shift`` that plus ``shift`` for non-zero bands, clipped to the channels. The first convolution passes the
    intensity, every other convolution is zero (residual blocks are the identity, deeper levels add nothing),
    and the final 1x1 convolution scores channel c, standing for band b, as ``b*x/step - b**2/2``."""
    from monai.networks.nets import SegResNet

    net = SegResNet(spatial_dims=3, in_channels=1, out_channels=channels, init_filters=4,
                    blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), norm="batch")
    state = known_state(net)
    state["convInit.conv.weight"][0, 0, 1, 1, 1] = 1.0
    for channel in range(1, channels):
        band = channel - shift
        state["conv_final.2.conv.weight"][channel, 0] = band / step if band >= 1 else 0.0
        state["conv_final.2.conv.bias"][channel] = -(band**2) / 2.0 if band >= 1 else -1e4
    return state


def expected_bands(hu: np.ndarray, channels: int, step: float, window: tuple[float, float], shift: int = 0) -> np.ndarray:
    """The labels ``band_segresnet_state`` gives for HU values windowed to 0..1."""
    scaled = np.clip((hu - window[0]) / (window[1] - window[0]), 0.0, 1.0)
    bands = np.rint(scaled / step).astype(np.int64)
    return np.clip(np.where(bands > 0, bands + shift, 0), 0, channels - 1)


WHOLEBODY_STEP = 0.2473
"""Width of an intensity band (of 0..1); no integer HU falls on the edge between two."""
WHOLEBODY_NAMES = ["background", "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta",
                   "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right",
                   "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left"]


def wholebody(bundle_dir: Path, *, names: list[str] | None = None, step: float = WHOLEBODY_STEP) -> Path:
    """wholeBody_ct_segmentation's layout: ``displayable_configs#highres`` picks pixdim and the weights file
    (``model.pt`` or ``model_lowres.pt``); SegResNet; argmax before a nearest-neighbour Invertd; a sliding
    window with replicate padding, Gaussian blending and the batch size of ``displayable_configs``. The
    low-resolution weights shift every non-zero band up by one label, so the variant shows in the output."""
    names = names or WHOLEBODY_NAMES
    window = (-1000.0, 1000.0)
    network_def = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": len(names),
                   "init_filters": 4, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "norm": "batch",
                   "dropout_prob": 0.2}
    preprocessing = [transform("EnsureTyped", keys="@image_key"), transform("EnsureChannelFirstd", keys="@image_key"),
                     transform("Orientationd", keys="@image_key", axcodes="RAS"),
                     transform("Spacingd", keys="@image_key", pixdim="@pixdim", mode="bilinear"),
                     transform("ScaleIntensityRanged", keys="@image_key", a_min=window[0], a_max=window[1], b_min=0.0,
                               b_max=1.0, clip=True)]
    postprocessing = [transform("Activationsd", keys="pred", softmax=True), transform("AsDiscreted", keys="pred", argmax=True),
                      transform("Invertd", keys="pred", transform="@preprocessing", orig_keys="@image_key",
                                nearest_interp=True, to_tensor=True)]
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 32],
               "sw_batch_size": "@displayable_configs#sw_batch_size", "overlap": "@displayable_configs#sw_overlap",
               "padding_mode": "replicate", "mode": "gaussian",
               "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"}
    config = inference_config(network_def, preprocessing, postprocessing, inferer,
                              displayable_configs={"highres": True, "sw_overlap": 0.25, "sw_batch_size": 1},
                              pixdim="$[5.0, 5.0, 10.0] if @displayable_configs#highres else [10.0, 10.0, 20.0]",
                              modelname="$'model.pt' if @displayable_configs#highres else 'model_lowres.pt'")
    config["checkpointloader"]["load_path"] = "$@bundle_root + '/models/' + @modelname"
    meta = metadata("Whole body CT segmentation", {"num_channels": len(names),
                                                   "channel_def": {str(i): n for i, n in enumerate(names)}})
    weights = {"model.pt": band_segresnet_state(len(names), step),
               "model_lowres.pt": band_segresnet_state(len(names), step, shift=1)}
    return write(bundle_dir, meta, config, weights=weights)


def labels_pretty(name: str) -> str:
    """The segment label pacsnode makes of a channel name."""
    from pipelines.bundle.labels import pretty

    return pretty(name)


def as_json(value: Any) -> Any:
    """A config fragment with tensors and numpy values made plain."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist()))
