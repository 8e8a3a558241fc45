"""What a bundle says it needs (``metadata.json``): MONAI and PyTorch versions and extra packages.

A package the bundle requires (``required_packages_version``) that is not installed stops the pipeline at
load with the command that installs it. Optional packages (``optional_packages_version``, mostly what training
needs) and a MONAI older than the bundle's are warnings: many bundles run without them, and when one does not,
the error names them.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any

import monai
from packaging.version import InvalidVersion, Version

from pipelines.bundle.errors import BundleError


@dataclass
class Requirements:
    """What is missing or older than the bundle was made with."""

    missing_required: dict[str, str] = field(default_factory=dict)
    missing_optional: dict[str, str] = field(default_factory=dict)
    monai_declared: str = ""
    warnings: list[str] = field(default_factory=list)
    """What may stop the bundle from running as its authors ran it (an older MONAI than theirs)."""
    notes: list[str] = field(default_factory=list)
    """What is only worth knowing (optional packages, mostly for training, not installed)."""

    def install_hint(self, required_only: bool = False) -> str:
        """``pip install a==1 b==2`` for the missing packages (or only the required ones), or ''."""
        wanted = dict(self.missing_required) if required_only else {**self.missing_optional, **self.missing_required}
        return "pip install " + " ".join(f"{name}=={version}" if version else name for name, version in wanted.items()) \
            if wanted else ""


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _older(installed: str, declared: str) -> bool:
    try:
        return Version(installed).release[:2] < Version(declared).release[:2]
    except InvalidVersion:
        return False


def check(metadata: dict[str, Any], where: str) -> Requirements:
    """The bundle's declared needs against this installation; raises BundleError for missing required packages."""
    found = Requirements(monai_declared=str(metadata.get("monai_version", "")))
    for key, target in (("required_packages_version", found.missing_required),
                        ("optional_packages_version", found.missing_optional)):
        packages = metadata.get(key) or {}
        if not isinstance(packages, dict):
            continue
        for name, version in packages.items():
            if not _installed(str(name)):
                target[str(name)] = str(version or "")
    if found.missing_required:
        raise BundleError(f"{where}: the bundle requires packages that are not installed "
                          f"({', '.join(found.missing_required)}); install them: {found.install_hint(required_only=True)}")
    if found.missing_optional:
        found.notes.append(f"optional packages the bundle lists are not installed: {', '.join(found.missing_optional)}")
    if found.monai_declared and _older(monai.__version__, found.monai_declared):
        found.warnings.append(f"the bundle was made with MONAI {found.monai_declared}; installed is {monai.__version__}")
    return found
