"""Model Zoo style bundles that ship their own ``scripts/`` package: renal UNesT (its network class in
``scripts.networks.unest``), paediatric abdominal CT (``$import scripts.monai_utils``, weights named by a
CheckpointLoader among the handlers) and lung nodule detection (``scripts.detection_inferer``)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.pipelines import zoo

UNEST_SOURCE = '''"""The network of this bundle, under the class path its config names."""

import torch


class UNesT(torch.nn.Module):
    """Intensity bands: a 1x1x1 convolution of the {sign} intensity (its weights make the bands)."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv({sign_op}x)
'''

RENAL_NAMES = {"0": "background", "1": "kidney cortex", "2": "medulla", "3": "pelvicalyceal system"}


def band_conv_state(channels: int, step: float) -> dict[str, torch.Tensor]:
    """A 1x1x1 convolution labelling ``round(x / step)`` (clipped to the channels)."""
    weight = torch.zeros(channels, 1, 1, 1, 1)
    bias = torch.zeros(channels)
    for channel in range(channels):
        weight[channel] = channel / step
        bias[channel] = -(channel**2) / 2.0
    return {"conv.weight": weight, "conv.bias": bias}


def renal_unest(bundle_dir: Path, *, negate: bool = False, step: float = 0.25) -> Path:
    """renalStructures_UNEST_segmentation's layout: ``scripts.networks.unest.UNesT``, an absolute
    ``bundle_root`` from its authors' machine, CheckpointLoader among the handlers with ``strict: "True"``, an
    ``evaluating`` list instead of ``run``, EnsureChannelFirstd with ``channel_dim: no_channel``. ``negate``
    makes this bundle's own UNesT class band the negated intensity (two bundles, one class path, two codes)."""
    sign_op = "-" if negate else ""
    preprocessing = zoo.ct_preprocessing([5.0, 5.0, 10.0], -175, 250)
    preprocessing[0] = zoo.transform("EnsureChannelFirstd", keys="image", channel_dim="no_channel")
    config = zoo.inference_config({"_target_": "scripts.networks.unest.UNesT", "in_channels": 1, "out_channels": 4},
                              preprocessing, zoo.softmax_invert_argmax(),
                              {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4,
                               "overlap": 0.5},
                              bundle_root="/models/renalStructures_UNEST_segmentation",
                              evaluating=["$setattr(torch.backends.cudnn, 'benchmark', True)", "$@evaluator.run()"])
    config["preprocessing"]["transforms"][0]["keys"] = "image"
    for key in ("checkpointloader", "initialize", "run", "image_key"):
        config.pop(key)
    for entry in config["preprocessing"]["transforms"]:
        entry["keys"] = "image"
    config["postprocessing"]["transforms"][1]["orig_keys"] = "image"
    config["handlers"] = [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                           "load_dict": {"model": "@network"}, "strict": "True"},
                          {"_target_": "StatsHandler", "iteration_log": False}]
    meta = zoo.metadata("Renal structures UNEST segmentation", {"num_channels": 4, "channel_def": RENAL_NAMES},
                    optional_packages_version={"nibabel": "5.2.1", "einops": "0.7.0"})
    scripts = {"scripts/__init__.py": "", "scripts/networks/__init__.py": "",
               "scripts/networks/unest.py": UNEST_SOURCE.replace("{sign}", "negated" if negate else "plain")
               .replace("{sign_op}", sign_op)}
    return zoo.write(bundle_dir, meta, config, weights={"model.pt": band_conv_state(4, step)}, scripts=scripts)


PEDIATRIC_SCRIPTS = {
    "scripts/__init__.py": "import scripts.utils\n",
    "scripts/utils.py": '"""Helpers of the paediatric bundle."""\n\nBUNDLE = "pediatric"\n',
    "scripts/monai_utils.py": '"""MONAI helpers of the paediatric bundle."""\n\nfrom scripts.utils import BUNDLE\n',
}


def pediatric(bundle_dir: Path, *, constant_label: int = 1) -> Path:
    """pediatric_abdominal_ct_segmentation's layout (YAML): ``$import scripts.monai_utils``, a ``labels``
    dictionary in the config, outputs named by ``label_def``, CropForegroundd in the preprocessing, DynUNet,
    and its weights at ``models/dynunet_FT.pt`` as named by a CheckpointLoader among the handlers. All weights
    zero but the output bias of ``constant_label``: that label on the cropped foreground, inverted back
    (zero outside it)."""
    from monai.networks.nets import DynUNet

    preprocessing = zoo.ct_preprocessing([5.0, 5.0, 10.0], -250, 400)
    preprocessing.insert(-1, zoo.transform("CropForegroundd", keys=["@image_key"], source_key="@image_key",
                                       mode=["minimum"]))
    preprocessing.append(zoo.transform("CastToTyped", keys="@image_key", dtype="$torch.float32"))
    network_def = {"_target_": "monai.networks.nets.DynUNet", "spatial_dims": 3, "in_channels": "@input_channels",
                   "out_channels": "@output_channels", "kernel_size": [3, 3, 3], "strides": [1, 2, [2, 2, 1]],
                   "upsample_kernel_size": [2, [2, 2, 1]], "filters": [8, 16, 16], "norm_name": "instance",
                   "deep_supervision": False, "res_block": True}
    config = zoo.inference_config(network_def, preprocessing, zoo.softmax_invert_argmax(),
                              {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 32], "sw_batch_size": 4,
                               "overlap": 0.75},
                              workflow_type="inference", input_channels=1, output_classes=4, output_channels=4,
                              labels={"background": 0, "liver": 1, "spleen": 2, "pancreas": 3})
    config["imports"] = ["$import glob", "$import os", "$import scripts.monai_utils"]
    config.pop("checkpointloader")
    config["initialize"] = ["$setattr(torch.backends.cudnn, 'benchmark', True)"]
    config["handlers"] = [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/dynunet_FT.pt'",
                           "load_dict": {"model": "@network"}}, {"_target_": "StatsHandler", "iteration_log": False}]
    meta = zoo.metadata("CT-Ped-Abdominal-Seg", {"num_channels": 4, "label_def": {
        "0": "background", "1": "liver", "2": "spleen", "3": "pancreas"}})
    net = DynUNet(spatial_dims=3, in_channels=1, out_channels=4, kernel_size=[3, 3, 3], strides=[1, 2, [2, 2, 1]],
                  upsample_kernel_size=[2, [2, 2, 1]], filters=[8, 16, 16], norm_name="instance", deep_supervision=False,
                  res_block=True)
    state = zoo.known_state(net)
    state["output_block.conv.conv.bias"][constant_label] = 5.0
    return zoo.write(bundle_dir, meta, config, fmt="yaml", weights={"dynunet_FT.pt": state}, scripts=PEDIATRIC_SCRIPTS)


DETECTION_SCRIPTS = {
    "scripts/__init__.py": "",
    "scripts/networks.py": '''"""Feature maps for this bundle's RetinaNet: the image, average-pooled, as every channel."""

