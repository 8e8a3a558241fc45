"""Mask morphology of the built-in pipelines (erosion, dilation, components, hole filling) on the volume's device.

On a GPU: torch (separable max pooling) and, for connected components and hole filling, which torch lacks,
cuCIM/CuPy when installed (as MONAI does). On the CPU: SciPy's ndimage, whose running-max filters and
labelling are an order of magnitude faster there than torch's pooling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import optional_import
from scipy import ndimage

cp, _HAS_CUPY = optional_import("cupy")
cupy_ndimage, _HAS_CUPY_NDIMAGE = optional_import("cupyx.scipy.ndimage")

IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
"""Face connectivity within a slice only."""


def _cuda(mask: torch.Tensor) -> bool:
    return mask.device.type == "cuda"


def _gpu_ndimage(mask: torch.Tensor) -> bool:
    return _cuda(mask) and _HAS_CUPY and _HAS_CUPY_NDIMAGE


def dilate_in_plane(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a [k, j, i] mask within each slice by a (2r+1)² square."""
    if radius <= 0:
        return mask
    size = 2 * radius + 1
    if _cuda(mask):
        pooled = mask[:, None].half()
        pooled = F.max_pool2d(pooled, kernel_size=(size, 1), stride=1, padding=(radius, 0))
        pooled = F.max_pool2d(pooled, kernel_size=(1, size), stride=1, padding=(0, radius))
        return pooled[:, 0] > 0.5
    array = mask.numpy().view(np.uint8)
    array = ndimage.maximum_filter1d(array, size, axis=1, mode="constant")
    array = ndimage.maximum_filter1d(array, size, axis=2, mode="constant")
    return torch.from_numpy(array.view(bool))


def erode_in_plane(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of a [k, j, i] mask within each slice by a (2r+1)² square."""
    return ~dilate_in_plane(~mask, radius)


def label_components(mask: torch.Tensor, structure: np.ndarray | None = None) -> tuple[torch.Tensor, int]:
    """Connected components of a 3D mask (face connectivity unless ``structure``): (labels, count)."""
    if _gpu_ndimage(mask):
        labels, count = cupy_ndimage.label(cp.asarray(mask), structure=None if structure is None else cp.asarray(structure))
        return torch.as_tensor(labels, device=mask.device), int(count)
    labels, count = ndimage.label(mask.cpu().numpy(), structure=structure)
    return torch.from_numpy(labels).to(mask.device), int(count)


def component_sizes(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Voxel count of each component 0..count (0 is background)."""
    return torch.bincount(labels.reshape(-1), minlength=count + 1)


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
    labels, count = label_components(~mask, IN_PLANE)
    edges = torch.cat([labels[:, 0, :].reshape(-1), labels[:, -1, :].reshape(-1),
                       labels[:, :, 0].reshape(-1), labels[:, :, -1].reshape(-1)])
    open_to_border = torch.zeros(count + 1, dtype=torch.bool, device=mask.device)
    open_to_border[0] = True  # label 0: the mask itself
    open_to_border[torch.unique(edges).long()] = True
    if _cuda(mask):
        return mask | ~open_to_border[labels.long()]
    return mask | torch.from_numpy(~open_to_border.numpy()[labels.numpy()])


def radius_in_pixels(millimetres: float, pixel_spacing: float) -> int:
    """A radius in mm as a whole number of pixels (at least 1)."""
    return max(1, int(round(millimetres / pixel_spacing)))
