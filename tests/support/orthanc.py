"""Orthanc as the tests' PACS: the node's own local-PACS runner (node.local_pacs), re-exported for tests."""

from node.local_pacs import DICOMWEB_PLUGIN, Orthanc, orthanc_available, running_orthanc

__all__ = ["DICOMWEB_PLUGIN", "Orthanc", "orthanc_available", "running_orthanc"]
