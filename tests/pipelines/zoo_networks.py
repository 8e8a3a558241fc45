"""Model Zoo style bundles with the published networks: Swin-UNETR (BTCV), DiNTS (pancreas), a four-channel MR
SegResNet (BraTS) and a classifier; weights chosen so the output is known (see :mod:`tests.pipelines.zoo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.pipelines.zoo import (
    as_json,
    ct_preprocessing,
    inference_config,
    known_state,
    metadata,
    softmax_invert_argmax,
    transform,
    write,
)

BTCV_NAMES = ["background", "spleen", "Right Kidney", "Left Kideny", "Gallbladder", "Esophagus", "Liver", "Stomach",
              "Aorta", "IVC", "Portal and Splenic Veins", "Pancreas", "Right adrenal gland", "Left adrenal gland"]
"""swin_unetr_btcv_segmentation's channel_def, as published (with its misspelt 'Left Kideny')."""


def swin_btcv(bundle_dir: Path, *, constant_label: int = 6) -> Path:
    """swin_unetr_btcv_segmentation's layout: SwinUNETR given ``img_size`` (which MONAI 1.6 no longer takes),
    ``checkpoint`` as its own key, LoadImaged with ITKReader. All weights zero, the output bias highest for
    ``constant_label``: that label everywhere on the grid."""
    from monai.networks.nets import SwinUNETR

    network_def = {"_target_": "SwinUNETR", "spatial_dims": 3, "img_size": 64, "in_channels": 1, "out_channels": 14,
                   "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "use_checkpoint": False}
    config = inference_config(network_def, ct_preprocessing([10.0, 10.0, 10.0], -175, 250), softmax_invert_argmax(),
                              {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4,
                               "overlap": 0.5},
                              checkpoint="$@bundle_root + '/models/model.pt'")
    config["preprocessing"]["transforms"][0]["reader"] = "ITKReader"
    config["checkpointloader"]["load_path"] = "$@checkpoint"
    meta = metadata("Swin UNETR BTCV segmentation",
                    {"num_channels": 14, "channel_def": {str(i): name for i, name in enumerate(BTCV_NAMES)}},
                    optional_packages_version={"nibabel": "5.2.1", "pytorch-ignite": "0.4.11", "einops": "0.7.0"})
    net = SwinUNETR(spatial_dims=3, in_channels=1, out_channels=14, feature_size=12, depths=(1, 1, 1, 1),
                    num_heads=(1, 1, 1, 1), use_checkpoint=False)
    state = known_state(net)
    state["out.conv.conv.bias"][constant_label] = 5.0
    return write(bundle_dir, meta, config, weights={"model.pt": state})


def dints_architecture() -> dict[str, np.ndarray]:
    """A decoded DiNTS topology (numpy arrays, as the published search_code file holds them)."""
    from monai.networks.nets import TopologySearch

    search = TopologySearch(channel_mul=0.25, num_blocks=2, num_depths=2, use_downsample=True, device="cpu")
    node_a, arch_code_a, arch_code_c, arch_code_a_max = search.decode()
    return {"node_a": np.asarray(node_a), "arch_code_a": np.asarray(arch_code_a),
            "arch_code_a_max": np.asarray(arch_code_a_max), "arch_code_c": np.asarray(arch_code_c)}


def pancreas_dints(bundle_dir: Path, *, constant_label: int = 1) -> Path:
    """pancreas_ct_dints_segmentation's layout (YAML): the architecture loaded by the config's own
    ``torch.load(..., map_location=torch.device('cuda'))`` from ``models/search_code_18590.pt`` (numpy arrays),
    ``dints_space`` on ``torch.device('cuda')``; all weights zero but the output bias of ``constant_label``."""
    from monai.networks.nets import DiNTS, TopologyInstance

    architecture = dints_architecture()
    config = inference_config(
        {"_target_": "monai.networks.nets.DiNTS", "dints_space": "@dints_space", "in_channels": "@input_channels",
         "num_classes": "@output_classes", "use_downsample": True, "node_a": "$torch.from_numpy(@arch_ckpt['node_a'])"},
        ct_preprocessing([10.0, 10.0, 10.0], -87, 199), softmax_invert_argmax(),
        {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 4, "overlap": 0.625},
        input_channels=1, output_classes=3,
        arch_ckpt_path="$@bundle_root + '/models/search_code_18590.pt'",
        arch_ckpt="$torch.load(@arch_ckpt_path, map_location=torch.device('cuda'))",
        dints_space={"_target_": "monai.networks.nets.TopologyInstance", "channel_mul": 0.25, "num_blocks": 2,
                     "num_depths": 2, "use_downsample": True,
                     "arch_code": ["$@arch_ckpt['arch_code_a']", "$@arch_ckpt['arch_code_c']"],
                     "device": "$torch.device('cuda')"},
    )
    meta = metadata("Pancreas CT DiNTS segmentation",
                    {"num_channels": 3, "channel_def": {"0": "background", "1": "pancreas", "2": "pancreatic tumor"}})
    space = TopologyInstance(channel_mul=0.25, num_blocks=2, num_depths=2, use_downsample=True,
                             arch_code=[architecture["arch_code_a"], architecture["arch_code_c"]], device="cpu")
    net = DiNTS(dints_space=space, in_channels=1, num_classes=3, use_downsample=True,
                node_a=torch.from_numpy(architecture["node_a"]))
    state = known_state(net)
    state["stem_finals.1.bias"][constant_label] = 5.0
    write(bundle_dir, meta, config, fmt="yaml", weights={"model.pt": state})
    torch.save(architecture, bundle_dir / "models" / "search_code_18590.pt")
    return bundle_dir


DINTS_ON_CPU = {"arch_ckpt": "$torch.load(@arch_ckpt_path, map_location='cpu')",
                "dints_space#device": "$torch.device('cpu')"}
"""The overrides that run the DiNTS bundle on a host without CUDA."""

BRATS_SERIES = ["T1c", "T1", "T2", "FLAIR"]
"""brats_mri_segmentation's input channel_def, in its order."""


def brats(bundle_dir: Path, *, threshold: float = 1.0) -> Path:
    """brats_mri_segmentation's layout: four MR channels (T1c, T1, T2, FLAIR), no EnsureChannelFirstd
    (LoadImaged of four files stacks them), channel-wise NormalizeIntensityd, SegResNet with three sigmoid
    outputs (Tumor core, Whole tumor, Enhancing tumor) merged by a Lambdad into BraTS labels 1, 2 and 4.
    Output channel c is "normalised input channel c above ``threshold``": channel 0 follows T1c, channel 1 T1,
    channel 2 T2."""
    from monai.networks.nets import SegResNet

    network_def = {"_target_": "SegResNet", "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "init_filters": 4,
                   "in_channels": 4, "out_channels": 3, "dropout_prob": 0.2, "norm": "batch"}
    config = inference_config(
        network_def, [transform("NormalizeIntensityd", keys="@image_key", nonzero=True, channel_wise=True)],
        [transform("Activationsd", keys="pred", sigmoid=True),
         transform("Invertd", keys="pred", transform="@preprocessing", orig_keys="@image_key", meta_keys="pred_meta_dict",
                   nearest_interp=False, to_tensor=True),
         transform("AsDiscreted", keys="pred", threshold=0.5),
         transform("Lambdad", keys="pred", func="$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, "
                                                 "torch.where(x[[1]] > 0, 2, 0)))")],
        {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 32], "sw_batch_size": 1, "overlap": 0.5},
        amp=True, output_dtype="uint8", output_postfix="seg",
    )
    config["preprocessing"]["transforms"][0]["image_only"] = False
    inputs = {"image": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": 4,
                        "channel_def": {str(i): name for i, name in enumerate(BRATS_SERIES)}}}
    meta = metadata("BraTS MRI segmentation", {"num_channels": 3, "channel_def": {
        "0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"}}, inputs=inputs)
    net = SegResNet(spatial_dims=3, in_channels=4, out_channels=3, init_filters=4, blocks_down=(1, 2, 2, 4),
                    blocks_up=(1, 1, 1), norm="batch")
    state = known_state(net)
    for channel in range(3):
        state["convInit.conv.weight"][channel, channel, 1, 1, 1] = 1.0
        state["conv_final.2.conv.weight"][channel, channel] = 10.0
        state["conv_final.2.conv.bias"][channel] = -10.0 * threshold
    return write(bundle_dir, meta, config, weights={"model.pt": state})


