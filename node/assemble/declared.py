"""Instance counts a series' own data declares, where they are mandatory and mean the whole series.

Only PET Image Storage qualifies: its PET Series module makes Number of Slices mandatory (Type 1), with the
Number of Time Slices of a DYNAMIC series and the Number of Time Slots and R-R Intervals of a GATED one (Type
1C), and its Image Index runs from 1 to their product over the series (PS3.3 C.8.9.4.1.9). The counts CT and
MR headers carry are optional and mean different things from scanner to scanner (``ImagesInAcquisition`` per
volume or for the whole series, ``NumberOfTemporalPositions`` 1 on diffusion series of hundreds of images,
enhanced multi-frame series of one instance per volume), so they are not trusted; see the README.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import PositronEmissionTomographyImageStorage

DECLARING_MODALITIES = frozenset({"PT"})
"""Modalities whose headers can declare their series' size: only their series are read for it."""


def _positive(header: Dataset, keyword: str) -> int | None:
    value = header.get(keyword)
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _series_type(header: Dataset) -> str:
    value = header.get("SeriesType")
    if value is None:
        return ""
    first = value[0] if not isinstance(value, str) else value
    return str(first).strip().upper()


def declared_instances(header: Dataset) -> int | None:
    """How many instances the series of ``header`` holds, as its data declares; None when it does not say
    reliably (not PET, a value missing, a series type without a defined count)."""
    if str(header.get("SOPClassUID", "")) != PositronEmissionTomographyImageStorage:
        return None
    slices = _positive(header, "NumberOfSlices")
    kind = _series_type(header)
    if slices is None:
        return None
    if kind in ("STATIC", "WHOLE BODY"):
        return slices
    if kind == "DYNAMIC":
        time_slices = _positive(header, "NumberOfTimeSlices")
        return slices * time_slices if time_slices else None
    if kind == "GATED":
        slots, intervals = _positive(header, "NumberOfTimeSlots"), _positive(header, "NumberOfRRIntervals")
        return slices * slots * intervals if slots and intervals else None
    return None


def consistent_count(first: Dataset | None, latest: Dataset | None) -> int | None:
    """The count both the first and the latest received instance of a series declare; None if they differ."""
    if first is None or latest is None:
        return None
    count = declared_instances(first)
    return count if count is not None and declared_instances(latest) == count else None
