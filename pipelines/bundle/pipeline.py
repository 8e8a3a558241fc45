"""MONAI bundles (Model Zoo layout) as segmentation, classification or detection pipelines, run as published.

A bundle directory holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``), its weights
(the file its ``CheckpointLoader`` names, or ``models/model.ts``) and maybe its own ``scripts/`` package. It
runs the way ``monai.bundle run`` would run it: references resolved, the bundle's own preprocessing, inferer
(with its window, blending, padding and batch settings) and postprocessing, with file loading and saving left
out (the volume comes in memory as ``LoadImaged`` would give it; results go to DICOM). A per-pipeline
``overrides`` setting changes config entries as ``monai.bundle run --key value`` does. Segment labels come
from the bundle's metadata, coded through :mod:`pipelines.anatomy`; the ``labels`` setting overrides them::

    pipelines:
      - name: spleen
        bundle_dir: /models/spleen_ct_segmentation
      - name: wholebody-3mm
        bundle_dir: /models/wholeBody_ct_segmentation
        overrides: {"displayable_configs#highres": false}
      - name: nodule-class
        bundle_dir: /models/classifier
        task: classification
        labels:                      # class index -> coded finding
          0: {concept: ["87433001", "SCT", "Pulmonary emphysema"], value: ["272519000", "SCT", "Absent"]}

A failure the bundle or the data causes raises :class:`BundleError` (loading) or :class:`BundleRunError`
(running), both permanent; one the machine causes (memory, devices, files) is raised as it was, to be retried.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset

from pipelines import codes
from pipelines.bundle import detection, requirements
from pipelines.bundle.config import BundleConfig
from pipelines.bundle.errors import BundleError, BundleRunError, explain, is_transient
from pipelines.bundle.imports import BundleImports
from pipelines.bundle.labels import BundleLabels, bundle_labels, settings_label
from pipelines.bundle.output import LPS_TO_RAS, segments_from_prediction
from pipelines.bundle.transforms import Loading, prepare_chains
from pipelines.bundle.weights import find_checkpoint_loader, load_checkpoint, load_torchscript, numpy_arrays_allowed
from pipelines.codes import code_from_config
from pipelines.device import inference_mode, release_cached_memory, select_device
from pipelines.memory import PeakMemory
from pipelines.settings import PipelineSettings
from pipelines.types import Classification, Code, Measurement, PipelineResult, Segment, UnsupportedSeries, Volume

logger = logging.getLogger(__name__)

TASKS = ("segmentation", "classification", "detection")


class BundlePipeline:
    """A MONAI bundle run on one volume; the model is loaded once, when the pipeline is created."""

    def __init__(self, settings: PipelineSettings) -> None:
        if settings.bundle_dir is None:
            raise BundleError(f"pipelines[{settings.name}]: bundle_dir is not set")
        self.name, self.task, self.amp = settings.name, settings.task, settings.amp
        self.modalities = [m.upper() for m in settings.modalities]
        try:
            self.device = select_device(settings.device or None)
        except RuntimeError as exc:
            raise BundleError(f"pipelines[{self.name}].device: {exc}") from exc
        overrides = dict(settings.overrides)
        if settings.roi_size:
            overrides.setdefault("inferer#roi_size", list(settings.roi_size))
        if settings.sw_batch_size:
            overrides.setdefault("inferer#sw_batch_size", settings.sw_batch_size)
        self.config = BundleConfig(Path(settings.bundle_dir), device=str(self.device), overrides=overrides)
        self.requirements = requirements.check(self.config.metadata, self.config.where())
        for warning in self.requirements.warnings:
            logger.warning("pipeline %s: %s", self.name, warning)
        for note in self.requirements.notes:
            logger.info("pipeline %s: %s", self.name, note)
        self.version = str(self.config.metadata.get("version", "0"))
        self.description = f"MONAI bundle {self.config.name} ({self.task})"
        self.imports = BundleImports(self.config.bundle_dir)
        with self.imports.active(), numpy_arrays_allowed(), self._loading_errors():
            self.loading = prepare_chains(self.config)
            self.network = self._load_network()
            self.preprocessing = self.config.parsed("preprocessing", "the preprocessing cannot be made")
            self.inferer = self.config.parsed("inferer", "the inferer cannot be made") if "inferer" in self.config \
                else SimpleInferer()
            self.postprocessing = self.config.parsed("postprocessing", "the postprocessing cannot be made") \
                if "postprocessing" in self.config else None
            self._evaluator_requirements()
        self.labels = bundle_labels(self.name, self.config.metadata, self.config.raw("labels"), settings.labels) \
            if self.task == "segmentation" else BundleLabels()
        self.class_labels = self._class_labels(settings.labels) if self.task == "classification" else {}
        self.detection_classes = {int(index): settings_label(int(index), entry, self.name)
                                  for index, entry in settings.labels.items()} if self.task == "detection" else {}
        self.channels = input_channels(self.config.metadata, settings.channels)
        self.measure_memory = False
        """Record each stage's peak memory in ``stage_peaks`` (``bundle check`` and the benchmark turn it on)."""
        self.stage_peaks: dict[str, int] = {}
        logger.info("bundle pipeline %s loaded from %s on %s", self.name, self.config.bundle_dir, self.device)

    @classmethod
    def from_settings(cls, entry: PipelineSettings) -> "BundlePipeline":
        """From a ``pipelines:`` entry of the configuration."""
        return cls(entry)

    @contextlib.contextmanager
    def _loading_errors(self) -> Iterator[None]:
        """Errors while loading become BundleErrors naming the bundle; a missing module comes with the command
        that installs the packages the bundle lists and this installation lacks."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - the message names the bundle and the cause
            missing = self.requirements.install_hint()
            text = str(exc) if isinstance(exc, BundleError) else f"{self.config.where()}: cannot be loaded: {explain(exc)}"
            if missing and ("No module named" in text or "OptionalImportError" in text):
                text += f"; the bundle lists packages that are not installed: {missing}"
            if isinstance(exc, BundleError) and text == str(exc):
                raise
            raise BundleError(text) from exc

    def _load_network(self) -> torch.nn.Module:
        loader = find_checkpoint_loader(self.config)
        network: Any = None
        if loader is not None:
            targets = load_checkpoint(self.config, loader, self.device)
            if targets is not None:
                network = self.config.parsed("network", "the network") if "network" in self.config \
                    else next(iter(targets.values()))
        elif (self.config.bundle_dir / "models" / "model.pt").is_file():
            network = self._network_from_state(self.config.bundle_dir / "models" / "model.pt")
        if network is None:
            if not (self.config.bundle_dir / "models" / "model.ts").is_file():
                raise BundleError(f"{self.config.bundle_dir}: no weights: the inference config has no CheckpointLoader "
                                  "and neither models/model.pt nor models/model.ts exists")
            network = load_torchscript(self.config, self.device)
        return network.to(self.device).eval()

    def _network_from_state(self, path: Path) -> torch.nn.Module:
        """``network_def`` with a state dict from ``path`` (a bundle without a CheckpointLoader)."""
        key = "network_def" if "network_def" in self.config else "network"
        network = self.config.parsed(key, "the network")
        state = torch.load(path, map_location=self.device, weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        network.load_state_dict(state)
        return network

    def _evaluator_requirements(self) -> None:
        """What the bundle's evaluator requires before it runs (``_requires_``: detector settings and the like)."""
        if self.config.raw("evaluator#_requires_"):
            self.config.parsed("evaluator#_requires_", "a step the evaluator requires")

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

    def accepts(self, header: Dataset) -> str | None:
        modality = str(getattr(header, "Modality", "")).upper()
        return None if modality in self.modalities else f"modality {modality or 'missing'} not in {self.modalities}"

    @contextlib.contextmanager
    def _stage(self, timings: dict[str, float], stage: str) -> Iterator[None]:
        """Time a stage (and, with ``measure_memory``, its peak memory in ``stage_peaks``); a failure the bundle
        or data causes becomes a BundleRunError naming the stage."""
        started = time.perf_counter()
        peak = PeakMemory() if self.measure_memory else contextlib.nullcontext()
        try:
            with peak:
                yield
        except (BundleRunError, UnsupportedSeries):
            raise
        except Exception as exc:  # noqa: BLE001 - classified: transient errors pass through unchanged
            if is_transient(exc):
                raise
            raise BundleRunError(f"pipeline {self.name} ({self.config.where()}): {stage} failed: {explain(exc)}") from exc
        finally:
            timings[stage] = time.perf_counter() - started
            if isinstance(peak, PeakMemory):
                self.stage_peaks[stage] = peak.bytes

    def run(self, volume: Volume) -> PipelineResult:
        timings: dict[str, float] = {}
        self.stage_peaks = {}
        with self.imports.active():
            with self._stage(timings, "preprocessing"):
                data = self.preprocessing({self.loading.key: input_image(volume, self.loading, self.channels)})
            with self._stage(timings, "inference"):
                image = data[self.loading.key]
                with inference_mode(self.device, self.amp):
                    output = self.inferer(image[None].to(self.device), self.network)
            with self._stage(timings, "postprocessing"):
                data = self._postprocess(data, output)
                del output
            with self._stage(timings, "results"):
                result = self._result(volume, data)
                del data
        release_cached_memory(self.device)
        result.timings = timings
        logger.info("bundle pipeline %s ran on %s: %s", self.name, self.device,
                    ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        return result

    def _postprocess(self, data: dict[str, Any], output: Any) -> dict[str, Any]:
        """The bundle's postprocessing on its prediction, which carries the image's meta data and transforms."""
        image = data[self.loading.key]
        if self.task == "detection":
            data["pred"] = output
            return data
        prediction = output[0]
        if not isinstance(prediction, MetaTensor):
            prediction = MetaTensor(prediction, meta=dict(image.meta), applied_operations=list(image.applied_operations))
        else:
            prediction.meta.update(image.meta)
            prediction.applied_operations = list(image.applied_operations)
        data["pred"] = prediction
        del prediction, output
        return self.postprocessing(data) if self.postprocessing is not None else data

    def _result(self, volume: Volume, data: dict[str, Any]) -> PipelineResult:
        """pacsnode's result from the postprocessed prediction: segments, a classification or detections."""
        if self.task == "detection":
            found = detection.postprocess(data.pop("pred"), data[self.loading.key], self.postprocessing, self.inferer,
                                          self.loading)
            return detection.result(self.name, self.version, found, self.detection_classes)
        if self.task == "segmentation":
            return self._segmentation(volume, segments_from_prediction(data.pop("pred"), volume, self.labels, self.name))
        return self._classification(data["pred"])

    def _segmentation(self, volume: Volume, segments: list[Segment]) -> PipelineResult:
        measurements = []
        ct = str(getattr(volume.datasets[0], "Modality", "")) == "CT"
        for segment in segments:
            measurements.append(Measurement(codes.VOLUME, segment.voxel_count * volume.voxel_volume_ml, codes.MILLILITER,
                                            segment.number))
            if ct and not segment.empty:
                hu = volume.array[segment.box][segment.cropped]
                measurements.append(Measurement(codes.MEAN_ATTENUATION, float(hu.mean(dtype=np.float64)),
                                                codes.HOUNSFIELD_UNIT, segment.number))
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
            raise BundleRunError(f"pipeline {self.name}: class {index} has no entry in the pipeline's labels")
        concept, value = self.class_labels[index]
        classification = Classification(concept, value, probability)
        return PipelineResult(self.name, self.version, codes.ARTIFICIAL_INTELLIGENCE, classifications=[classification])


def input_channels(metadata: dict[str, Any], configured: list[str]) -> list[str]:
    """The names of the model's input channels in its order: the setting, else the bundle's ``channel_def``."""
    if configured:
        return [name.lower() for name in configured]
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    for spec in inputs.values():
        names = spec.get("channel_def") if isinstance(spec, dict) else None
        if isinstance(names, dict) and len(names) > 1:
            return [str(names[key]).lower() for key in sorted(names, key=lambda k: int(k))]
    return []


def input_image(volume: Volume, loading: Loading, channels: list[str]) -> MetaTensor:
    """The volume as the bundle's ``LoadImaged`` would give it: ``[x, y, z]`` (i, j, k) with a RAS affine, or
    ``[channel, x, y, z]`` for a model taking several series, in the order it declares."""
    affine = torch.as_tensor(LPS_TO_RAS @ volume.affine if loading.ras else volume.affine, dtype=torch.float64)
    if volume.channels:
        given = {name.lower(): array for name, array in volume.channels.items()}
        missing = [name for name in channels if name not in given]
        if not channels or missing:
            raise UnsupportedSeries(f"the model takes input channels {channels or 'it does not name'}; the job has "
                                    f"{sorted(given)} (missing {missing})")
        array = torch.from_numpy(np.stack([given[name].transpose(2, 1, 0) for name in channels]))
        channel_dim: float = 0
    else:
        array = torch.from_numpy(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
        channel_dim = float("nan")
    meta = {
        MetaKeys.AFFINE: affine.clone(),
        MetaKeys.ORIGINAL_AFFINE: affine.clone(),
        MetaKeys.SPATIAL_SHAPE: np.array(array.shape[-3:]),
        MetaKeys.ORIGINAL_CHANNEL_DIM: channel_dim,
        MetaKeys.SPACE: SpaceKeys.RAS if loading.ras else SpaceKeys.LPS,
        "filename_or_obj": str(getattr(volume.datasets[0], "SeriesInstanceUID", "volume")),
    }
    return MetaTensor(array, affine=affine, meta=meta)
