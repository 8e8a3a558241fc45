"""Channel names coded with SNOMED CT: DICOM's own segmentation property types, then pacsnode's table."""

from __future__ import annotations

import json

import pytest
from pydicom.sr.codedict import Collection

from pipelines import anatomy, codes
from pipelines.bundle.labels import bundle_labels, channel_names
from pipelines.types import Code
from tests.pipelines import zoo, zoo_networks


def test_every_table_row_citing_dicom_matches_dicoms_own_code_and_meaning():
    dicom = {}
    for cid, category in anatomy.DICOM_GROUPS.items():
        for concept in Collection(cid).concepts.values():
            dicom.setdefault(str(concept.value), (concept.meaning, category))
    rows = anatomy.table_rows()
    assert len(rows) > 70
    for row in rows:
        assert row["category"] in anatomy.CATEGORIES and row["source"] in ("dicom", "totalsegmentator"), row
        if row["source"] == "dicom":
            assert dicom.get(row["code"]) == (row["meaning"], row["category"]), row
        else:
            assert anatomy.normalise(row["meaning"]) not in {anatomy.normalise(m) for m, _ in dicom.values()}, row


def test_every_wholebody_channel_name_is_coded_with_its_laterality():
    names = [name for name in zoo.WHOLEBODY_NAMES if name != "background"]
    names += ["rib_left_1", "rib_right_12", "vertebrae_T7", "gluteus_maximus_right", "heart_ventricle_left",
              "lung_middle_lobe_right", "urinary_bladder", "iliac_vena_left", "autochthon_right", "face"]
    for name in names:
        assert anatomy.lookup(name) is not None, name
    kidney = anatomy.lookup("kidney_left")
    assert kidney == anatomy.AnatomyCode(codes.ANATOMICAL_STRUCTURE, Code("64033007", "SCT", "Kidney"), anatomy.LEFT)
    assert anatomy.lookup("Right Kidney") == anatomy.AnatomyCode(kidney.category, kidney.type, anatomy.RIGHT)
    # a lateral concept keeps no modifier; a lesion word codes the lesion
    assert anatomy.lookup("heart_atrium_left").modifier is None
    assert anatomy.lookup("lung_middle_lobe_right") == anatomy.AnatomyCode(
        codes.ANATOMICAL_STRUCTURE, Code("72481006", "SCT", "Middle lobe of right lung"))
    assert anatomy.lookup("pancreatic tumor").type == Code("108369006", "SCT", "Neoplasm")
    assert anatomy.lookup("Right-Thalamus-Proper").type.meaning == "Thalamus"


def test_names_no_source_codes_are_not_guessed_but_suggested():
    assert anatomy.lookup("Left Kideny") is None
    assert anatomy.suggestions("Left Kideny")[0] == "kidney"
    assert anatomy.lookup("medulla") is None  # renal or oblongata: the name alone cannot say
    assert anatomy.is_background("Background") and anatomy.is_background("bg")


def test_labels_come_from_channel_def_label_def_or_the_config_and_settings_override(tmp_path):
    meta = json.loads((zoo_networks.swin_btcv(tmp_path / "s") / "configs" / "metadata.json").read_text())
    names, source = channel_names(meta)
    assert names[3] == "Left Kideny" and source.endswith("outputs.pred.channel_def")
    found = bundle_labels("btcv", meta, None, {3: {"label": "Left kidney", "category": ["91723000", "SCT", "Anatomical Structure"],
                                                   "type": ["64033007", "SCT", "Kidney"], "modifier": ["7771000", "SCT", "Left"]}})
    assert found.uncoded == {} and found.labels[3] == ("Left kidney", codes.ANATOMICAL_STRUCTURE,
                                                       Code("64033007", "SCT", "Kidney"), anatomy.LEFT)
    assert found.exclusive and 0 not in found.labels
    config_names, config_source = channel_names({}, {"background": 0, "liver": 1})
    assert config_names == {0: "background", 1: "liver"} and config_source == "the inference config's labels"


@pytest.mark.parametrize("name", ["spleen", "Spleen", "SPLEEN", " spleen "])
def test_case_and_spacing_do_not_matter(name):
    assert anatomy.lookup(name).type == Code("78961009", "SCT", "Spleen")
