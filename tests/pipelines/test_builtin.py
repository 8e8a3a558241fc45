"""The built-in pipelines on the phantom: masks on the volume's grid, Dice against the truth, coded outputs."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
from pydicom.dataset import Dataset

from pipelines import codes
from pipelines.builtin.ct_lungs import emphysema_grade
from pipelines.registry import available, get_pipeline
from pipelines.types import UnsupportedSeries
from pipelines.volume import load_datasets, load_series
from sample_dicom import generate
from tests.support.sample import dice, phantom_series


@pytest.fixture(scope="module")
def sample_volume(sample_paths):
    return load_series(sample_paths)


def segments_by_label(result):
    return {segment.label: segment for segment in result.segments}


def test_builtins_are_registered():
    described = available()
    assert {"ct-tissue", "ct-lungs"} <= set(described)
    assert all(described[name] for name in ("ct-tissue", "ct-lungs"))


def test_checking_routes_imports_no_pipeline():
    """`serve` checks its routes at start; that must not pull in torch and MONAI (seconds of start-up)."""
    script = (
        "import sys\n"
        "from node.config import Settings\n"
        "from node.route.rules import check_routes\n"
        "settings = Settings.model_validate({'destinations': [{'name': 'pacs', 'ae_title': 'PACS', 'host': "
        "'127.0.0.1', 'port': 104}], 'routes': [{'name': 'ct', 'match': {'Modality': 'CT'}, "
        "'pipelines': ['ct-tissue', 'ct-lungs'], 'destinations': ['pacs']}]})\n"
        "check_routes(settings)\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ct_tissue_reaches_dice_on_the_phantom(sample_volume, sample_truth):
    result = get_pipeline("ct-tissue").run(sample_volume)
    labels = sample_truth["labels"]
    truth = {
        "Body": np.isin(labels, generate.BODY_LABELS),
        "Bone": labels == generate.BONE,
        "Adipose tissue": labels == generate.FAT,
        "Air inside the body": np.isin(labels, (generate.RIGHT_LUNG, generate.LEFT_LUNG, generate.AIRWAY)),
    }
    segments = segments_by_label(result)
    assert set(segments) == set(truth)
    for label, mask in truth.items():
        segment = segments[label]
        assert segment.mask.dtype == bool and segment.mask.shape == sample_volume.array.shape
        assert dice(segment.mask, mask) >= 0.95, label
    assert not segments["Body"].mask[labels == generate.TABLE].any(), "the table must not be part of the body"
    assert segments["Bone"].type == codes.BONE and segments["Bone"].category == codes.TISSUE


def test_ct_tissue_measures_volume_and_mean_hu(sample_volume, sample_truth):
    result = get_pipeline("ct-tissue").run(sample_volume)
    air = next(s for s in result.segments if s.label == "Air inside the body")
    volumes = {m.segment_number: m.value for m in result.measurements if m.name == codes.VOLUME}
    means = {m.segment_number: m.value for m in result.measurements if m.name == codes.MEAN_ATTENUATION}
    truth_ml = np.isin(sample_truth["labels"], (4, 5, 6)).sum() * sample_volume.voxel_volume_ml
    assert volumes[air.number] == pytest.approx(truth_ml, rel=0.03)
    assert means[air.number] == pytest.approx(-860, abs=20)
    assert all(m.unit in (codes.MILLILITER, codes.HOUNSFIELD_UNIT) for m in result.measurements)


def test_ct_lungs_reaches_dice_and_removes_the_airway(sample_volume, sample_truth):
    result = get_pipeline("ct-lungs").run(sample_volume)
    labels = sample_truth["labels"]
    segments = segments_by_label(result)
    assert dice(segments["Right lung"].mask, labels == generate.RIGHT_LUNG) >= 0.95
    assert dice(segments["Left lung"].mask, labels == generate.LEFT_LUNG) >= 0.95
    airway = labels == generate.AIRWAY
    assert (segments["Right lung"].mask | segments["Left lung"].mask)[airway].mean() < 0.05
    assert segments["Left lung"].type == codes.LEFT_LUNG


def test_ct_lungs_measures_laa950_and_grades_emphysema(sample_volume, sample_truth):
    result = get_pipeline("ct-lungs").run(sample_volume)
    lungs = np.isin(sample_truth["labels"], (generate.RIGHT_LUNG, generate.LEFT_LUNG))
    truth_percent = 100 * sample_truth["emphysema"].sum() / lungs.sum()
    laa = [m.value for m in result.measurements if m.name == codes.LAA_950]
    volumes = [m.value for m in result.measurements if m.name == codes.VOLUME]
    assert len(laa) == 2 and 0 < sum(laa) / 2 == pytest.approx(truth_percent, abs=0.6)
    assert sum(volumes) == pytest.approx(lungs.sum() * sample_volume.voxel_volume_ml, rel=0.02)
    assert result.classifications[0].concept == codes.PULMONARY_EMPHYSEMA
    assert result.classifications[0].value == codes.ABSENT


def test_ct_lungs_grades_severe_emphysema(sample_volume):
    volume = copy.copy(sample_volume)
    volume.array = sample_volume.array.copy()
    lung_air = (volume.array < -700) & (volume.array > -950)
    volume.array[lung_air & (np.arange(volume.array.shape[2]) % 4 == 0)[None, None, :]] = -990
    result = get_pipeline("ct-lungs").run(volume)
    assert result.classifications[0].value in (codes.MODERATE, codes.SEVERE)


@pytest.mark.parametrize(("percent", "grade"), [(1, codes.ABSENT), (5, codes.MILD), (12, codes.MODERATE), (25, codes.SEVERE)])
def test_emphysema_grades(percent, grade):
    assert emphysema_grade(percent) == grade


def test_ct_lungs_sides_follow_patient_left_on_a_flipped_grid():
    grid = generate.Grid(shape=(24, 80, 80), pixel_spacing=4.4, slice_spacing=12.0, orientation=(-1, 0, 0, 0, -1, 0))
    datasets, labels = phantom_series(grid, "flipped-lungs")
    result = get_pipeline("ct-lungs").run(load_datasets(datasets))
    segments = segments_by_label(result)
    assert dice(segments["Left lung"].mask, labels == generate.LEFT_LUNG) >= 0.9
    assert dice(segments["Right lung"].mask, labels == generate.RIGHT_LUNG) >= 0.9


def test_accepts():
    header = Dataset()
    header.Modality = "CT"
    header.BodyPartExamined = "CHEST"
    assert get_pipeline("ct-lungs").accepts(header) is None
    assert get_pipeline("ct-tissue").accepts(header) is None
    header.BodyPartExamined = "HEAD"
    assert "not a chest CT" in get_pipeline("ct-lungs").accepts(header)
    header.Modality = "MR"
    assert "not CT" in get_pipeline("ct-tissue").accepts(header)


def test_ct_lungs_refuses_a_volume_without_lungs(sample_volume):
    volume = copy.copy(sample_volume)
    volume.array = np.where(sample_volume.array < -500, 40.0, sample_volume.array).astype(np.float32)
    volume.array[:, :4, :] = -1000.0  # keep air around the patient
    with pytest.raises(UnsupportedSeries, match="no lungs found"):
        get_pipeline("ct-lungs").run(volume)


def test_ct_tissue_refuses_a_volume_of_air(sample_volume):
    volume = copy.copy(sample_volume)
    volume.array = np.full_like(sample_volume.array, -1000.0)
    with pytest.raises(UnsupportedSeries, match="no body found"):
        get_pipeline("ct-tissue").run(volume)
