"""MONAI bundles (Model Zoo layout) as segmentation or classification pipelines.

A bundle directory holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt`` (a state dict for ``network_def``) or ``models/model.ts`` (TorchScript). The bundle's own
``preprocessing``, ``inferer`` and ``postprocessing`` are used, with file loading and saving left out: the
volume comes in memory as a MetaTensor with the affine a file reader would give (RAS), and the prediction is
inverted back onto the volume's grid by the bundle's ``Invertd``. Labels become coded segments from the
pipeline's ``labels`` setting, for example::

    pipelines:
      - name: spleen
        bundle_dir: /models/spleen_ct_segmentation
        task: segmentation
        roi_size: [96, 96, 96]      # default: the bundle's inferer
        sw_batch_size: 4
        labels:
          1: {label: Spleen, category: ["91723000", "SCT", "Anatomical Structure"], type: ["78961009", "SCT", "Spleen"]}
      - name: nodule-class
        bundle_dir: /models/classifier
        task: classification
        labels:                      # class index -> coded finding
          0: {concept: ["87433001", "SCT", "Pulmonary emphysema"], value: ["272519000", "SCT", "Absent"]}
          1: {concept: ["87433001", "SCT", "Pulmonary emphysema"], value: ["52101004", "SCT", "Present"]}
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset

from pipelines import codes
from pipelines.codes import code_from_config
from pipelines.device import infer, select_device
from pipelines.settings import PipelineSettings
from pipelines.types import Classification, Code, Measurement, PipelineResult, Segment, UnsupportedSeries, Volume

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SKIPPED_TRANSFORMS = ("LoadImage", "SaveImage")
"""Transforms left out of the bundle's chains: the volume is in memory and results go to DICOM, not files."""
AFFINE_TOLERANCE_MM = 1e-3


class BundleError(ValueError):
    """The bundle directory or its pipeline settings cannot make a pipeline; the message says what to fix."""


def _inference_config(bundle_dir: Path) -> Path:
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        if (bundle_dir / "configs" / name).is_file():
            return bundle_dir / "configs" / name
    raise BundleError(f"{bundle_dir}: no configs/inference.json or configs/inference.yaml (Model Zoo layout expected)")


def _without_file_io(parser: ConfigParser, key: str) -> str | None:
    """Drop loading/saving transforms from the Compose config at ``key`` before it is instantiated; returns
    the data key the bundle's LoadImaged filled, if any."""
    if key not in parser:
        return None
    transforms = parser[key].get("transforms") if isinstance(parser[key], dict) else None
    if not isinstance(transforms, list):
        return None
    loaded = None
    kept = []
    for transform in transforms:
        target = str(transform.get("_target_", "")) if isinstance(transform, dict) else ""
        if "LoadImage" in target:
            keys = transform.get("keys", "image")
            loaded = keys if isinstance(keys, str) else keys[0]
        if not any(skip in target for skip in SKIPPED_TRANSFORMS):
            kept.append(transform)
    parser[key]["transforms"] = kept
    return loaded


