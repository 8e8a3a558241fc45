"""A MONAI bundle's inference configuration, read as ``monai.bundle run`` reads it, with pacsnode's changes.

The bundle's ``configs/metadata.json`` and ``configs/inference.json`` (or ``.yaml``) are read with MONAI's
``ConfigParser``; ``bundle_root`` becomes the bundle's folder, ``device`` the device the pipeline chose, and
the pipeline's ``overrides`` change entries the way ``monai.bundle run --key value`` does (``null`` removes an
entry). Every error names the file and the key that could not be honoured and says what to change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.reference_resolver import ReferenceResolver

from pipelines.bundle.errors import BundleError, explain

logger = logging.getLogger(__name__)

INFERENCE_FILES = ("inference.json", "inference.yaml", "inference.yml")


def key_text(key: str) -> str:
    """A config key as bundles write it (``a#b#0``), whatever separator it came with."""
    return "#".join(ReferenceResolver.split_id(key))


def config_id(key: str) -> str:
    """A config key as MONAI's parser takes it (``a::b::0``)."""
    return ReferenceResolver.normalize_id(key)


def inference_config_path(bundle_dir: Path) -> Path:
    for name in INFERENCE_FILES:
        if (bundle_dir / "configs" / name).is_file():
            return bundle_dir / "configs" / name
    raise BundleError(f"{bundle_dir}: no configs/inference.json or configs/inference.yaml (Model Zoo layout expected)")


class BundleConfig:
    """The parsed configuration of one bundle; components are instantiated once and shared, as in MONAI."""

    def __init__(self, bundle_dir: Path, *, device: str | None = None, overrides: Mapping[str, Any] | None = None) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        self.metadata_path = self.bundle_dir / "configs" / "metadata.json"
        if not self.metadata_path.is_file():
            raise BundleError(f"{self.bundle_dir}: configs/metadata.json is missing (Model Zoo layout expected)")
        try:
            self.metadata: dict[str, Any] = json.loads(self.metadata_path.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.metadata_path}: not readable JSON ({exc})") from exc
        self.path = inference_config_path(self.bundle_dir)
        self.parser = ConfigParser()
        try:
            self.parser.read_meta(self.metadata_path)
            self.parser.read_config(self.path)
        except Exception as exc:  # noqa: BLE001 - a file MONAI cannot read is the bundle's problem, said plainly
            raise BundleError(f"{self.where()}: MONAI cannot read it ({explain(exc)})") from exc
        self.parser["bundle_root"] = str(self.bundle_dir)
        if device:
            self.parser["device"] = f"$torch.device('{device}')"
        self.overrides = dict(overrides or {})
        for key, value in self.overrides.items():
            self._override(key, value)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.bundle_dir.name)

    def where(self, key: str | None = None) -> str:
        """``<bundle>/configs/inference.json`` and, given, ``key 'a#b'``: where a message points the user."""
        place = f"{self.bundle_dir.name}/configs/{self.path.name}"
        return f"{place}, key '{key_text(key)}'" if key else place

    def _override(self, key: str, value: Any) -> None:
        """Set (or, for None, remove) one entry; the entry's parent must exist, so a mistyped key is refused."""
        parent_id, _, last = key_text(key).rpartition("#")
        parent = self.parser.get(config_id(parent_id)) if parent_id else self.parser.get()
        where = f"pipeline overrides['{key}']"
        if not isinstance(parent, (dict, list)):
            raise BundleError(f"{where}: {self.where(parent_id)} is not in the bundle's configuration; "
                              "an override changes an entry whose parent exists")
        if isinstance(parent, list) and not (last.isdigit() and int(last) < len(parent)):
            raise BundleError(f"{where}: {self.where(parent_id)} is a list of {len(parent)} entries; use an index below that")
        if value is None:
            if isinstance(parent, dict) and last not in parent:
                raise BundleError(f"{where}: {self.where(key)} does not exist, so it cannot be removed")
            if isinstance(parent, dict):
                del parent[last]
            else:
                parent.pop(int(last))
            self.parser.ref_resolver.reset()
            logger.info("bundle %s: %s removed by the pipeline's overrides", self.name, key_text(key))
            return
        self.parser[config_id(key)] = value
        logger.info("bundle %s: %s set by the pipeline's overrides", self.name, key_text(key))

    def __contains__(self, key: str) -> bool:
        return config_id(key) in self.parser

    def raw(self, key: str, default: Any = None) -> Any:
        """The entry as written (references and expressions not evaluated)."""
        return self.parser.get(config_id(key), default)

    def parsed(self, key: str, what: str = "") -> Any:
        """The entry evaluated and instantiated (once; later calls and references share the object)."""
        try:
            return self.parser.get_parsed_content(config_id(key))
        except BundleError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated into a message naming the key and the cause
            failing = self.failing_key(key)
            raise BundleError(f"{self.where(failing)}: {what or 'cannot be evaluated'}: {explain(exc)}"
                              f"{self.hint(failing, exc)}") from exc

    def references(self, key: str) -> list[str]:
        """The ids an entry refers to (``@id``), in the order MONAI finds them."""
        return list(ReferenceResolver.find_refs_in_config(self.raw(key), config_id(key)))

    def failing_key(self, key: str, seen: set[str] | None = None) -> str:
        """The deepest entry under ``key`` that fails to evaluate: the one the user must change."""
        seen = seen if seen is not None else set()
        seen.add(key_text(key))
        for reference in self.references(key):
            name = key_text(reference)
            if name in seen or config_id(name) not in self.parser:
                continue
            try:
                self.parser.get_parsed_content(config_id(name))
            except Exception:  # noqa: BLE001 - probing which reference fails
                return self.failing_key(name, seen)
        return key_text(key)

    def hint(self, key: str, exc: BaseException) -> str:
        """What to change for some failures seen with published bundles."""
        text = f"{explain(exc)}"
        cuda = [k for k, value in self.walk() if isinstance(value, str) and _names_cuda(value)]
        if "CUDA" in text or "cuda" in text:
            keys = ", ".join(f"'{k}'" for k in cuda) or f"'{key_text(key)}'"
            return (f" (the bundle names a CUDA device itself at {keys}; on a host without CUDA give the pipeline "
                    "overrides for those keys, e.g. map_location='cpu' and torch.device('cpu'))")
        if "unexpected keyword argument" in text:
            argument = text.split("unexpected keyword argument", 1)[1].strip(" '\"")
            return (f" (the installed MONAI no longer takes that argument; remove it with the pipeline's "
                    f"overrides: {{'{key_text(key)}#{argument}': null}})")
        return ""

    def walk(self, value: Any = None, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Every (key, raw value) in the configuration, depth first."""
        value = self.parser.get() if value is None and not prefix else value
        if isinstance(value, dict):
            for name, child in value.items():
                yield from self.walk(child, f"{prefix}#{name}" if prefix else str(name))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                yield from self.walk(child, f"{prefix}#{index}")
        elif prefix:
            yield prefix, value


def _names_cuda(value: str) -> bool:
    """An expression that picks CUDA unconditionally (``torch.device('cuda')``, ``map_location='cuda'``)."""
    text = value.replace('"', "'").replace(" ", "")
    return value.startswith("$") and "'cuda" in text and "is_available" not in text
