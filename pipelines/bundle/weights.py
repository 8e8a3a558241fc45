"""The bundle's weights, from the file its ``CheckpointLoader`` names, as MONAI's handler would load them.

``CheckpointLoader`` sits under its own key (``checkpointloader``) or among the evaluator's handlers; its
``load_path`` (``$@bundle_root + '/models/' + @modelname``) and ``load_dict`` (``{"model": "@network"}``) are
evaluated by the bundle's own config. Checkpoints load with ``weights_only=True``; numpy arrays inside them
(DiNTS architecture files) are allowed as data. A bundle with no loader, or whose file is missing next to a
TorchScript ``models/model.ts``, runs the TorchScript model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.bundle.config import BundleConfig, key_text
from pipelines.bundle.errors import BundleError, explain

logger = logging.getLogger(__name__)

TORCHSCRIPT = Path("models") / "model.ts"


def _numpy_globals() -> list[Any]:
    """What pickled numpy arrays need, under the module names numpy 1 and numpy 2 write into pickles."""
    reconstruct, scalar = np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0]
    dtypes = {type(np.dtype(kind)) for kind in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")}
    names = []
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names.append((reconstruct, f"{module}._reconstruct"))
        names.append((scalar, f"{module}.scalar"))
    return [*names, np.ndarray, np.dtype, *dtypes]


@contextlib.contextmanager
def numpy_arrays_allowed() -> Iterator[None]:
    """``torch.load(..., weights_only=True)`` accepts numpy arrays in the block (nothing else that executes)."""
    with torch.serialization.safe_globals(_numpy_globals()):
        yield


def find_checkpoint_loader(config: BundleConfig) -> str | None:
    """The key of the bundle's ``CheckpointLoader`` (top-level or among handlers), or None."""
    found = []
    for key, value in config.walk():
        if key.endswith("#_target_") and str(value).split(".")[-1] == "CheckpointLoader":
            found.append(key.rpartition("#")[0])
    if not found:
        return None
    found.sort(key=lambda k: (k != "checkpointloader", k.count("#")))
    return found[0]


def load_checkpoint(config: BundleConfig, loader: str, device: torch.device) -> dict[str, torch.nn.Module] | None:
    """Load the weights into the objects of the loader's ``load_dict``; None when the file is missing and the
    bundle has a TorchScript model to fall back on."""
    path = Path(str(config.parsed(f"{loader}#load_path", "the checkpoint's path")))
    if not path.is_absolute():
        path = config.bundle_dir / path
    if not path.is_file():
        if (config.bundle_dir / TORCHSCRIPT).is_file():
            return None
        raise BundleError(f"{config.where(loader + '#load_path')}: the weights file {path} does not exist; put the "
                          "bundle's weights there (monai.bundle download fetches them) or point load_path elsewhere "
                          "with the pipeline's overrides")
    targets = config.parsed(f"{loader}#load_dict", "the objects the checkpoint loads into")
    strict = bool(_flag(config.raw(f"{loader}#strict", True)))
    try:
        with numpy_arrays_allowed():
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is the bundle's fault, said plainly
        raise BundleError(f"{config.where(loader)}: cannot read {path.name} ({explain(exc)})") from exc
    if len(targets) == 1 and next(iter(targets)) not in checkpoint:
        checkpoint = {next(iter(targets)): checkpoint}  # a bare state dict, as CheckpointLoader accepts it
    for name, target in targets.items():
        if name not in checkpoint:
            raise BundleError(f"{config.where(loader)}: {path.name} holds no '{name}' (it holds {sorted(checkpoint)})")
        try:
            target.load_state_dict(checkpoint[name], strict=strict)
        except Exception as exc:  # noqa: BLE001 - mismatched weights: the message names both sides
            raise BundleError(f"{config.where(loader)}: {path.name} does not fit '{key_text(name)}' "
                              f"({explain(exc)})") from exc
    logger.info("bundle %s: weights loaded from %s", config.name, path)
    return targets


def load_torchscript(config: BundleConfig, device: torch.device) -> torch.nn.Module:
    path = config.bundle_dir / TORCHSCRIPT
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # noqa: BLE001
        raise BundleError(f"{config.bundle_dir.name}/{TORCHSCRIPT}: cannot load the TorchScript model ({explain(exc)})") from exc


def _flag(value: Any) -> bool:
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)
