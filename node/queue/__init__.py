"""The job queue: dispatch of routed series to Celery workers, the tasks they run, and the reconciler.

The node's database is the source of truth; Celery messages carry only job IDs.
"""
