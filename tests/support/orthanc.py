"""Orthanc as the tests' PACS: the node's own local-PACS runner (node.demo.local_pacs), re-exported for tests."""

from node.demo.local_pacs import DICOMWEB_PLUGIN, Orthanc, orthanc_available, running_orthanc

__all__ = ["DICOMWEB_PLUGIN", "Orthanc", "orthanc_available", "running_orthanc"]
