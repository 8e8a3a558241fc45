"""A bundle's failures are told apart: its own or the data's fail a job for good, the machine's are retried."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from pipelines.bundle import BundlePipeline, BundleRunError
from pipelines.bundle.errors import explain, is_transient
from pipelines.settings import PipelineSettings
from pipelines.types import PipelineFailure
from pipelines.volume import load_datasets
from sample_dicom import generate
from tests.pipelines import zoo
from tests.support.sample import phantom_series


def test_a_volume_the_network_cannot_take_fails_for_good_naming_the_stage(tmp_path):
    bundle_dir = zoo.wholebody(tmp_path / "wholeBody_ct_segmentation")
    segresnet = BundlePipeline(PipelineSettings(name="wholebody", bundle_dir=bundle_dir,
                                                overrides={"inferer": {"_target_": "SimpleInferer"}}))
    odd = generate.Grid(shape=(23, 64, 64), pixel_spacing=5.0, slice_spacing=10.0)  # SegResNet halves z thrice
    volume = load_datasets(phantom_series(odd, "odd")[0])
    with pytest.raises(BundleRunError, match=r"wholebody \(wholeBody_ct_segmentation/configs/inference.json\): "
                                             r"inference failed: RuntimeError: The size of tensor a") as raised:
        segresnet.run(volume)
    assert isinstance(raised.value, PipelineFailure)


def test_root_causes_decide_what_is_retried():
    wrapped = RuntimeError("applying transform <monai.transforms.Spacingd>")
    wrapped.__cause__ = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 98 GB")
    assert is_transient(wrapped) and explain(wrapped).startswith("RuntimeError: DefaultCPUAllocator")
    assert is_transient(torch.OutOfMemoryError("CUDA out of memory")) and is_transient(MemoryError())
    assert is_transient(OSError(5, "Input/output error"))
    assert not is_transient(FileNotFoundError(2, "No such file", "models/model.pt"))
    assert not is_transient(RuntimeError("Sizes of tensors must match except in dimension 1"))
    assert not is_transient(KeyError("image"))


def test_running_out_of_memory_is_raised_as_it_was_to_be_retried(tmp_path):
    """A bundle resampling to a grid too large for the process's memory (limited to 3 GB here)."""
    bundle_dir = zoo.pointwise(tmp_path / "fine", pixdim=[0.5, 0.5, 0.5])
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
        from pipelines.bundle import BundlePipeline
        from pipelines.bundle.errors import is_transient
        from pipelines.settings import PipelineSettings
        from pipelines.types import PipelineFailure
        from pipelines.volume import load_datasets
        from sample_dicom import generate
        from tests.support.sample import phantom_series
        grid = generate.Grid(shape=(24, 64, 64), pixel_spacing=5.0, slice_spacing=10.0)
        volume = load_datasets(phantom_series(grid, "fine")[0])
        pipeline = BundlePipeline(PipelineSettings(name="fine", bundle_dir={str(bundle_dir)!r}))
        try:
            pipeline.run(volume)
        except PipelineFailure as exc:
            print("PERMANENT", exc)
        except Exception as exc:
            print("TRANSIENT" if is_transient(exc) else "OTHER", type(exc).__name__, exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "TRANSIENT" in done.stdout, done.stdout + done.stderr[-2000:]
