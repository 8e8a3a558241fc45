"""`pacsnode pipelines` and `pacsnode infer`."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from node.cli import app
from tests.pipelines import zoo
from tests.support.sample import SAMPLE_DIR

runner = CliRunner()


def test_pipelines_lists_builtins_and_configured_bundles(tmp_path):
    bundle_dir = zoo.pointwise(tmp_path / "bundle")
    config = tmp_path / "pacsnode.yaml"
    config.write_text(yaml.safe_dump({"pipelines": [{"name": "dense", "bundle_dir": str(bundle_dir)}]}))
    result = runner.invoke(app, ["pipelines", "--config", str(config)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for expected in ("ct-tissue", "ct-lungs", "dense", "bundle", "built-in"):
        assert expected in result.output


def test_infer_prints_measurements_and_findings():
    result = runner.invoke(app, ["infer", "ct-lungs", str(SAMPLE_DIR)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Right lung" in result.output and "Left lung" in result.output
    assert "Pulmonary emphysema" in result.output and "Absent" in result.output


def test_infer_prints_located_findings():
    result = runner.invoke(app, ["infer", "ct-lung-cysts", str(SAMPLE_DIR)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert result.output.count("mm LPS") == 4 and "Lung air cyst 2" in result.output
    assert "at -92.1," in result.output  # the centre of the second sphere of sample_dicom.generate


def test_infer_names_an_unknown_pipeline():
    result = runner.invoke(app, ["infer", "no-such-pipeline", str(SAMPLE_DIR)], terminal_width=200)
    assert result.exit_code == 1
    assert "unknown pipeline" in result.output and "ct-lungs" in result.output
