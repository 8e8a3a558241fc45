"""pacsnode benchmarks: `python -m bench` runs them all."""
