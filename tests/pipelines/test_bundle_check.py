"""`pacsnode bundle check`: loads a bundle, runs it on synthetic series and prints what to configure."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from node.cli import app
from pipelines.bundle.check import check_bundle, declared_task
from tests.pipelines import zoo_networks, zoo_scripts

runner = CliRunner()


def test_check_prints_codes_uncoded_names_runs_and_the_entry_to_use(tmp_path):
    bundle_dir = zoo_scripts.renal_unest(tmp_path / "renalStructures_UNEST_segmentation")
    result = runner.invoke(app, ["bundle", "check", str(bundle_dir)], terminal_width=250)
    assert result.exit_code == 0, result.output
    for name in ("kidney cortex", "medulla", "pelvicalyceal system"):
        assert "no code for" in result.output and f"'{name}'" in result.output
    assert "device cpu" in result.output and "40x96x96" in result.output and "80x192x192" in result.output
    entry = yaml.safe_load(result.stdout.split("pipeline entry:", 1)[1])["pipelines"][0]
    assert entry["bundle_dir"] == str(bundle_dir) and entry["task"] == "segmentation" and entry["modalities"] == ["CT"]
    assert entry["memory_mb"] > 0


def test_check_reports_a_bundle_that_cannot_run_and_what_to_change(tmp_path):
    bundle_dir = zoo_networks.pancreas_dints(tmp_path / "pancreas_ct_dints_segmentation")
    result = runner.invoke(app, ["bundle", "check", str(bundle_dir)], terminal_width=250)
    assert result.exit_code == 1 and "arch_ckpt" in result.output and "CUDA" in result.output
    fixed = runner.invoke(app, ["bundle", "check", str(bundle_dir), "-o", "arch_ckpt=$torch.load(@arch_ckpt_path, map_location='cpu')",
                                "-o", "dints_space#device=$torch.device('cpu')"], terminal_width=250)
    assert fixed.exit_code == 0, fixed.output
    assert "Pancreas" in fixed.output and "Neoplasm" in fixed.output  # 'pancreatic tumor' coded as the lesion


def test_the_check_measures_two_sizes_and_names_the_four_series_a_model_takes(tmp_path):
    report = check_bundle(zoo_networks.brats(tmp_path / "brats_mri_segmentation"), shapes=[(16, 32, 32), (32, 64, 64)],
                          overrides={"postprocessing#transforms#3": None})
    assert report.modalities == ["MR"] and report.channels == ["t1c", "t1", "t2", "flair"]
    assert [run.shape for run in report.runs] == [(16, 32, 32), (32, 64, 64)]
    assert report.estimated_peak_bytes() >= max(run.peak_bytes for run in report.runs)
    assert declared_task({"network_data_format": {"outputs": {"pred": {"type": "object", "format": "dict"}}}}) == "detection"
