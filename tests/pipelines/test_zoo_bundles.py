"""Bundles in the layouts of published Model Zoo bundles run as they are, from their folder alone.

Each bundle is written by :mod:`tests.pipelines.zoo` in its namesake's shape (``@image_key`` references,
checkpoint paths built in the config, CheckpointLoader among handlers, ``scripts/`` packages, YAML configs)
with weights whose output is known; labels come from the bundle's metadata alone unless a test says otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from pipelines import anatomy
from pipelines.bundle import BundleError, BundlePipeline, BundleRunError
from pipelines.settings import PipelineSettings
from pipelines.types import Code, Volume, bounding_box
from pipelines.volume import load_datasets
from sample_dicom import generate
from tests.pipelines import zoo, zoo_networks, zoo_scripts
from tests.support.sample import phantom_series

GRID = generate.Grid(shape=(24, 64, 64), pixel_spacing=5.0, slice_spacing=10.0)
KIDNEY = Code("64033007", "SCT", "Kidney")


@pytest.fixture(scope="module")
def volume() -> Volume:
    datasets, _ = phantom_series(GRID, "zoo")
    return load_datasets(datasets)


def pipeline(bundle_dir, name="zoo", **settings) -> BundlePipeline:
    return BundlePipeline(PipelineSettings(name=name, bundle_dir=bundle_dir, **settings))


def test_spleen_layout_runs_as_published_with_its_labels_coded_from_metadata(tmp_path, volume):
    spleen = pipeline(zoo.spleen(tmp_path / "spleen_ct_segmentation", threshold_hu=0.0))
    assert spleen.loading.key == "image"  # LoadImaged's keys were the reference "@image_key"
    assert spleen.inferer.sw_batch_size == 4 and spleen.inferer.overlap == 0.5  # the bundle's own inferer
    result = spleen.run(volume)
    [segment] = result.segments
    assert (segment.label, segment.type, segment.modifier) == ("Spleen", Code("78961009", "SCT", "Spleen"), None)
    assert np.mean(segment.mask != zoo.expected_unet(volume.array, 0.0)) < 1e-3


def test_wholebody_layout_names_every_channel_and_its_variant_follows_an_override(tmp_path, volume):
    bundle_dir = zoo.wholebody(tmp_path / "wholeBody_ct_segmentation")
    highres = pipeline(bundle_dir)
    assert highres.inferer.padding_mode == "replicate" and highres.inferer.sw_batch_size == 1
    result = highres.run(volume)
    expected = zoo.expected_bands(volume.array, len(zoo.WHOLEBODY_NAMES), zoo.WHOLEBODY_STEP, (-1000.0, 1000.0))
    labels = {segment.label: segment for segment in result.segments}
    for value in np.unique(expected)[1:]:
        segment = labels[zoo.labels_pretty(zoo.WHOLEBODY_NAMES[value])]
        assert np.array_equal(segment.mask, expected == value)
    right = labels["Kidney right"]
    assert right.type == KIDNEY and right.modifier == anatomy.RIGHT

    lowres = pipeline(bundle_dir, overrides={"displayable_configs#highres": False}).run(volume)
    shifted = {segment.label for segment in lowres.segments}
    assert "Spleen" not in shifted and {"Kidney left", "Gallbladder"} <= shifted  # model_lowres.pt, 10 mm grid


def test_swin_unetr_bundle_names_the_argument_to_remove_then_runs_with_the_override(tmp_path, volume):
    bundle_dir = zoo_networks.swin_btcv(tmp_path / "swin_unetr_btcv_segmentation", constant_label=6)
    with pytest.raises(BundleError, match=r"inference.json, key 'network_def'.*img_size.*'network_def#img_size': null"):
        pipeline(bundle_dir)
    swin = pipeline(bundle_dir, overrides={"network_def#img_size": None, "inferer#roi_size": [64, 64, 64]})
    assert swin.labels.uncoded == {3: "Left Kideny"}  # misspelt in the published metadata: reported, not coded
    assert swin.labels.labels[2][2:] == (KIDNEY, anatomy.RIGHT)
    [liver] = swin.run(volume).segments
    assert liver.label == "Liver" and liver.voxel_count == volume.array.size


def test_dints_bundle_that_names_cuda_runs_on_the_cpu_with_overrides(tmp_path, volume):
    bundle_dir = zoo_networks.pancreas_dints(tmp_path / "pancreas_ct_dints_segmentation", constant_label=1)
    with pytest.raises(BundleError, match=r"inference.yaml.*CUDA.*'arch_ckpt', 'dints_space#device'"):
        pipeline(bundle_dir)
    dints = pipeline(bundle_dir, overrides=zoo_networks.DINTS_ON_CPU)  # its numpy architecture file loads as data
    [pancreas] = dints.run(volume).segments
    assert pancreas.type == Code("15776009", "SCT", "Pancreas") and pancreas.voxel_count == volume.array.size


def test_pediatric_layout_loads_the_file_its_handler_names_and_imports_its_scripts(tmp_path, volume):
    bundle_dir = zoo_scripts.pediatric(tmp_path / "pediatric_abdominal_ct_segmentation", constant_label=1)
    ped = pipeline(bundle_dir)
    assert ped.labels.source.endswith("outputs.pred.label_def")
    [liver] = ped.run(volume).segments  # liver on the cropped foreground, inverted back onto the grid
    foreground = volume.array > -250.0
    assert liver.label == "Liver" and liver.box == bounding_box(foreground)
    assert liver.voxel_count == int(np.prod([part.stop - part.start for part in liver.box]))


def test_two_bundles_with_their_own_scripts_package_stay_apart(tmp_path, volume):
    plain = pipeline(zoo_scripts.renal_unest(tmp_path / "a" / "renalStructures_UNEST_segmentation"), name="plain")
    negated = pipeline(zoo_scripts.renal_unest(tmp_path / "b" / "renalStructures_UNEST_segmentation", negate=True),
                       name="negated")
    assert type(plain.network).__module__ == type(negated.network).__module__ == "scripts.networks.unest"
    assert type(plain.network) is not type(negated.network)
    assert plain.run(volume).segments and not negated.run(volume).segments  # negated intensity: background only
    assert plain.run(volume).segments  # and the first still runs its own code
    assert set(plain.labels.uncoded.values()) == {"kidney cortex", "medulla", "pelvicalyceal system"}


def four_channel_volume() -> tuple[Volume, dict[str, tuple[int, int]]]:
    """An MR study of four series on one grid, each with a bright blob at its own place."""
    shape = (24, 48, 48)
    places = {"T1c": (12, 12), "T1": (12, 36), "T2": (36, 12), "FLAIR": (36, 36)}
    channels = {}
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for name, (cj, ci) in places.items():
        array = np.full(shape, 100.0, dtype=np.float32)
        array[((k - 12) ** 2 / 16 + (j - cj) ** 2 / 25 + (i - ci) ** 2 / 25) <= 1] = 400.0
        channels[name] = array
    header = Dataset()
    header.Modality, header.SeriesInstanceUID = "MR", "1.2.826.0.1.3680043.8.498.1"
    return Volume(channels["T1"], np.diag([2.0, 2.0, 3.0, 1.0]), [header], channels=channels), places


def test_four_channel_mr_bundle_takes_the_series_in_its_declared_order(tmp_path):
    volume, places = four_channel_volume()
    bundle_dir = zoo_networks.brats(tmp_path / "brats_mri_segmentation")
    with pytest.raises(BundleRunError, match="merges its 3 named output channels"):
        pipeline(bundle_dir, modalities=["MR"]).run(volume)
    coded = pipeline(bundle_dir, modalities=["MR"], labels=zoo_networks.BRATS_LABELS).run(volume)
    centres = {segment.label: tuple((part.start + part.stop) // 2 for part in segment.box[1:]) for segment in coded.segments}
    # BraTS values: 4 where channel 2 (T2), else 1 where channel 0 (T1c), else 2 where channel 1 (T1)
    assert centres == {"Necrotic tumor core": places["T1c"], "Peritumoral edema": places["T1"],
                       "Enhancing tumor": places["T2"]}
    per_channel = pipeline(bundle_dir, modalities=["MR"], overrides={"postprocessing#transforms#3": None}).run(volume)
    assert [segment.label for segment in per_channel.segments] == ["Tumor core", "Whole tumor", "Enhancing tumor"]
    assert per_channel.segments[0].type == Code("108369006", "SCT", "Neoplasm")


def test_a_missing_input_series_is_a_clear_refusal(tmp_path):
    volume, _ = four_channel_volume()
    del volume.channels["FLAIR"]
    bundle = pipeline(zoo_networks.brats(tmp_path / "brats"), modalities=["MR"], labels=zoo_networks.BRATS_LABELS)
    with pytest.raises(Exception, match=r"missing \['flair'\]"):
        bundle.run(volume)


def test_overrides_refuse_keys_the_bundle_does_not_have(tmp_path):
    bundle_dir = zoo.spleen(tmp_path / "spleen")
    with pytest.raises(BundleError, match=r"overrides\['infrer#roi_size'\].*'infrer' is not in"):
        pipeline(bundle_dir, overrides={"infrer#roi_size": [16, 16, 16]})
    with pytest.raises(BundleError, match="does not exist, so it cannot be removed"):
        pipeline(bundle_dir, overrides={"network_def#no_such_argument": None})
