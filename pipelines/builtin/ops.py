"""Mask operations of the built-in pipelines: torch on the volume's device where torch has the operation.

Torch has no connected-component labelling or hole filling, so those use cuCIM/CuPy on a GPU when installed
(as MONAI does) and scikit-image/SciPy on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import optional_import

cp, _HAS_CUPY = optional_import("cupy")
cucim_measure, _HAS_CUCIM = optional_import("cucim.skimage.measure")
cupy_ndimage, _HAS_CUPY_NDIMAGE = optional_import("cupyx.scipy.ndimage")


def _on_gpu(mask: torch.Tensor) -> bool:
    return mask.device.type == "cuda" and _HAS_CUPY and _HAS_CUCIM and _HAS_CUPY_NDIMAGE


def dilate_in_plane(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a [k, j, i] mask within each slice by a (2r+1)² square."""
    if radius <= 0:
        return mask
    pooled = F.max_pool2d(mask[:, None].float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return pooled[:, 0] > 0.5


def erode_in_plane(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of a [k, j, i] mask within each slice by a (2r+1)² square."""
    return ~dilate_in_plane(~mask, radius)


def label_components(mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Face-connected components of a 3D mask: (labels, count), labels on the mask's device."""
    if _on_gpu(mask):
        labels, count = cucim_measure.label(cp.asarray(mask), connectivity=1, return_num=True)
        return torch.as_tensor(labels, device=mask.device), int(count)
    from skimage.measure import label

    labels, count = label(mask.cpu().numpy(), connectivity=1, return_num=True)
    return torch.from_numpy(labels.astype(np.int32)).to(mask.device), int(count)


def component_sizes(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Voxel count of each component 0..count (0 is background)."""
    return torch.bincount(labels.reshape(-1).long(), minlength=count + 1)


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest face-connected component of ``mask`` (empty when ``mask`` is)."""
    labels, count = label_components(mask)
    if count == 0:
        return mask
    sizes = component_sizes(labels, count)
    sizes[0] = 0
    return labels == int(torch.argmax(sizes))


def fill_holes_in_plane(mask: torch.Tensor) -> torch.Tensor:
    """Fill, slice by slice, every region of background that does not reach the slice's border."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    if _on_gpu(mask):
        filled = cupy_ndimage.binary_fill_holes(cp.asarray(mask), structure=cp.asarray(structure))
        return torch.as_tensor(filled, device=mask.device)
    from scipy.ndimage import binary_fill_holes

    return torch.from_numpy(binary_fill_holes(mask.cpu().numpy(), structure=structure)).to(mask.device)


def radius_in_pixels(millimetres: float, pixel_spacing: float) -> int:
    """A radius in mm as a whole number of pixels (at least 1)."""
    return max(1, int(round(millimetres / pixel_spacing)))
