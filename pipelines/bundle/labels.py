"""Segment labels of a bundle: the names it gives its output channels, coded, and the pipeline's own entries.

Names come from ``metadata.json`` (``network_data_format.outputs.<output>.channel_def``, or ``label_def``), else
from a label dictionary the inference config keeps (``labels: {liver: 1, ...}``). Each name is coded through
:mod:`pipelines.anatomy`; a name it cannot code keeps a private code (scheme ``99PACSNODE``) and is reported
(logged when the pipeline loads, listed by ``pacsnode bundle check``) so that a ``labels`` entry can code it.
The pipeline's ``labels`` setting replaces or adds entries by value.

Channels and values: when channel 0 is the background, the bundle's classes are exclusive (softmax) and a
value of its label map is the channel's number. Otherwise every channel is a structure of its own (sigmoid,
possibly overlapping): a prediction that keeps one channel per name gives one segment per channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines import anatomy, codes
from pipelines.bundle.errors import BundleError
from pipelines.codes import code_from_config
from pipelines.types import Code, SegmentLabel

logger = logging.getLogger(__name__)

PRIVATE_SCHEME = "99PACSNODE"


@dataclass
class BundleLabels:
    """Value (or channel) -> segment label, with where the names came from and which could not be coded."""

    labels: dict[int, SegmentLabel] = field(default_factory=dict)
    source: str = ""
    exclusive: bool = True
    """Channel 0 is the background: classes exclude each other and map values to channel numbers."""
    uncoded: dict[int, str] = field(default_factory=dict)
    """Value -> bundle name that neither DICOM nor pacsnode's table codes (it got a private code)."""
    from_settings: set[int] = field(default_factory=set)


def channel_names(metadata: Mapping[str, Any], config_labels: Any = None) -> tuple[dict[int, str], str]:
    """The bundle's names for its output channels and where they were found ('' when it names none)."""
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    for output, spec in outputs.items():
        if not isinstance(spec, dict):
            continue
        for key in ("channel_def", "label_def"):
            names = spec.get(key)
            if isinstance(names, dict) and names:
                try:
                    return {int(index): str(name) for index, name in names.items()}, \
                        f"metadata.json network_data_format.outputs.{output}.{key}"
                except (TypeError, ValueError):
                    continue
    if isinstance(config_labels, dict) and config_labels:
        try:
            return {int(value): str(name) for name, value in config_labels.items()}, "the inference config's labels"
        except (TypeError, ValueError):
            pass
    return {}, ""


def pretty(name: str) -> str:
    """A segment label from a channel name: 'kidney_right' -> 'Kidney right'."""
    text = " ".join(str(name).replace("_", " ").split())
    return text[:1].upper() + text[1:]


def coded_label(value: int, name: str) -> tuple[SegmentLabel, bool]:
    """The segment label for a bundle name, and whether it could be coded."""
    found = anatomy.lookup(name)
    if found is not None:
        return (pretty(name)[:64], found.category, found.type, found.modifier), True
    private = Code(f"CH{value}", PRIVATE_SCHEME, pretty(name)[:64])
    return (pretty(name)[:64], codes.ANATOMICAL_STRUCTURE, private, None), False


def settings_label(value: int, entry: Any, pipeline: str) -> SegmentLabel:
    """A ``labels`` setting entry {label, category, type[, modifier]} as a segment label."""
    where = f"pipelines[{pipeline}].labels[{value}]"
    if not isinstance(entry, dict) or "category" not in entry or "type" not in entry:
        raise BundleError(f"{where}: needs label, category and type (codes as [value, scheme, meaning])")
    try:
        category, kind = code_from_config(entry["category"], where), code_from_config(entry["type"], where)
        modifier = code_from_config(entry["modifier"], where) if entry.get("modifier") else None
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    return str(entry.get("label", kind.meaning))[:64], category, kind, modifier


def bundle_labels(
    pipeline: str, metadata: Mapping[str, Any], config_labels: Any, settings: Mapping[int, Any]
) -> BundleLabels:
    """The segment labels of a segmentation bundle; raises BundleError when there are none at all."""
    names, source = channel_names(metadata, config_labels)
    found = BundleLabels(source=source, exclusive=not names or anatomy.is_background(names.get(0, "background")))
    for value, name in sorted(names.items()):
        if anatomy.is_background(name):
            continue
        found.labels[value], coded = coded_label(value, name)
        if not coded:
            found.uncoded[value] = name
    for value, entry in settings.items():
        found.labels[int(value)] = settings_label(int(value), entry, pipeline)
        found.uncoded.pop(int(value), None)
        found.from_settings.add(int(value))
    if not found.labels:
        raise BundleError(f"pipelines[{pipeline}]: the bundle names no output channels (metadata.json "
                          "network_data_format.outputs.*.channel_def); give labels: value -> {label, category, type}")
    if found.uncoded:
        logger.warning("pipeline %s: no SNOMED CT code for %s; they get private codes until the pipeline's labels "
                       "setting codes them (pacsnode bundle check suggests codes)", pipeline,
                       ", ".join(f"{value} '{name}'" for value, name in sorted(found.uncoded.items())))
    return found
