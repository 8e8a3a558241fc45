"""The pipeline registry: names to pipeline factories.

Built-in pipelines register themselves here; MONAI bundle pipelines and custom ones come from the
configuration (``pipelines:`` entries, :class:`pipelines.settings.PipelineSettings`, with ``bundle_dir`` or
``factory``). Every function takes those entries, not the node's whole configuration. A pipeline is created
once per process and reused, so its model is loaded once per worker.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from pydicom.dataset import Dataset

from pipelines.settings import PipelineSettings
from pipelines.types import PipelineResult, Volume


@runtime_checkable
class Pipeline(Protocol):
    """A named unit of inference: which series it accepts, and volume in, result out."""

    name: str
    version: str
    description: str

    def accepts(self, header: Dataset) -> str | None:
        """None when a series with this header is accepted, else the reason it is not."""

    def run(self, volume: Volume) -> PipelineResult:
        """Run preprocessing, the model and postprocessing on ``volume``."""


PipelineFactory = Callable[..., Pipeline]

BUILTIN_MODULES = {
    "ct-tissue": "pipelines.builtin.ct_tissue",
    "ct-lungs": "pipelines.builtin.ct_lungs",
    "ct-lung-cysts": "pipelines.builtin.ct_lung_cysts",
}
"""Each built-in pipeline's module, imported (with torch and MONAI, about 2 s) only when the pipeline is
created or described: a node checking its routes or receiving images never needs them."""

_BUILTIN: dict[str, tuple[PipelineFactory, str]] = {}
_INSTANCES: dict[tuple[str, int], Pipeline] = {}
_LOCK = threading.Lock()


def register_builtin(name: str, description: str) -> Callable[[PipelineFactory], PipelineFactory]:
    """Decorator registering a built-in pipeline factory under ``name``."""

    def decorate(factory: PipelineFactory) -> PipelineFactory:
        _BUILTIN[name] = (factory, description)
        return factory

    return decorate


def _load_builtin(name: str) -> None:
    importlib.import_module(BUILTIN_MODULES[name])
    if name not in _BUILTIN:
        raise RuntimeError(f"{BUILTIN_MODULES[name]} does not register the pipeline {name!r}")


Entries = Sequence[PipelineSettings]
"""The configuration's ``pipelines:`` entries."""


def _configured(entries: Entries | None, name: str) -> PipelineSettings | None:
    for entry in entries or ():
        if entry.name == name:
            return entry
    return None


def _configured_pipelines(entries: Entries | None) -> dict[str, str]:
    """The pipelines the configuration itself defines (MONAI bundles, custom factories), each described."""
    described = {}
    for entry in entries or ():
        if entry.bundle_dir is not None:
            described[entry.name] = f"MONAI bundle {entry.bundle_dir} ({entry.task})"
        elif entry.factory:
            described[entry.name] = f"custom pipeline {entry.factory}"
    return described


def names(entries: Entries | None = None) -> set[str]:
    """The name of every pipeline this configuration can run, without importing any of them."""
    return set(BUILTIN_MODULES) | set(_configured_pipelines(entries))


def available(entries: Entries | None = None) -> dict[str, str]:
    """Names and descriptions of every pipeline this configuration can run (imports the built-in ones)."""
    described = {}
    for name in BUILTIN_MODULES:
        _load_builtin(name)
        described[name] = _BUILTIN[name][1]
    return described | _configured_pipelines(entries)


def _import_factory(spec: str) -> PipelineFactory:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"pipeline factory {spec!r} must look like 'package.module:callable'")
    return getattr(importlib.import_module(module_name), attribute)


def create_pipeline(name: str, entries: Entries | None = None) -> Pipeline:
    """A new pipeline object for ``name``; raises KeyError naming the known pipelines if unknown."""
    entry = _configured(entries, name)
    if entry is not None and entry.bundle_dir is not None:
        from pipelines.bundle import BundlePipeline

        return BundlePipeline.from_settings(entry)
    if entry is not None and entry.factory:
        return _import_factory(entry.factory)(entry)
    if name not in BUILTIN_MODULES:
        raise KeyError(f"unknown pipeline {name!r}; known: {sorted(names(entries))}")
    _load_builtin(name)
    factory, _ = _BUILTIN[name]
    return factory(entry) if entry is not None else factory()


def get_pipeline(name: str, entries: Entries | None = None) -> Pipeline:
    """The process-wide pipeline object for ``name`` (created and its model loaded on first use)."""
    key = (name, id(entries))
    with _LOCK:
        if key not in _INSTANCES:
            _INSTANCES[key] = create_pipeline(name, entries)
        return _INSTANCES[key]
