"""Fences: the only modules that use or replace private parts of upstream libraries (highdicom, pydicom,
numpy). Each says which behaviour it replaces and why, for which versions, and lists what an upgrade removed
(``missing_upstream()``), checked by tests/test_upstream_fences.py.
"""
