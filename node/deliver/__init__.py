"""Deliver: return result objects (SEG, SR) to PACS through a persistent outbox.

``outbox`` creates and resumes delivery rows, ``tasks`` sends them (Celery queue ``delivery``),
``policy`` judges each outcome, ``dicomweb`` speaks STOW-RS; the C-STORE SCU is ``node.dicom.scu``.
"""
