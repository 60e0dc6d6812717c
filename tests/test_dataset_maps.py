"""LEAM maps of an aligned set (leam.dataset_maps): references, stored maps, meta/discards, cheap errors first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch.nn.functional as F

from leam import core, embedding
from leam.config import LeamParams
from leam.dataset_maps import dataset_maps, probe_photos
from leam.errors import LeamError
from tests.test_core import FRAME_PADDING, load_registered


@pytest.fixture(scope="module")
def dlib(weights_dir):
    return load_registered("dlib_resnet", weights_dir)


def aligned(real_faces) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The 6 real faces (3 identities x 2) as an aligned index (``row`` = array row), frames and landmarks."""
    index = real_faces["index"][["image_id", "identity", "gender"]].reset_index(drop=True)
    return index.assign(row=np.arange(len(index))), real_faces["frames"], real_faces["landmarks"]


def test_probe_photos_are_the_first_aligned_rows(real_faces):
    index, frames, landmarks = aligned(real_faces)
    index = index.assign(row=[5, 4, 3, 2, 1, 0])
    probe_frames, probe_landmarks = probe_photos(index, frames, landmarks, 2)
    assert np.array_equal(probe_frames, frames[[5, 4]]) and np.array_equal(probe_landmarks, landmarks[[5, 4]])


def test_errors_come_before_any_model_pass(real_faces, dlib):
    spec, model = dlib
    index, frames, landmarks = aligned(real_faces)
    with pytest.raises(LeamError, match="leam.store_size=448 exceeds the frame size 224"):
        dataset_maps(model, spec, spec.layers, index, frames, landmarks, LeamParams(store_size=448), FRAME_PADDING)
    single = index.assign(identity=[f"person{i}" for i in range(len(index))])
    with pytest.raises(LeamError, match=r"no image has a reference \(dropped: \{'single_image_identity': 6\}\)"):
        dataset_maps(model, spec, spec.layers, single, frames, landmarks, LeamParams(), FRAME_PADDING)


def test_explicit_pairs_give_meta_discards_and_record(real_faces, dlib):
    spec, model = dlib
    index, frames, landmarks = aligned(real_faces)
    ids = list(index.image_id)
    pairs = pd.DataFrame({"image_id": [ids[0], ids[2], ids[3]], "reference_image_id": [ids[1], ids[2], ids[4]]})
    cfg = LeamParams(reference="pairs", store_size=28, batch_size=4, placement="receptive_field")
    layers = [spec.layers[-1]]
    result = dataset_maps(model, spec, layers, index, frames, landmarks, cfg, FRAME_PADDING, pairs)
    assert result.maps.shape == (2, 2, 28, 28) and result.maps.dtype == np.float32
    assert list(result.meta.image_id) == [ids[0], ids[3]] and list(result.meta.reference_image_id) == [ids[1], ids[4]]
    # two reasons (self reference, not in pairs) -> the generic reason; meta + discards = the index
    assert result.dropped == {"self_reference": 1, "not_in_pairs": 3}
    assert set(result.discards.reason) == {"no_reference"} and len(result.discards) == 4
    assert result.record["dropped"] == {"not_in_pairs": 3, "self_reference": 1}  # sorted by reason
    assert result.record["layers"] == [*layers, "overall"] and result.record["images_in"] == 6
    assert result.record["model"] == "dlib_resnet" and result.record["grid"] == 28
    # each stored map is the core's map of that pair, area-downsampled; overall = the mean of peak-normalised layers
    reference = embedding.embed_frames(model, spec, frames[[4]], landmarks[[4]], FRAME_PADDING)
    again = core.frame_leam_maps(model, spec, frames[[3]], landmarks[[3]], embedding.reference_embeddings(
        F.normalize(reference, dim=1), [[0]]), layers, FRAME_PADDING, placement="receptive_field")
    expected = core.area_downsample(again.maps, 28)[0, 0].numpy()
    assert np.allclose(result.maps[1, 0], expected, rtol=1e-3, atol=1e-4 * expected.max())
    assert np.allclose(result.maps[1, 1], result.maps[1, 0] / result.maps[1, 0].max(), atol=1e-6)
    assert abs(result.meta.cosine[1] - float(again.cosine[0])) < 1e-5


def test_given_embeddings_are_read_by_frame_row(real_faces, dlib):
    """The ``models`` stage's embeddings (row i = frame i) give the maps computed here; a wrong file is an error."""
    spec, model = dlib
    index, frames, landmarks = aligned(real_faces)
    index = index.assign(row=[5, 4, 3, 2, 1, 0])  # index row i is frame 5 - i
    cfg, layers = LeamParams(store_size=28, batch_size=6, placement="receptive_field"), [spec.layers[-1]]
    computed = dataset_maps(model, spec, layers, index, frames, landmarks, cfg, FRAME_PADDING)
    stored = embedding.embed_frames(model, spec, frames, landmarks, FRAME_PADDING).numpy()
    given = dataset_maps(model, spec, layers, index, frames, landmarks, cfg, FRAME_PADDING, embeddings=stored)
    np.testing.assert_allclose(given.maps, computed.maps, rtol=1e-5, atol=1e-6 * computed.maps.max())
    np.testing.assert_allclose(given.meta.cosine, computed.meta.cosine, rtol=1e-6)
    # index row 0 (frame 5) is the reference of index row 1 (baseline_index 0): flip it, that cosine flips
    flipped = stored.copy()
    flipped[5] *= -1
    changed = dataset_maps(model, spec, layers, index, frames, landmarks, cfg, FRAME_PADDING, embeddings=flipped)
    assert changed.meta.reference_image_id[1] == index.image_id[0]
    assert abs(changed.meta.cosine[1] + computed.meta.cosine[1]) < 1e-5
    np.testing.assert_allclose(changed.meta.cosine.drop(1), computed.meta.cosine.drop(1), rtol=1e-6)
    for bad in (stored[:5], stored[:, :64]):
        with pytest.raises(LeamError, match=r"do not fit 6 frames embedded by dlib_resnet \(128-D\): .*dvc repro models"):
            dataset_maps(model, spec, layers, index, frames, landmarks, cfg, FRAME_PADDING, embeddings=bad)
