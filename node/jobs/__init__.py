"""Jobs: routed series become jobs (dispatch), run under a lease (runner), recover when workers or messages vanish (reconcile)."""
