# pacsnode: `make demo` runs the demo, `make test` the tests; both set up first (idempotent).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m node.demo

test: setup
	bash scripts/test.sh

bench: setup
	$(PY) -m bench

clean:
	rm -rf var demo-out bench/out .pytest_cache
