"""Where inference runs: device choice, mixed precision, a model kept warm in each worker process.

This machine has no GPU: the CUDA-only parts (float16 autocast, cached memory released) run where one is."""

from __future__ import annotations

import pytest
import torch

from pipelines.bundle import BundleError, BundlePipeline
from pipelines.device import inference_mode, release_cached_memory, select_device
from pipelines.registry import get_pipeline
from pipelines.settings import PipelineSettings
from tests.pipelines import zoo
from tests.pipelines.zoo import threshold_conv

CUDA = torch.cuda.is_available()


def test_cpu_when_no_cuda_and_refuses_missing_cuda():
    device = select_device()
    assert device.type == ("cuda" if CUDA else "cpu")
    assert select_device("cpu").type == "cpu"
    if not CUDA:
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_a_bundle_configured_for_cuda_on_a_host_without_it_fails_for_good(tmp_path):
    if CUDA:
        pytest.skip("this host has CUDA")
    with pytest.raises(BundleError, match=r"pipelines\[dense\].device: device 'cuda:1' was asked for but CUDA is not"):
        BundlePipeline(PipelineSettings(name="dense", bundle_dir=zoo.pointwise(tmp_path / "b"), device="cuda:1"))


def test_the_bundle_runs_on_the_chosen_device_and_its_own_device_entry_follows(tmp_path):
    pipeline = BundlePipeline(PipelineSettings(name="dense", bundle_dir=zoo.pointwise(tmp_path / "b"), device="cpu"))
    assert pipeline.device == torch.device("cpu") and pipeline.config.parsed("device") == torch.device("cpu")
    assert all(parameter.device.type == "cpu" for parameter in pipeline.network.parameters())
    release_cached_memory(pipeline.device)  # nothing to release on the CPU


def test_mixed_precision_only_on_cuda():
    network = threshold_conv().eval()
    image = torch.randn(1, 1, 8, 8, 8)
    with inference_mode(torch.device("cpu"), amp=True):
        output = network(image)
    assert output.dtype == torch.float32 and not output.requires_grad


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_mixed_precision_on_cuda_computes_in_float16():
    network = threshold_conv().eval().cuda()
    with inference_mode(torch.device("cuda"), amp=True):
        output = network(torch.randn(1, 1, 8, 8, 8, device="cuda"))
    assert output.dtype == torch.float16
    with inference_mode(torch.device("cuda"), amp=False):
        assert network(torch.randn(1, 1, 8, 8, 8, device="cuda")).dtype == torch.float32


def test_a_worker_process_loads_a_model_once_and_keeps_it(tmp_path):
    entries = [PipelineSettings(name="dense", bundle_dir=zoo.pointwise(tmp_path / "b"))]
    first = get_pipeline("dense", entries)
    assert get_pipeline("dense", entries) is first and get_pipeline("dense", entries).network is first.network


def test_huge_page_requests_follow_the_setting():
    from numpy._core import multiarray

    from pipelines.upstream.numpy_hugepages import use_hugepages

    before = multiarray._get_madvise_hugepage()
    try:
        assert use_hugepages(False) and multiarray._get_madvise_hugepage() is False
        assert use_hugepages(True) and multiarray._get_madvise_hugepage() is True
    finally:
        multiarray._set_madvise_hugepage(before)