class BundlePipeline:
    """A MONAI bundle run on one volume; the model is loaded once, when the pipeline is created."""

    def __init__(
        self,
        name: str,
        bundle_dir: Path,
        task: str,
        labels: dict[int, dict[str, Any]],
        modalities: list[str],
        roi_size: list[int] | None = None,
        sw_batch_size: int | None = None,
        device: str | None = None,
        amp: bool = True,
    ) -> None:
        self.name = name
        self.bundle_dir = Path(bundle_dir).resolve()
        self.task = task
        self.modalities = [m.upper() for m in modalities]
        self.device = select_device(device)
        self.amp = amp
        metadata_path = self.bundle_dir / "configs" / "metadata.json"
        if not metadata_path.is_file():
            raise BundleError(f"{self.bundle_dir}: configs/metadata.json is missing (Model Zoo layout expected)")
        metadata = json.loads(metadata_path.read_text())
        self.version = str(metadata.get("version", "0"))
        self.description = f"MONAI bundle {metadata.get('name', self.bundle_dir.name)} ({task})"
        self.segment_labels = self._segment_labels(labels) if task == "segmentation" else {}
        self.class_labels = self._class_labels(labels) if task == "classification" else {}

        self.parser = ConfigParser()
        self.parser.read_meta(metadata_path)
        self.parser.read_config(_inference_config(self.bundle_dir))
        self.parser["bundle_root"] = str(self.bundle_dir)
        self.parser["device"] = f"$torch.device('{self.device}')"
        self.input_key = _without_file_io(self.parser, "preprocessing") or "image"
        _without_file_io(self.parser, "postprocessing")
        self.network = self._load_network()
        self.preprocessing = self._parsed("preprocessing")
        self.postprocessing = self._parsed("postprocessing")
        inferer = self._parsed("inferer")
        self.roi_size = roi_size or (list(inferer.roi_size) if getattr(inferer, "roi_size", None) else None)
        self.sw_batch_size = sw_batch_size or int(getattr(inferer, "sw_batch_size", 4))
        overlap = getattr(inferer, "overlap", 0.25)
        self.overlap = float(overlap) if isinstance(overlap, (int, float)) else 0.25
        logger.info("bundle pipeline %s loaded from %s on %s", name, self.bundle_dir, self.device)

    @classmethod
    def from_settings(cls, entry: PipelineSettings) -> "BundlePipeline":
        """From a ``pipelines:`` entry of the configuration."""
        if entry.bundle_dir is None:
            raise BundleError(f"pipelines[{entry.name}]: bundle_dir is not set")
        return cls(
            name=entry.name,
            bundle_dir=Path(entry.bundle_dir),
            task=entry.task,
            labels=entry.labels,
            modalities=entry.modalities,
            roi_size=entry.roi_size,
            sw_batch_size=entry.sw_batch_size,
            device=entry.device or None,
            amp=entry.amp,
        )

    def _segment_labels(self, labels: dict[int, dict[str, Any]]) -> dict[int, tuple[str, Code, Code]]:
        if not labels:
            raise BundleError(f"pipelines[{self.name}]: a segmentation bundle needs labels: value -> {{label, category, type}}")
        mapped = {}
        for value, entry in labels.items():
            where = f"pipelines[{self.name}].labels[{value}]"
            if not isinstance(entry, dict) or "category" not in entry or "type" not in entry:
                raise BundleError(f"{where}: needs label, category and type (codes as [value, scheme, meaning])")
            try:
                category, kind = code_from_config(entry["category"], where), code_from_config(entry["type"], where)
            except ValueError as exc:
                raise BundleError(str(exc)) from exc
            mapped[int(value)] = (str(entry.get("label", kind.meaning)), category, kind)
        return mapped

    def _class_labels(self, labels: dict[int, dict[str, Any]]) -> dict[int, tuple[Code, Code]]:
        if not labels:
            raise BundleError(f"pipelines[{self.name}]: a classification bundle needs labels: class index -> {{concept, value}}")
        mapped = {}
        for index, entry in labels.items():
            where = f"pipelines[{self.name}].labels[{index}]"
            if not isinstance(entry, dict) or "concept" not in entry or "value" not in entry:
                raise BundleError(f"{where}: needs concept and value (codes as [value, scheme, meaning])")
            try:
                mapped[int(index)] = (code_from_config(entry["concept"], where), code_from_config(entry["value"], where))
            except ValueError as exc:
                raise BundleError(str(exc)) from exc
        return mapped

    def _parsed(self, key: str) -> Any:
        return self.parser.get_parsed_content(key) if key in self.parser else None

    def _load_network(self) -> torch.nn.Module:
        models = self.bundle_dir / "models"
        if (models / "model.ts").is_file():
            network = torch.jit.load(str(models / "model.ts"), map_location=self.device)
        elif (models / "model.pt").is_file():
            if "network_def" not in self.parser:
                raise BundleError(f"{self.bundle_dir}: models/model.pt needs network_def in the inference config")
            network = self.parser.get_parsed_content("network_def")
            state = torch.load(models / "model.pt", map_location=self.device, weights_only=True)
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]
            network.load_state_dict(state)
        else:
            raise BundleError(f"{self.bundle_dir}: neither models/model.pt nor models/model.ts exists")
        return network.to(self.device).eval()

    def accepts(self, header: Dataset) -> str | None:
        modality = str(getattr(header, "Modality", "")).upper()
        return None if modality in self.modalities else f"modality {modality or 'missing'} not in {self.modalities}"

    def _image(self, volume: Volume) -> MetaTensor:
        """The volume as LoadImage would give it: [x, y, z] (i, j, k), RAS affine, no channel yet."""
        affine = torch.as_tensor(LPS_TO_RAS @ volume.affine, dtype=torch.float64)
        array = torch.from_numpy(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
        meta = {
            MetaKeys.AFFINE: affine.clone(),
            MetaKeys.ORIGINAL_AFFINE: affine.clone(),
            MetaKeys.SPATIAL_SHAPE: np.array(array.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "filename_or_obj": str(getattr(volume.datasets[0], "SeriesInstanceUID", "volume")),
        }
        return MetaTensor(array, affine=affine, meta=meta)

    def run(self, volume: Volume) -> PipelineResult:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        data = {self.input_key: self._image(volume)}
        if self.preprocessing is not None:
            data = self.preprocessing(data)
        image = data[self.input_key]
        timings["preprocessing"] = time.perf_counter() - started

        started = time.perf_counter()
        roi = self.roi_size if self.task == "segmentation" else None
        output = infer(self.network, image[None], self.device, roi_size=roi, sw_batch_size=self.sw_batch_size, overlap=self.overlap, amp=self.amp)
        timings["inference"] = time.perf_counter() - started

        started = time.perf_counter()
        prediction = output[0]
        if self.task == "segmentation":
            prediction = MetaTensor(prediction, meta=dict(image.meta), applied_operations=list(image.applied_operations))
        data["pred"] = prediction
        if self.postprocessing is not None:
            data = self.postprocessing(data)
        result = self._segmentation(volume, data["pred"]) if self.task == "segmentation" else self._classification(data["pred"])
        timings["postprocessing"] = time.perf_counter() - started
        result.timings = timings
        logger.info("bundle pipeline %s ran on %s: %s", self.name, self.device,
                    ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        return result

    def _label_map(self, volume: Volume, prediction: torch.Tensor) -> np.ndarray:
        """The [k, j, i] label map on the volume's grid, checking the prediction's geometry."""
        if isinstance(prediction, MetaTensor):
            expected = LPS_TO_RAS @ volume.affine
            if not np.allclose(prediction.affine.cpu().numpy(), expected, atol=AFFINE_TOLERANCE_MM):
                raise UnsupportedSeries(
                    f"pipeline {self.name}: the prediction is not on the volume's grid after postprocessing "
                    "(add Invertd with the preprocessing to the bundle's postprocessing)"
                )
        values = prediction.detach().float().cpu()
        if values.ndim == 4 and values.shape[0] > 1:  # channels not yet discretised
            values = torch.argmax(values, dim=0, keepdim=True)
        elif values.ndim == 4 and not torch.all((values == 0) | (values == 1)):
            values = (values > 0.5).float()
        label_map = values.reshape(values.shape[-3:]).numpy().transpose(2, 1, 0)
        if label_map.shape != volume.array.shape:
            raise UnsupportedSeries(
                f"pipeline {self.name}: prediction shape {label_map.shape} differs from the volume's {volume.array.shape}"
            )
        return np.rint(label_map).astype(np.uint8 if label_map.max(initial=0) < 256 else np.uint16)

    def _segmentation(self, volume: Volume, prediction: torch.Tensor) -> PipelineResult:
        label_map = self._label_map(volume, prediction)
        labels = {value: self.segment_labels[value] for value in sorted(self.segment_labels)}
        segments = Segment.from_label_map(label_map, labels)
        measurements = []
        ct = str(getattr(volume.datasets[0], "Modality", "")) == "CT"
        for segment in segments:
            measurements.append(Measurement(codes.VOLUME, segment.voxel_count * volume.voxel_volume_ml, codes.MILLILITER,
                                            segment.number))
            if ct and not segment.empty:
                hu = volume.array[segment.box][segment.cropped]
                measurements.append(Measurement(codes.MEAN_ATTENUATION, float(hu.mean()), codes.HOUNSFIELD_UNIT,
                                                segment.number))
        return PipelineResult(self.name, self.version, codes.ARTIFICIAL_INTELLIGENCE, segments, measurements)

    def _classification(self, prediction: torch.Tensor) -> PipelineResult:
        scores = torch.as_tensor(prediction).detach().float().cpu().reshape(-1)
        probability: float | None
        if scores.numel() == 1 and self.postprocessing is not None:  # postprocessing already took the argmax
            index, probability = int(scores[0]), None
        else:
            if not torch.isclose(scores.sum(), torch.tensor(1.0), atol=1e-3) or bool((scores < 0).any()):
                scores = torch.softmax(scores, dim=0)
            index = int(torch.argmax(scores))
            probability = float(scores[index])
        if index not in self.class_labels:
            raise UnsupportedSeries(f"pipeline {self.name}: class {index} has no entry in the pipeline's labels")
        concept, value = self.class_labels[index]
        classification = Classification(concept, value, probability)
        return PipelineResult(self.name, self.version, codes.ARTIFICIAL_INTELLIGENCE, classifications=[classification])
