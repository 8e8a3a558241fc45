"""MONAI bundles in the Model Zoo layout as pipelines, run as published (see :mod:`pipelines.bundle.pipeline`)."""

from pipelines.bundle.errors import BundleError, BundleRunError
from pipelines.bundle.pipeline import BundlePipeline

__all__ = ["BundleError", "BundlePipeline", "BundleRunError"]
