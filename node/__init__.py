"""pacsnode: the DICOM node service (receive, store, assemble, route, queue, deliver, operate)."""

__version__ = "0.1.0"
