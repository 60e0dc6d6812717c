"""leam.occlusion.selection: images with a map from every source and a reference, subsampled per identity."""

from __future__ import annotations

import pandas as pd
import pytest

from leam import occlusion as occ
from leam.errors import LeamError


def _index_and_meta() -> tuple[pd.DataFrame, pd.DataFrame]:
    index = pd.DataFrame({"row": range(6), "image_id": [f"a/{i}" for i in range(3)] + [f"b/{i}" for i in range(3)],
                          "identity": ["a"] * 3 + ["b"] * 3, "gender": ["female"] * 3 + ["male"] * 3})
    meta = index.assign(reference_image_id=["a/1", "a/0", "a/0", "b/1", "b/0", "b/0"], cosine=0.5)
    return index, meta


def test_select_images_uses_common_maps_references_and_subsampling() -> None:
    index, meta = _index_and_meta()
    other = meta.iloc[1:].assign(row=range(5))
    selection, counts = occ.select_images(index, {"x": meta, "y": other}, max_per_identity=2, seed=0)
    assert counts == {"no_map_for_all_sources": 1, "no_reference": 0, "subsampled": 1}
    assert len(selection) == 4 and selection.groupby("identity").size().max() == 2
    assert "a/0" not in set(selection.image_id)
    row = selection.set_index("image_id").loc["b/2"]
    assert row.reference_rows == [3] and row.map_row_x == 5 and row.map_row_y == 4
    mean_others, _ = occ.select_images(index, {"x": meta.assign(reference_image_id="mean_others")},
                                       reference_policy="mean_others")
    assert mean_others.set_index("image_id").loc["a/1"].reference_rows == [0, 2]


def test_images_without_a_reference_are_counted() -> None:
    index, meta = _index_and_meta()
    selection, counts = occ.select_images(index, {"x": meta.assign(reference_image_id="none")})
    assert selection.empty and counts["no_reference"] == 6


def test_select_images_errors_name_the_fix() -> None:
    index, meta = _index_and_meta()
    with pytest.raises(LeamError, match="references of 'y' differ"):
        occ.select_images(index, {"x": meta, "y": meta.assign(reference_image_id="a/2")})
    with pytest.raises(LeamError, match="`models` list is empty"):
        occ.select_images(index, {})
    with pytest.raises(LeamError, match="2 LEAM images are not in data/aligned/index.csv"):
        occ.select_images(index.iloc[:4], {"x": meta})
