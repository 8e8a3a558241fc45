"""What a bundle's metadata says it needs is checked when it loads."""

from __future__ import annotations

import json

import monai
import pytest

from pipelines.bundle import BundleError, BundlePipeline
from pipelines.bundle.requirements import check
from pipelines.settings import PipelineSettings
from tests.pipelines import zoo


def test_a_required_package_that_is_missing_stops_the_load_with_the_command_to_install_it(tmp_path):
    bundle_dir = zoo.pointwise(tmp_path / "b")
    path = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["required_packages_version"] = {"pacsnode-no-such-package": "1.2.3", "numpy": "1.24.4"}
    path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"requires packages that are not installed \(pacsnode-no-such-package\); "
                                          r"install them: pip install pacsnode-no-such-package==1.2.3"):
        BundlePipeline(PipelineSettings(name="b", bundle_dir=bundle_dir))


def test_optional_packages_and_an_older_monai_are_reported_not_refused():
    found = check({"monai_version": "99.0.0", "optional_packages_version": {"pytorch-ignite": "0.4.11", "numpy": "1.0"}},
                  "b/configs/inference.json")
    assert found.missing_optional == {"pytorch-ignite": "0.4.11"} and not found.missing_required
    assert any("pytorch-ignite" in note for note in found.notes)
    assert found.warnings == [f"the bundle was made with MONAI 99.0.0; installed is {monai.__version__}"]
    assert check({"monai_version": "1.4.0"}, "b").warnings == []
