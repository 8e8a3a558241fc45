"""Loading a series into one volume: order, geometry, rescale, compression, multi-frame, and rejections."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, MRImageStorage, RLELossless

from pipelines.types import UnsupportedSeries
from pipelines.volume import load_datasets, load_series
from sample_dicom import generate
from tests.support.sample import phantom_series, write_datasets

SMALL = generate.Grid(shape=(20, 64, 64), pixel_spacing=5.5, slice_spacing=12.0)


def assert_matches_phantom(volume) -> None:
    """Every voxel's HU is the phantom's HU at that voxel's LPS position (noise aside): the affine is right."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.array.shape), indexing="ij")
    points = volume.affine @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    _, mean = generate.labels_at(points[0], points[1], points[2])
    error = np.abs(volume.array.ravel() - mean)
    assert np.mean(error < 8 * generate.LUNG_NOISE_HU) > 0.999, "volume does not match the phantom at its affine"


@pytest.fixture(scope="module")
def small_series() -> list[Dataset]:
    datasets, _ = phantom_series(SMALL, "small")
    return datasets


def test_sample_loads_with_affine_and_hu(sample_paths, sample_truth):
    volume = load_series(sample_paths)
    assert volume.array.shape == generate.SAMPLE.shape
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.affine, sample_truth["affine"], atol=1e-3)
    assert volume.spacing == pytest.approx((2.2, 2.2, 4.0))
    lungs = np.isin(sample_truth["labels"], (generate.RIGHT_LUNG, generate.LEFT_LUNG))
    assert float(volume.array[lungs].mean()) == pytest.approx(-860, abs=15)
    assert [int(ds.InstanceNumber) for ds in volume.datasets] == list(range(1, 73))
    assert "PixelData" not in volume.datasets[0]


def test_shuffled_files_give_the_same_volume(tmp_path, small_series):
    paths = write_datasets(small_series, tmp_path)
    ordered = load_series(paths)
    shuffled_paths = paths[:]
    random.Random(4).shuffle(shuffled_paths)
    shuffled = load_series(shuffled_paths)
    np.testing.assert_array_equal(ordered.array, shuffled.array)
    np.testing.assert_allclose(ordered.affine, shuffled.affine)
    assert [ds.SOPInstanceUID for ds in ordered.datasets] == [ds.SOPInstanceUID for ds in shuffled.datasets]
    assert_matches_phantom(shuffled)


def test_flipped_normal_and_reversed_instance_numbers():
    # Rows run anterior (-y), so the slice normal points to the feet; instance numbers count head to feet.
    grid = generate.Grid(shape=(20, 64, 64), pixel_spacing=5.5, slice_spacing=12.0, orientation=(1, 0, 0, 0, -1, 0))
    datasets, _ = phantom_series(grid, "flipped")
    for n, ds in enumerate(reversed(datasets)):
        ds.InstanceNumber = n + 1
    volume = load_datasets(datasets)
    assert volume.affine[2, 2] == pytest.approx(-12.0)
    assert_matches_phantom(volume)


def test_oblique_orientation():
    angle = np.radians(25)
    row = (np.cos(angle), 0.0, np.sin(angle))
    column = (0.0, 1.0, 0.0)
    grid = generate.Grid(shape=(20, 64, 64), pixel_spacing=5.5, slice_spacing=10.0, orientation=(*row, *column))
    datasets, _ = phantom_series(grid, "oblique")
    random.Random(1).shuffle(datasets)
    volume = load_datasets(datasets)
    np.testing.assert_allclose(volume.affine[:3, 0], np.array(row) * 5.5, atol=1e-4)
    assert_matches_phantom(volume)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_compressed_transfer_syntaxes_decode(tmp_path, small_series, syntax):
    plain = load_datasets(copy.deepcopy(small_series[:4]))
    compressed = []
    for ds in copy.deepcopy(small_series[:4]):
        ds.compress(syntax)
        compressed.append(ds)
    volume = load_series(write_datasets(compressed, tmp_path))
    np.testing.assert_array_equal(volume.array, plain.array)


def test_enhanced_multi_frame_ct(small_series):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    classic = load_datasets(copy.deepcopy(small_series))
    shuffled = copy.deepcopy(small_series)
    random.Random(2).shuffle(shuffled)
    enhanced = LegacyConvertedEnhancedCTImage(
        shuffled, series_instance_uid="1.2.826.0.1.3680043.8.498.1", series_number=9, sop_instance_uid="1.2.826.0.1.3680043.8.498.2", instance_number=1
    )
    volume = load_datasets([enhanced])
    np.testing.assert_array_equal(volume.array, classic.array)
    np.testing.assert_allclose(volume.affine, classic.affine, atol=1e-4)
    assert len(volume.datasets) == 1
    assert sorted(volume.frame_numbers) == list(range(1, 21))
    assert volume.frame_numbers != list(range(1, 21)), "frames were stored shuffled, so the order must differ"


