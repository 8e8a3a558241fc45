"""`python -m node.queue ARGS`: the same as `pacsnode worker ARGS` (used to start the embedded worker)."""

import sys

from node.cli import app

app(["worker", *sys.argv[1:]], prog_name="pacsnode worker")
