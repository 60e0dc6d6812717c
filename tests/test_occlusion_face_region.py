"""leam.occlusion.face_region: the landmark hull of real faces, and the parser-label region."""

from __future__ import annotations

import numpy as np

from leam import occlusion as occ
from tests.occlusion_faces import FRAME, occlusion_faces  # noqa: F401


def test_face_region_from_landmarks_is_the_filled_hull(occlusion_faces: dict) -> None:  # noqa: F811
    landmarks = occlusion_faces["landmarks"]
    region = occ.face_region_from_landmarks(landmarks, FRAME)
    assert region.dtype == bool and region.shape == (len(landmarks), FRAME, FRAME)
    assert 0.1 < region.mean() < 0.6  # a face, not the whole frame
    for mask, points in zip(region, landmarks):
        x, y = np.round(points.mean(axis=0)).astype(int)
        assert mask[y, x] and not mask[0, 0] and not mask[-1, -1]  # the centre of the face is inside, corners not


def test_face_region_from_labels_excludes_background_and_unlabelled() -> None:
    labels = np.array([[[0, 1, 255], [2, 0, 3]]], dtype=np.uint8)
    assert occ.face_region_from_labels(labels, [0]).tolist() == [[[False, True, False], [True, False, True]]]
