"""The node's web side: read-only dashboard, Prometheus metrics, liveness and readiness."""
