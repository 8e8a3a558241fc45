"""A bundle's own Python packages (its ``scripts/``), importable while the bundle is in use.

``monai.bundle run`` puts the bundle's folder on ``sys.path`` so that its configs can name
``scripts.networks.unest.UNesT``; many bundles ship a top-level package of that same name. pacsnode gives each
bundle its own modules: while one is active, its folder is first on ``sys.path`` and ``sys.modules`` holds its
modules under their top-level names; afterwards they are put aside and whatever was there before comes back.
Objects made from a bundle's modules keep working later, as they hold their modules themselves.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

_ACTIVE = threading.RLock()
"""One bundle's modules at a time in ``sys.modules``, whichever thread uses it."""


def top_level_names(bundle_dir: Path) -> set[str]:
    """Packages and modules at the top of the bundle folder (``scripts``), which its configs may import."""
    names = set()
    for path in bundle_dir.iterdir():
        if path.is_dir() and (path / "__init__.py").is_file() or path.is_dir() and any(path.glob("*.py")):
            names.add(path.name)
        elif path.suffix == ".py":
            names.add(path.stem)
    return {name for name in names if name.isidentifier()}


class BundleImports:
    """The modules of one bundle's own packages, kept apart from every other bundle's."""

    def __init__(self, bundle_dir: Path) -> None:
        self.root = str(Path(bundle_dir).resolve())
        self.names = top_level_names(Path(self.root))
        self.modules: dict[str, ModuleType] = {}

    def _owned(self, name: str) -> bool:
        return name.partition(".")[0] in self.names

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The bundle's folder first on ``sys.path`` and its modules in ``sys.modules`` for the block."""
        if not self.names:
            yield
            return
        with _ACTIVE:
            others = {name: sys.modules.pop(name) for name in list(sys.modules) if self._owned(name)}
            sys.modules.update(self.modules)
            sys.path.insert(0, self.root)
            importlib.invalidate_caches()
            try:
                yield
            finally:
                with contextlib.suppress(ValueError):
                    sys.path.remove(self.root)
                self.modules = {name: sys.modules.pop(name) for name in list(sys.modules) if self._owned(name)}
                sys.modules.update(others)
