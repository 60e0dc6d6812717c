"""Left/right symmetry of LEAM maps: mirrors, side shares and centroids on known numbers, one network end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leam.config import LeamParams
from leam.metrics.symmetry import (
    PAIRS,
    horizontal_centroid,
    mirror_faces,
    model_symmetry,
    region_sides,
    side_shares,
    summarise_symmetry,
    symmetry_metrics,
)
from leam.parsing.classes import CLASS_ID
from leam.placement import PLACEMENTS
from tests.test_core import FRAME_PADDING, load_registered


def test_mirroring_twice_gives_the_face_back(real_faces):
    frames, landmarks = real_faces["frames"], real_faces["landmarks"]
    mirrored, points = mirror_faces(frames, landmarks)
    assert np.array_equal(mirrored[:, :, ::-1], frames)
    # subject's left eye (points 42..47) lands where the right eye (36..41) was, mirrored
    assert np.allclose(points[:, 36:42].mean(axis=1)[:, 0], 223 - landmarks[:, 42:48].mean(axis=1)[:, 0])
    again, back = mirror_faces(mirrored, points)
    assert np.array_equal(again, frames) and np.allclose(back, landmarks)


def test_side_shares_and_centroid_on_known_maps():
    labels = np.full((1, 8, 8), CLASS_ID["skin"], np.uint8)
    labels[0, 2, 5], labels[0, 2, 2] = CLASS_ID["left_eye"], CLASS_ID["right_eye"]
    landmarks = np.zeros((1, 68, 2))
    landmarks[0, 27:31, 0] = 3.5  # midline between columns 3 and 4
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 2, 5], maps[0, 0, 4, 1] = 3.0, 1.0  # subject's left eye, and skin on the subject's right
    shares = side_shares(maps, region_sides(labels, landmarks))
    assert shares["eyes"][0, 0].tolist() == [0.75, 0.0] and shares["face"][0, 0].tolist() == [0.75, 0.25]
    assert horizontal_centroid(maps)[0, 0].item() == pytest.approx((3 * 5 + 1 * 1) / 4)
    assert torch.isnan(horizontal_centroid(torch.zeros(1, 1, 8, 8))).all()


def test_model_symmetry_rows_summary_and_metrics(real_faces, weights_dir):
    spec, model = load_registered("dlib_resnet", weights_dir)
    frames, landmarks, index = real_faces["frames"], real_faces["landmarks"], real_faces["index"]
    index = index.assign(row=np.arange(len(index))).reset_index(drop=True)
    labels = np.full((len(index), 224, 224), CLASS_ID["skin"], np.uint8)
    layers = list(spec.layers[-2:])
    cfg = LeamParams(batch_size=2, placement="receptive_field")
    rows = model_symmetry(model, spec, layers, frames, landmarks, labels, index, (frames[:2], landmarks[:2]), cfg,
                          padding=FRAME_PADDING, threshold=0.05, seed=0, max_images=2)
    assert len(rows) == 2 * len(PLACEMENTS) * (len(layers) + 1) and rows.image_id.nunique() == 2
    assert list(rows.columns[:5]) == ["model", "placement", "layer", "grid", "image_id"]
    assert set(rows.placement) == set(PLACEMENTS) and (rows.loc[rows.layer == "overall", "grid"] == 0).all()
    left, right = rows[[f"{p}_left" for p in PAIRS]].to_numpy(), rows[[f"{p}_right" for p in PAIRS]].to_numpy()
    assert ((left >= 0) & (right >= 0) & (left + right <= 1 + 1e-6)).all()
    assert np.allclose(rows.face_left + rows.face_right, 1.0, atol=0.02)  # all skin: only the midline column is out
    assert rows.flip_bias_px.abs().lt(224).all()
    summary = summarise_symmetry(rows, n_boot=20, seed=0)
    assert len(summary) == len(PLACEMENTS) * (len(layers) + 1) and (summary.images == 2).all()
    doc = symmetry_metrics(summary, 0.05)
    entry = doc["models"]["dlib_resnet"]["centred"]["overall"]
    assert doc["threshold"] == 0.05 and set(entry) == {"grid", "images", "flip_bias_px", *(f"{p}_lr" for p in PAIRS)}
    first = summary[(summary.placement == "centred") & (summary.layer == "overall")].iloc[0]
    assert entry["flip_bias_px"] == round(first.flip_bias_px, 3) and entry["grid"] == 0 and entry["images"] == 2
    assert np.isnan(first.face_lr) == np.isnan(entry["face_lr"])  # a side without mass: NaN ratio, kept NaN
