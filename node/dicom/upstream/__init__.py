"""Fences: the only modules of the DICOM networking code that use or replace private parts of pynetdicom. Each
says which behaviour it replaces and why, for which versions, and lists what an upgrade removed
(``missing_upstream()``), checked by tests/test_upstream_fences.py.
"""
