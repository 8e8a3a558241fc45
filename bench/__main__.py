"""`python -m bench` (`make bench`): run every benchmark module in this folder that has a ``main()``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

FIRST = ["ingest"]  # the receive benchmark leads; the others follow in name order


def modules() -> list[str]:
    found = sorted(info.name for info in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if not info.name.startswith("_"))
    return [name for name in FIRST if name in found] + [name for name in found if name not in FIRST]


def main() -> int:
    failures = 0
    for name in modules():
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        if entry is None:
            continue
        print(f"== bench.{name}", flush=True)
        code = entry([]) if _takes_argv(entry) else entry()
        failures += 1 if code else 0
    return 1 if failures else 0


def _takes_argv(function: object) -> bool:
    import inspect

    return bool(inspect.signature(function).parameters)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
