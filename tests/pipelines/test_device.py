"""Device selection and windowed inference."""

from __future__ import annotations

import pytest
import torch

from pipelines.device import infer, select_device
from tests.pipelines.bundles import threshold_conv


def test_cpu_when_no_cuda_and_refuses_missing_cuda():
    device = select_device()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_sliding_window_equals_whole_image_for_a_pointwise_network():
    network = threshold_conv().eval()
    image = torch.randn(1, 1, 40, 36, 20)
    whole = infer(network, image, torch.device("cpu"))
    windowed = infer(network, image, torch.device("cpu"), roi_size=[16, 16, 8], sw_batch_size=3)
    assert windowed.dtype == torch.float32 and windowed.shape == (1, 2, 40, 36, 20)
    torch.testing.assert_close(windowed, whole, rtol=1e-4, atol=1e-4)


def test_huge_page_requests_follow_the_setting():
    from numpy._core import multiarray

    from pipelines.upstream.numpy_hugepages import use_hugepages

    before = multiarray._get_madvise_hugepage()
    try:
        assert use_hugepages(False) and multiarray._get_madvise_hugepage() is False
        assert use_hugepages(True) and multiarray._get_madvise_hugepage() is True
    finally:
        multiarray._set_madvise_hugepage(before)
