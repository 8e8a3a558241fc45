"""DIMSE status codes pacsnode sends and judges (PS3.7 Annex C, PS3.4 B.2.3), in one place.

The receiver answers C-STORE with the ``Status`` values below; the delivery side reads a peer's status with
``is_success`` and ``is_permanent_failure``.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """The statuses pacsnode sends, and the ones it looks for in a peer's answer."""

    SUCCESS = 0x0000
    # Warnings of the storage service: the object was stored (PS3.4 B.2.3).
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # General failures (PS3.7 C.4).
    PROCESSING_FAILURE = 0x0110
    NO_SUCH_SOP_CLASS = 0x0118
    INVALID_ARGUMENT_VALUE = 0x0115
    INVALID_ATTRIBUTE_VALUE = 0x0106
    INVALID_OBJECT_INSTANCE = 0x0117
    CLASS_INSTANCE_CONFLICT = 0x0119
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    # Storage failures (PS3.4 B.2.3); the A7xx and A9xx codes below A7FF/A9FF are the implementation's own.
    OUT_OF_RESOURCES = 0xA700  # disk full
    STORAGE_FAILED = 0xA701  # other I/O failure writing the file
    INDEX_FAILED = 0xA702  # the file is stored but the index could not record it
    SOP_CLASS_MISMATCH = 0xA900  # dataset's SOP Class UID differs from the context / command
    CANNOT_PARSE = 0xC210  # the dataset does not parse in its transfer syntax
    INVALID_UID = 0xC211  # a Study/Series/SOP Instance UID is missing or malformed
    SOP_INSTANCE_MISMATCH = 0xC212  # dataset's SOP Instance UID differs from the command


STORED = frozenset({Status.SUCCESS, Status.COERCION_OF_DATA_ELEMENTS, Status.ELEMENTS_DISCARDED,
                    Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING})
"""Success and the storage warnings: the peer has the object."""

PERMANENT = frozenset({Status.INVALID_OBJECT_INSTANCE, Status.SOP_CLASS_NOT_SUPPORTED, Status.NOT_AUTHORIZED,
                       Status.DUPLICATE_INVOCATION, Status.UNRECOGNIZED_OPERATION, Status.MISTYPED_ARGUMENT})
"""General failures that sending the same object to the same peer again cannot cure."""


def is_success(status: int | None) -> bool:
    """True for Success and the storage warnings."""
    return status in STORED


def is_permanent_failure(status: int) -> bool:
    """True when a peer's failure status will not change on a retry: the general failures above, Error:
    Data Set Does Not Match SOP Class (A9xx) and Error: Cannot Understand (Cxxx)."""
    return status in PERMANENT or (status & 0xFF00) == 0xA900 or (status & 0xF000) == 0xC000
