"""Fence: highdicom's "is this attribute part of that IOD?" answered once per question instead of once per image.

highdicom asks it for every source image while building a SEG or SR (is the image multi-frame?), and each
answer walks the standard's module tables, a noticeable time per series. The tables never change
within a process, so the answers are kept. ``install()`` puts the memoized function in highdicom's place
(its private ``highdicom._standard_utils.is_attribute_in_iod``). Written for highdicom 0.25 to 0.28 (pyproject
bounds it below 0.29); ``missing_upstream()`` lists what an upgrade removed.

Upstream report (performance), to file with highdicom::

    highdicom._standard_utils.is_attribute_in_iod walks the module tables on every call, and
    is_multiframe_image calls it once per source image while a SEG or SR is built (0.4 ms each, 0.13 s
    for a 300-slice series). The tables are constant: an lru_cache on (attribute, sop_class_uid,
    exclude_path_elements) gives the same answers in microseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from highdicom import _standard_utils

_walk_tables = _standard_utils.is_attribute_in_iod


@functools.lru_cache(maxsize=1024)
def _answer(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
    return _walk_tables(attribute, sop_class_uid, list(exclude) if exclude is not None else None)


def is_attribute_in_iod(attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None) -> bool:
    """Same answer as highdicom's ``is_attribute_in_iod``, from memory after the first time."""
    exclude = tuple(exclude_path_elements) if exclude_path_elements is not None else None
    return _answer(attribute, str(sop_class_uid), exclude)


def missing_upstream() -> list[str]:
    """What this fence replaces that the installed highdicom no longer has (empty when all is there)."""
    return [] if callable(getattr(_standard_utils, "is_attribute_in_iod", None)) else [
        "highdicom._standard_utils.is_attribute_in_iod"]


def install() -> None:
    """Make highdicom's own helpers (``is_multiframe_image`` and the rest) use the memoized lookup."""
    _standard_utils.is_attribute_in_iod = is_attribute_in_iod  # type: ignore[assignment]
