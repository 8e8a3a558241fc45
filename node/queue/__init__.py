"""The queue: the Celery application, its transports (embedded filesystem broker, Redis) and worker processes.

The node's database is the source of truth; Celery messages carry only job IDs.
"""
