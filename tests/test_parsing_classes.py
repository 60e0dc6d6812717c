"""Canonical class table and the FaRL / BiSeNet index mappings."""

from __future__ import annotations

import numpy as np
import pytest

from leam.errors import LeamError
from leam.parsing.classes import (
    BISENET_NAMES,
    CLASS_ID,
    CLASSES,
    FARL_CELEBM_NAMES,
    NOT_LABELLED,
    REGION_OF_CLASS,
    REGIONS,
    UNIONS,
    canonical_to_parser,
    check_canonical,
    class_table,
    map_to_canonical,
    parser_to_canonical,
)


@pytest.mark.parametrize("parser", ["farl_celebm", "bisenet"])
def test_mapping_round_trips(parser):
    ids = np.arange(19)
    canonical = map_to_canonical(ids, parser)
    assert sorted(canonical.tolist()) == list(range(19))          # a permutation: no class lost or merged
    assert canonical_to_parser(parser)[canonical].tolist() == ids.tolist()
    back = parser_to_canonical(parser)[canonical_to_parser(parser)[np.arange(19)]]
    assert back.tolist() == list(range(19))
    assert canonical_to_parser(parser)[NOT_LABELLED] == NOT_LABELLED


def test_orders_differ_where_they_should():
    farl, bise = parser_to_canonical("farl_celebm"), parser_to_canonical("bisenet")
    assert farl[:19].tolist() == list(range(19))                  # canonical order is facer's order
    assert len(FARL_CELEBM_NAMES) == len(BISENET_NAMES) == 19 and len(CLASSES) == 20  # + the union person_other
    assert CLASSES[19] == "person_other" and set(UNIONS["person_other"]) <= set(CLASSES[:19])
    # lips are swapped at 12/13 between the two projects
    assert farl[12] == CLASS_ID["lower_lip"] and farl[13] == CLASS_ID["upper_lip"]
    assert bise[12] == CLASS_ID["upper_lip"] and bise[13] == CLASS_ID["lower_lip"]
    # same physical (image-left) eye, brow and ear: CelebAMask-HQ l_* == facer r* == subject's right
    assert bise[BISENET_NAMES.index("l_eye")] == farl[FARL_CELEBM_NAMES.index("re")] == CLASS_ID["right_eye"]
    assert bise[BISENET_NAMES.index("l_brow")] == farl[FARL_CELEBM_NAMES.index("rb")] == CLASS_ID["right_brow"]
    assert bise[BISENET_NAMES.index("r_ear")] == farl[FARL_CELEBM_NAMES.index("lr")] == CLASS_ID["left_ear"]
    assert bise[1] == CLASS_ID["skin"] and bise[11] == CLASS_ID["inner_mouth"] and bise[15] == CLASS_ID["necklace"]


def test_unknown_ids_are_errors():
    with pytest.raises(LeamError, match=r"unknown class ids \[19, 30\]"):
        map_to_canonical(np.array([[0, 19], [30, 2]]), "bisenet")
    with pytest.raises(LeamError, match="choose one of"):
        parser_to_canonical("lapa")
    assert check_canonical(np.array([0, 18, 255, 19, 20, 200])).tolist() == [20, 200]


def test_regions_partition_the_classes_and_table():
    members = [name for group in REGIONS.values() for name in group]
    assert sorted(members) == sorted(CLASSES) and len(members) == len(set(members))
    assert REGION_OF_CLASS["upper_lip"] == "mouth" and REGION_OF_CLASS["left_eye"] == "eyes"
    table = class_table(["skin", "nose"], "landmarks")
    assert table["available"] == ["skin", "nose"] and "hair" in table["not_available"]
    assert [row["id"] for row in table["classes"]] == list(range(20))
    assert table["unions"]["person_other"] == list(UNIONS["person_other"]) and "person_other" in table["not_available"]
    with pytest.raises(LeamError, match="unknown class name"):
        class_table(["beard"], "landmarks")
