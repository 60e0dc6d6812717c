"""leam.parsing.tables: region areas, discards and classes.json of one parse run, on tiny label maps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leam.parsing import ParseResult, label_panel
from leam.parsing.classes import CLASS_ID, NOT_LABELLED, REGIONS
from leam.parsing.tables import parse_tables, region_areas

SETTINGS = {"forehead_fraction": 0.35, "neck_fraction": 0.3, "brow_thickness": 0.18, "nose_width": 0.28,
            "examples": 6, "device": "cpu"}


def _result() -> ParseResult:
    """Frame 4x4: image 0 half nose, a quarter skin, one eye pixel, the rest not labelled; image 1 discarded."""
    labels = np.full((2, 4, 4), NOT_LABELLED, np.uint8)
    labels[0, :, :2] = CLASS_ID["nose"]
    labels[0, :2, 2:] = CLASS_ID["skin"]
    labels[0, 3, 3] = CLASS_ID["left_eye"]
    return ParseResult(labels=labels, kept=np.array([True, False]), reasons=["", "landmarks_nan"],
                       available=["skin", "nose", "left_eye"])


def test_region_areas_are_fractions_of_the_frame():
    areas = region_areas(_result().labels)
    assert set(areas) == {f"area_{region}" for region in REGIONS}
    assert areas["area_nose"].tolist() == [0.5, 0.0] and areas["area_skin"].tolist() == [0.25, 0.0]
    assert areas["area_eyes"].tolist() == [1 / 16, 0.0] and areas["area_hair"].tolist() == [0.0, 0.0]


def test_parse_tables_index_discards_and_document():
    aligned = pd.DataFrame({"row": [0, 1], "image_id": ["a/1", "b/1"], "identity": ["a", "b"],
                            "gender": ["female", "male"], "path": ["p", "q"]})
    tables = parse_tables(aligned, _result(), "landmarks", SETTINGS)
    assert list(tables.index.columns[:6]) == ["row", "image_id", "identity", "gender", "parsed", "labelled_fraction"]
    assert tables.index.parsed.tolist() == [True, False]
    assert tables.index.labelled_fraction.tolist() == [0.8125, 0.0]  # 13 of 16 pixels
    assert tables.index.area_eyes.tolist() == [0.0625, 0.0]
    assert tables.discards.to_dict("records") == [{"image_id": "b/1", "reason": "landmarks_nan"}]
    assert tables.classes["discards"] == {"landmarks_nan": 1}
    assert tables.classes["available"] == ["skin", "left_eye", "nose"]  # canonical order, not the backend's
    assert tables.classes["landmark_parser"] == {k: SETTINGS[k] for k in
                                                 ("forehead_fraction", "neck_fraction", "brow_thickness", "nose_width")}
    assert "landmark_parser" not in parse_tables(aligned, _result(), "farl", SETTINGS).classes


def test_label_panel_is_frame_then_overlay():
    frame = np.full((4, 4, 3), 100, np.uint8)
    panel = label_panel(frame, _result().labels[0])
    assert panel.shape == (4, 8, 3)
    assert (panel[:, :4] == 100).all()
    assert (panel[1, 4] != 100).any() and (panel[2, 6] == 100).all()  # nose coloured, not-labelled pixel as is