def test_rescale_is_applied_per_slice(small_series):
    datasets = copy.deepcopy(small_series[:3])
    reference = load_datasets(copy.deepcopy(datasets))
    raw = np.frombuffer(datasets[1].PixelData, dtype=np.uint16).astype(np.int32) - 1024  # HU
    datasets[1].RescaleSlope, datasets[1].RescaleIntercept = "2", "-2000"
    datasets[1].PixelData = ((raw + 2000) // 2).astype(np.uint16).tobytes()
    volume = load_datasets(datasets)
    assert np.max(np.abs(volume.array[1] - reference.array[1])) <= 1.0


def test_localizer_is_skipped(small_series):
    localizer = copy.deepcopy(small_series[0])
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    localizer.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    localizer.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    volume = load_datasets([localizer, *copy.deepcopy(small_series)])
    assert volume.array.shape[0] == 20
    assert any("localizer" in note for note in volume.notes)


def test_two_acquisitions_at_same_positions_pick_one_and_say_so(small_series):
    second = copy.deepcopy(small_series[:12])
    for n, ds in enumerate(second):
        ds.AcquisitionNumber = 2
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.5{n}"
    volume = load_datasets([*copy.deepcopy(small_series), *second])
    assert volume.array.shape[0] == 20
    assert {int(ds.AcquisitionNumber) for ds in volume.datasets} == {1}
    assert any("acquisitions/phases" in note for note in volume.notes)


def test_rejects_duplicate_positions_that_nothing_tells_apart(small_series):
    twin = copy.deepcopy(small_series[5])
    twin.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    with pytest.raises(UnsupportedSeries, match="same position"):
        load_datasets([*copy.deepcopy(small_series), twin])


def test_rejects_missing_slices(small_series):
    datasets = copy.deepcopy(small_series)
    del datasets[8:10]
    with pytest.raises(UnsupportedSeries, match="2 slice\\(s\\) missing"):
        load_datasets(datasets)


def test_rejects_mixed_orientations(small_series):
    datasets = copy.deepcopy(small_series)
    datasets[3].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(UnsupportedSeries, match="mixed orientations"):
        load_datasets(datasets)


def test_rejects_non_image_objects(small_series):
    report = Dataset()
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    report.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.88"
    report.Modality = "SR"
    with pytest.raises(UnsupportedSeries, match="not an image"):
        load_datasets([*copy.deepcopy(small_series[:3]), report])


def test_rejects_unreadable_files(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(UnsupportedSeries, match="not a readable DICOM file"):
        load_series([bad])


def mr_series(grid: generate.Grid) -> list[Dataset]:
    datasets, _ = phantom_series(grid, "mr")
    for ds in datasets:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.Modality = "MR"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = "10", "500", 1, "1.5"
        for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType", "KVP"):
            delattr(ds, keyword)
    return datasets


def test_enhanced_multi_frame_mr():
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    datasets = mr_series(generate.Grid(shape=(8, 32, 32), pixel_spacing=11.0, slice_spacing=30.0))
    classic = load_datasets(copy.deepcopy(datasets))
    enhanced = LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid="1.2.826.0.1.3680043.8.498.3", series_number=3, sop_instance_uid="1.2.826.0.1.3680043.8.498.4", instance_number=1
    )
    volume = load_datasets([enhanced])
    np.testing.assert_array_equal(volume.array, classic.array)
    np.testing.assert_allclose(volume.affine, classic.affine, atol=1e-4)


def test_enhanced_phases_at_same_positions_pick_one(small_series):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    second = copy.deepcopy(small_series[:10])
    for n, ds in enumerate(second):
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.6{n}"
    enhanced = LegacyConvertedEnhancedCTImage(
        [*copy.deepcopy(small_series), *second], series_instance_uid="1.2.826.0.1.3680043.8.498.7", series_number=9,
        sop_instance_uid="1.2.826.0.1.3680043.8.498.8", instance_number=1,
    )
    seen: set[float] = set()
    for item in enhanced.PerFrameFunctionalGroupsSequence:  # the second frame at a position is phase 2
        position = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        item.FrameContentSequence[0].TemporalPositionIndex = 2 if position in seen else 1
        seen.add(position)
    volume = load_datasets([enhanced])
    assert volume.array.shape[0] == 20 and len(volume.frame_numbers) == 20
    frames = enhanced.PerFrameFunctionalGroupsSequence
    assert {frames[n - 1].FrameContentSequence[0].TemporalPositionIndex for n in volume.frame_numbers} == {1}
    assert any("acquisitions/phases" in note for note in volume.notes)


def test_native_pixel_data_signed_and_with_bits_above_high_bit(small_series):
    reference = load_datasets(copy.deepcopy(small_series[:3]))
    signed = copy.deepcopy(small_series[:3])
    garbage = copy.deepcopy(small_series[:3])
    for ds in signed:
        hu = np.frombuffer(ds.PixelData, dtype=np.uint16).astype(np.int32) - 1024
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit, ds.RescaleIntercept = 1, 16, 15, "0"
        ds.PixelData = hu.astype(np.int16).tobytes()
    for ds in garbage:  # an overlay bit above the 12 stored bits
        ds.PixelData = (np.frombuffer(ds.PixelData, dtype=np.uint16) | np.uint16(0x8000)).tobytes()
    np.testing.assert_array_equal(load_datasets(signed).array, reference.array)
    np.testing.assert_array_equal(load_datasets(garbage).array, reference.array)
