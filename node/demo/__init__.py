"""The demo (`make demo`): a node, a local PACS (Orthanc) and the sample study, end to end on this machine."""
