"""leam.data.accounting: every photo is kept or a counted discard, and metrics/data.json adds up."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leam.data.accounting import (
    account_alignment,
    data_metrics,
    drop_small_identities,
    read_faces_discards,
    read_faces_index,
    read_faces_summary,
)
from leam.data.manifest import INDEX_COLUMNS
from leam.errors import LeamError


def _index() -> pd.DataFrame:
    """Faces index: ann (3 photos, female), bob (2, male), cy (1, unknown)."""
    ids = ["ann/1", "ann/2", "ann/3", "bob/1", "bob/2", "cy/1"]
    return pd.DataFrame({"image_id": ids, "identity": [i.split("/")[0] for i in ids],
                         "gender": ["female"] * 3 + ["male"] * 2 + ["unknown"],
                         "path": [f"data/faces/images/{i}.jpg" for i in ids], "sha256": "0", "source": "sample"})


def test_drop_small_identities_keeps_identities_with_enough_photos():
    index = _index()
    keep, discards = drop_small_identities(index, 2)
    assert keep.tolist() == [True] * 5 + [False]
    assert discards.to_dict("records") == [{"image_id": "cy/1", "path": "data/faces/images/cy/1.jpg",
                                            "reason": "too_few_images"}]
    keep, discards = drop_small_identities(index.iloc[:0], 2)
    assert keep.shape == (0,) and discards.empty and list(discards.columns) == ["image_id", "path", "reason"]
    assert drop_small_identities(index, 0)[0].all()  # 0 means at least one photo


def test_account_alignment_lists_every_photo_once_in_stage_order():
    index = _index()
    upstream = pd.DataFrame([{"image_id": "dan/1", "path": "x", "reason": "checksum"}])
    # alignment kept ann/1, ann/3, bob/1, cy/1 and lost ann/2 (no face) and bob/2 (unreadable)
    kept, keep, discards = account_alignment(index, [0, 2, 3, 5], [(1, "no_face"), (4, "unreadable")], upstream, 2)
    assert list(kept.columns) == ["row", *INDEX_COLUMNS]
    assert kept.image_id.tolist() == ["ann/1", "ann/3"] and kept.row.tolist() == [0, 1]
    assert keep.tolist() == [True, True, False, False]  # bob and cy are left with one aligned photo each
    assert discards.to_dict("list") == {
        "image_id": ["dan/1", "ann/2", "bob/2", "bob/1", "cy/1"], "path": ["x", *index.path[[1, 4, 3, 5]]],
        "reason": ["checksum", "no_face", "unreadable", "too_few_images", "too_few_images"],
        "stage": ["faces", "align", "align", "align", "align"]}


def test_data_metrics_add_up_per_step_and_gender():
    index = _index()
    upstream = pd.DataFrame([{"image_id": "dan/1", "path": "x", "reason": "checksum"},
                             {"image_id": "nameless", "path": "y", "reason": "bad_annotation"}])
    kept, _, discards = account_alignment(index, [0, 2, 3, 5], [(1, "no_face"), (4, "unreadable")], upstream, 2)
    metrics = data_metrics(index, kept, discards, {"source": "sample", "not_selected": 4, "images_by_gender": {}})
    assert metrics["inputs"] == 6 + 2 + 4 and metrics["images"] == metrics["kept"] + metrics["discarded"] == 8
    assert metrics["identities"] == 4  # ann, bob, cy, dan; "nameless" belongs to no identity
    assert metrics["discarded_by_reason"] == {"bad_annotation": 1, "checksum": 1, "no_face": 1, "too_few_images": 2,
                                              "unreadable": 1}
    assert metrics["by_gender"]["female"] == {"identities": 1, "images": 3, "kept": 2, "discarded": 1}
    assert metrics["by_gender"]["unknown"]["images"] == 3  # cy/1 plus the two faces-stage discards
    assert sum(g["images"] for g in metrics["by_gender"].values()) == metrics["images"]
    assert metrics["faces"] == {"source": "sample", "not_selected": 4}  # only the scalars of the summary
    assert metrics["steps"] == {"faces": {"inputs": 12, "kept": 6, "discarded": 2, "not_selected": 4},
                                "align": {"inputs": 6, "kept": 2, "discarded": 4}}


def test_readers_check_the_faces_outputs(tmp_path):
    path = tmp_path / "index.csv"
    with pytest.raises(LeamError, match="run `dvc repro faces`"):
        read_faces_index(path)
    pd.concat([_index(), _index().iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(LeamError, match="duplicate image_id 'ann/1'"):
        read_faces_index(path)
    _index().to_csv(path, index=False)
    assert read_faces_index(path).sha256.tolist() == ["0"] * 6  # read as strings
    assert read_faces_discards(tmp_path).empty and read_faces_summary(tmp_path) is None
    pd.DataFrame([{"image_id": "a/1", "path": "NA", "reason": "missing", "extra": 1}]).to_csv(
        tmp_path / "discards.csv", index=False)
    assert read_faces_discards(tmp_path).to_dict("records") == [{"image_id": "a/1", "path": "NA", "reason": "missing"}]
    (tmp_path / "summary.json").write_text(json.dumps({"not_selected": 3}))
    assert read_faces_summary(tmp_path) == {"not_selected": 3}
    assert np.asarray(read_faces_index(path).index).tolist() == list(range(6))
