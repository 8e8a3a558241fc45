"""How a bundle's failures are told apart and explained.

MONAI wraps what goes wrong inside a bundle ("Failed to instantiate component ...", "applying transform ...")
around the error that matters; :func:`root_cause` unwraps it and :func:`explain` says it in one line. A failure
while running is the bundle's or the data's (permanent: :class:`BundleRunError`) unless its root cause is a
lack of memory or a failing disk, device or network, which may pass (transient: raised as it was).
"""

from __future__ import annotations

import torch

from pipelines.types import PipelineFailure

TRANSIENT_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "cuda error", "cudnn_status",
                   "nccl", "device-side assert", "cublas_status")
"""Words of a RuntimeError from torch that mean the machine, not the bundle, failed."""


class BundleError(PipelineFailure, ValueError):
    """The bundle directory or its pipeline settings cannot make a pipeline; the message says what to fix."""


class BundleRunError(PipelineFailure):
    """The bundle failed on this input for a reason another attempt would meet again; says where and why."""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error MONAI's wrappers were raised from."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def explain(exc: BaseException) -> str:
    """``Type: message`` of the root cause, on one line and not too long for a job's reason."""
    cause = root_cause(exc)
    text = " ".join(str(cause).split("Original traceback")[0].split()) or repr(cause)
    if len(text) > 400:
        text = text[:400] + " ..."
    return f"{type(cause).__name__}: {text}"


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt could succeed: memory, devices, files and connections, not bundle or data faults."""
    cause = root_cause(exc)
    if isinstance(cause, (MemoryError, torch.OutOfMemoryError, OSError, ConnectionError, TimeoutError)):
        return not isinstance(cause, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError))
    if isinstance(cause, RuntimeError):
        text = str(cause).lower()
        return any(word in text for word in TRANSIENT_WORDS)
    return False
