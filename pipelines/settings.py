"""Settings of the pipelines and of the result writers, as the node's configuration file holds them.

They live here, not in ``node.config``, so that pipelines and result writers take their own small typed
options and never import the node; ``node.config`` embeds them in its ``Settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineSettings(StrictModel):
    """Per-pipeline settings and MONAI bundle pipelines."""

    name: str = Field(description="Pipeline name routes refer to (built-in or defined here).")
    factory: str = Field("", description="'package.module:callable' returning a Pipeline (custom pipelines).")
    bundle_dir: Path | None = Field(None, description="A MONAI bundle directory (Model Zoo layout).")
    task: Literal["segmentation", "classification", "detection"] = Field(
        "segmentation", description="What a bundle pipeline produces.")
    labels: dict[int, dict[str, Any]] = Field(
        default_factory=dict,
        description="Label value -> coded segment {label, category, type[, modifier]} (classification: class index "
        "-> {concept, value}); for a bundle, replaces the coded names of its metadata.json for those values.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Bundle config entries to change, as `monai.bundle run --key value` does "
        "('inferer#sw_batch_size': 2, 'displayable_configs#highres': false); null removes an entry.")
    channels: list[str] = Field(
        default_factory=list,
        description="Names of the input series in the order the model takes them as channels (route inputs of that "
        "name); empty: the bundle's metadata.json inputs channel_def.")
    modalities: list[str] = Field(default_factory=lambda: ["CT"], description="Modalities the pipeline accepts.")
    roi_size: list[int] | None = Field(None, description="Sliding-window ROI size; empty: the bundle's own inferer.")
    sw_batch_size: int | None = Field(None, description="Sliding-window batch size; empty: the bundle's own inferer.")
    device: str = Field("", description="'cuda', 'cuda:1' or 'cpu'; empty: CUDA when available, else the CPU.")
    amp: bool = Field(True, description="Automatic mixed precision (float16) on CUDA.")
    memory_mb: int | None = Field(
        None, ge=1,
        description="Peak memory (MB) a job of this pipeline needs on the largest series routed to it (`pacsnode "
        "bundle check` measures it); a worker does not start a job that would not fit. Empty: the built-in figure, "
        "or no check for bundles.")
    gpu_memory_mb: int | None = Field(
        None, ge=1, description="Peak GPU memory (MB) a job needs on CUDA; a worker does not start a job that would "
        "not fit in what its GPU has free. Empty: no check.")


class ResultOptions(StrictModel):
    """How the result writers make SEG, SR and the fallback images (the ``results:`` section)."""

    seg_type: Literal["binary", "labelmap"] = Field("binary", description="SEG type: binary (widest viewer support) or labelmap.")
    omit_empty_frames: bool | Literal["auto"] = Field(
        "auto",
        description="Leave out SEG frames with no segmented pixel: true, false, or auto (kept for up to 8 segments, "
        "left out beyond, where every segment's empty frames would multiply the SEG: 104 segments on 300 slices "
        "make 31,200 frames, 1 GB, with them).")
    compress: bool = Field(False, description="Lossless compression of SEG pixel data.")
    series_number: int = Field(9100, description="Series Number of result series.")
    series_description_prefix: str = Field("pacsnode", description="Start of result series descriptions.")
    manufacturer: str = Field("pacsnode", description="Manufacturer written into results.")
    content_creator: str = Field("pacsnode^AI", description="Content Creator's Name written into results.")
    fallback_key_slices: int = Field(
        6, ge=0, le=64,
        description="Secondary Capture key slices with segment outlines, for viewers without SEG (0: none). "
        "Sent to destinations whose outputs include fallback, and instead of the SEG to one that refuses SEG.",
    )
