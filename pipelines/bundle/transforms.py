"""The bundle's transform chains without their file loading and saving.

pacsnode hands the bundle the volume in memory, as its ``LoadImaged`` would have read it from a file, and
writes DICOM rather than the files ``SaveImaged`` would write; both are taken out of the chains before they
are instantiated. The data key the bundle loads into (often the reference ``@image_key``) is read from its
``LoadImaged`` through the config, references resolved. A chain may be written in place or as a reference or
expression naming lists elsewhere in the config; each of those lists is edited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipelines.bundle.config import BundleConfig
from pipelines.bundle.errors import BundleError

FILE_TRANSFORMS = ("LoadImage", "SaveImage")
REFERENCE = re.compile(r"@([\w#:]+)")


@dataclass
class Loading:
    """What the bundle's ``LoadImaged`` would have done: the key it fills and how it gives the image."""

    key: str = "image"
    channel_first: bool = False
    """``ensure_channel_first`` was set: the loader itself adds the channel axis."""
    ras: bool = True
    """The affine is RAS (what MONAI's readers give by default); False for ``affine_lps_to_ras: false``."""


def _chain_lists(config: BundleConfig, key: str) -> list[str]:
    """The keys of the transform lists that make up the Compose (or list) at ``key``."""
    value = config.raw(key)
    if isinstance(value, dict) and "transforms" in value:
        return _chain_lists(config, f"{key}#transforms")
    if isinstance(value, list):
        return [key]
    if isinstance(value, str):
        return [found for reference in REFERENCE.findall(value) for found in _chain_lists(config, reference)]
    return []


def _target(entry: object) -> str:
    return str(entry.get("_target_", "")).split(".")[-1] if isinstance(entry, dict) else ""


def _loading(config: BundleConfig, entry_key: str) -> Loading:
    keys = config.parsed(f"{entry_key}#keys", "the data key of LoadImaged") if f"{entry_key}#keys" in config else "image"
    key = keys if isinstance(keys, str) else list(keys)[0]
    entry = config.raw(entry_key)
    channel_first = bool(config.parsed(f"{entry_key}#ensure_channel_first")) if "ensure_channel_first" in entry else False
    ras = bool(config.parsed(f"{entry_key}#affine_lps_to_ras")) if "affine_lps_to_ras" in entry else True
    return Loading(str(key), channel_first, ras)


def _disabled(config: BundleConfig, entry_key: str) -> bool:
    if "_disabled_" not in (config.raw(entry_key) or {}):
        return False
    value = config.parsed(f"{entry_key}#_disabled_")
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def strip_file_io(config: BundleConfig, key: str) -> Loading | None:
    """Take loading and saving out of the chain at ``key``; what its (enabled) ``LoadImaged`` would have done."""
    loading: Loading | None = None
    for list_key in _chain_lists(config, key):
        kept = []
        for index, entry in enumerate(config.raw(list_key)):
            target = _target(entry)
            if target.startswith("LoadImage") and loading is None and not _disabled(config, f"{list_key}#{index}"):
                loading = _loading(config, f"{list_key}#{index}")
                if loading.channel_first:
                    kept.append({"_target_": "EnsureChannelFirstd", "keys": entry.get("keys", loading.key)})
            if not any(target.startswith(name) for name in FILE_TRANSFORMS):
                kept.append(entry)
        config.parser[list_key.replace("#", "::")] = kept
    return loading


def prepare_chains(config: BundleConfig) -> Loading:
    """Strip file input and output from the pre- and postprocessing; the loading the preprocessing had."""
    if "preprocessing" not in config:
        raise BundleError(f"{config.where('preprocessing')}: the inference config has no preprocessing "
                          "(pacsnode runs the bundle's own preprocessing, inferer and postprocessing)")
    loading = strip_file_io(config, "preprocessing") or Loading()
    if "postprocessing" in config:
        strip_file_io(config, "postprocessing")
    return loading
