"""pacsnode pipelines: series in, segmentations, measurements and classifications out, then DICOM SEG and SR.

Pipelines know nothing of networking or Celery.
"""