import torch


class IntensityFeatures(torch.nn.Module):
    def __init__(self, channels: int = 8, stride: int = 2) -> None:
        super().__init__()
        self.out_channels, self.stride = channels, stride

    def forward(self, images: torch.Tensor) -> dict:
        pooled = torch.nn.functional.avg_pool3d(images, self.stride)
        return {"0": pooled.repeat(1, self.out_channels, 1, 1, 1)}
''',
    "scripts/detection_inferer.py": '''"""The inferer of this detection bundle: the detector on a batch, with sliding windows for large images."""

import math

from monai.inferers.inferer import Inferer


class RetinaNetInferer(Inferer):
    def __init__(self, detector, force_sliding_window: bool = False) -> None:
        Inferer.__init__(self)
        self.detector = detector
        self.force_sliding_window = force_sliding_window

    def __call__(self, inputs, network, *args, **kwargs):
        self.detector.network = network
        self.detector.training = network.training
        window = getattr(self.detector.inferer, "roi_size", None)
        large = window is not None and any(image[0].numel() >= math.prod(window) for image in inputs)
        return self.detector(inputs, *args, use_inferer=self.force_sliding_window or large, **kwargs)
''',
}

ANCHOR_VOXELS = [4, 4, 2]
"""The one anchor shape of the detection bundle (voxels of its input grid); boxes are anchors (no regression)."""


def retinanet_state(network: torch.nn.Module, threshold: float) -> dict[str, torch.Tensor]:
    """RetinaNet heads passing the features through (identity convolutions, group norms, ReLU) and scoring
    ``4 * (feature - threshold)``; box regression zero, so each box is its anchor."""
    state = zoo.known_state(network)
    channels = network.feature_map_channels
    for index in range(0, 12, 3):
        weight = state[f"classification_head.conv.{index}.weight"]
        for channel in range(channels):
            weight[channel, channel, 1, 1, 1] = 1.0
    state["classification_head.cls_logits.weight"][0, 0, 1, 1, 1] = 4.0
    state["classification_head.cls_logits.bias"][0] = -4.0 * threshold
    return state


def lung_nodule(bundle_dir: Path, *, threshold: float = 1.0) -> Path:
    """lung_nodule_ct_detection's layout: two LoadImaged with ``_disabled_`` flags, ``scripts.detection_inferer``'s
    RetinaNetInferer around a RetinaNetDetector whose box selection and window are set by ``detector_ops`` (the
    evaluator's ``_requires_``), and postprocessing that clips boxes, converts them to world coordinates (LPS)
    and to centre-size form. The network scores how much brighter than its surroundings a place is."""
    from monai.apps.detection.networks.retinanet_network import RetinaNet

    image = "@image_key"
    preprocessing = [
        zoo.transform("LoadImaged", keys=image, _disabled_="@whether_raw_luna16"),
        zoo.transform("LoadImaged", keys=image, reader="itkreader", affine_lps_to_ras=True,
                  _disabled_="@whether_resampled_luna16"),
        zoo.transform("EnsureChannelFirstd", keys=image), zoo.transform("Orientationd", keys=image, axcodes="RAS"),
        zoo.transform("Spacingd", keys=image, pixdim=[0.703125, 0.703125, 1.25], _disabled_="@whether_resampled_luna16"),
        zoo.transform("ScaleIntensityRanged", keys=image, a_min=-1024.0, a_max=300.0, b_min=0.0, b_max=1.0, clip=True),
        zoo.transform("EnsureTyped", keys=image)]
    postprocessing = [
        zoo.transform("ClipBoxToImaged", box_keys="box", label_keys="label", box_ref_image_keys=image, remove_empty=True),
        zoo.transform("AffineBoxToWorldCoordinated", box_keys="box", box_ref_image_keys=image, affine_lps_to_ras=True),
        zoo.transform("ConvertBoxModed", box_keys="box", src_mode="xyzxyz", dst_mode="cccwhd"),
        zoo.transform("DeleteItemsd", keys=[image])]
    config = zoo.inference_config(
        {"_target_": "RetinaNet", "spatial_dims": "@spatial_dims", "num_classes": "@num_classes", "num_anchors": 1,
         "feature_extractor": "@feature_extractor", "size_divisible": "@size_divisible", "use_list_output": False},
        [], [], {"_target_": "scripts.detection_inferer.RetinaNetInferer", "detector": "@detector",
                 "force_sliding_window": "@force_sliding_window"},
        whether_raw_luna16=False, whether_resampled_luna16="$(not @whether_raw_luna16)", amp=True,
        spatial_dims=3, num_classes=1, force_sliding_window=False, size_divisible=[8, 8, 4],
        infer_patch_size=[64, 64, 32],
        anchor_generator={"_target_": "monai.apps.detection.utils.anchor_utils.AnchorGeneratorWithAnchorShape",
                          "feature_map_scales": [2], "base_anchor_shapes": [ANCHOR_VOXELS]},
        feature_extractor={"_target_": "scripts.networks.IntensityFeatures", "channels": 8, "stride": 2},
        detector={"_target_": "RetinaNetDetector", "network": "@network", "anchor_generator": "@anchor_generator",
                  "debug": False, "spatial_dims": "@spatial_dims", "num_classes": "@num_classes",
                  "size_divisible": "@size_divisible"},
        detector_ops=["$@detector.set_target_keys(box_key='box', label_key='label')",
                      "$@detector.set_box_selector_parameters(score_thresh=0.02,topk_candidates_per_level=1000,"
                      "nms_thresh=0.22,detections_per_img=300)",
                      "$@detector.set_sliding_window_inferer(roi_size=@infer_patch_size,overlap=0.25,sw_batch_size=1,"
                      "mode='constant',device='cpu')"])
    config["preprocessing"]["transforms"] = preprocessing
    config["postprocessing"]["transforms"] = postprocessing
    config["evaluator"] = {"_target_": "scripts.evaluator.DetectionEvaluator", "_requires_": "@detector_ops",
                           "device": "@device", "val_data_loader": "@dataloader", "network": "@network",
                           "inferer": "@inferer", "val_handlers": "@handlers", "amp": "@amp"}
    meta = zoo.metadata("Lung nodule CT detection", {"num_channels": 1})
    meta["network_data_format"]["outputs"]["pred"] = {"type": "object", "format": "dict", "num_channels": 1}
    network = RetinaNet(spatial_dims=3, num_classes=1, num_anchors=1,
                        feature_extractor=_features_for_state(), size_divisible=[8, 8, 4])
    return zoo.write(bundle_dir, meta, config, weights={"model.pt": retinanet_state(network, threshold)},
                 scripts=DETECTION_SCRIPTS)


def _features_for_state() -> torch.nn.Module:
    """A parameterless module standing for the bundle's feature extractor while its weights are written."""
    module = torch.nn.Identity()
    module.out_channels = 8  # type: ignore[assignment]
    return module