BRATS_LABELS = {
    1: {"label": "Necrotic tumor core", "category": ["49755003", "SCT", "Morphologically Altered Structure"],
        "type": ["6574001", "SCT", "Necrosis"]},
    2: {"label": "Peritumoral edema", "category": ["49755003", "SCT", "Morphologically Altered Structure"],
        "type": ["79654002", "SCT", "Edema"]},
    4: {"label": "Enhancing tumor", "category": ["49755003", "SCT", "Morphologically Altered Structure"],
        "type": ["108369006", "SCT", "Neoplasm"]},
}
"""The BraTS label values the published postprocessing writes, coded (the bundle names channels, not these)."""

CLASSIFIER_SOURCE = '''"""A classifier with a known output: logits from the mean intensity of the image."""

import torch


class MeanClassifier(torch.nn.Module):
    def __init__(self, out_channels: int = 2) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, out_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image.mean(dim=(1, 2, 3, 4))[:, None])
'''


def classifier(bundle_dir: Path, weight: float, bias: float) -> Path:
    """A classification bundle (network in its own ``scripts/``): logits ``(w*m + b, -(w*m + b))`` of the
    mean ``m`` of the intensity scaled from -1000..1000 to -1..1, softmax in its postprocessing."""
    preprocessing = [transform("EnsureChannelFirstd", keys="@image_key"),
                     transform("ScaleIntensityRanged", keys="@image_key", a_min=-1000, a_max=1000, b_min=-1.0,
                               b_max=1.0, clip=True)]
    config = inference_config({"_target_": "scripts.classifier.MeanClassifier", "out_channels": 2}, preprocessing,
                              [transform("Activationsd", keys="pred", softmax=True)], {"_target_": "SimpleInferer"})
    config["postprocessing"]["transforms"] = config["postprocessing"]["transforms"][:-1]  # a classifier saves nothing
    meta = metadata("Mean intensity classification", {"num_channels": 2})
    meta["network_data_format"]["outputs"]["pred"]["format"] = "classification"
    state = {"linear.weight": torch.tensor([[weight], [-weight]]), "linear.bias": torch.tensor([bias, -bias])}
    return write(bundle_dir, meta, config, weights={"model.pt": state},
                 scripts={"scripts/__init__.py": "", "scripts/classifier.py": CLASSIFIER_SOURCE})


def config_of(bundle_dir: Path) -> dict[str, Any]:
    """The inference config a builder wrote (JSON), for tests that change one entry."""
    import json

    return as_json(json.loads((bundle_dir / "configs" / "inference.json").read_text()))
