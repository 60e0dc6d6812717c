"""The one face-region definition (leam.face_region) on real aligned faces and tiny generated inputs."""

from __future__ import annotations

import numpy as np
import pytest

from leam.errors import LeamError
from leam.face_region import FACE_REGIONS, face_class_ids, face_region, landmark_hull, parser_face, pool_region
from leam.parsing.classes import CLASS_ID
from leam.parsing.landmarks import parse_landmarks

FRAME = 224  # the analysis frame of the ``real_faces`` fixture


def test_landmark_hull_holds_the_inner_face_and_not_the_frame_corners(real_faces):
    landmarks = real_faces["landmarks"]
    hull = landmark_hull(landmarks, FRAME)
    assert hull.shape == (6, FRAME, FRAME) and hull.dtype == bool
    rows = np.arange(6)
    for point in (30, 33, 39, 42, 51):  # nose tip and base, inner eye corners, upper lip: inside the hull
        x, y = np.round(landmarks[:, point]).astype(int).T
        assert hull[rows, y, x].all(), point
    assert not hull[:, :5, :5].any() and not hull[:, -5:, -5:].any()
    share = hull.mean(axis=(1, 2))
    assert ((share > 0.15) & (share < 0.7)).all(), share


def test_parsing_region_contains_the_hull_and_adds_the_forehead(real_faces):
    landmarks = real_faces["landmarks"]
    labels = parse_landmarks(landmarks, FRAME).labels
    parsed, hull = face_region("parsing", FRAME, labels=labels), face_region("landmarks", FRAME, landmarks=landmarks)
    inside = (parsed & hull).sum(axis=(1, 2)) / hull.sum(axis=(1, 2))
    assert (inside > 0.9).all(), inside  # the hull is face under both policies
    assert ((parsed & ~hull).sum(axis=(1, 2)) > 0).all()  # the parser's forehead lies above the brows
    assert face_region("all", FRAME, landmarks=landmarks).all()


def test_parser_face_excludes_background_classes_and_unlabelled_pixels():
    labels = np.array([[[CLASS_ID["background"], CLASS_ID["skin"], 255],
                        [CLASS_ID["nose"], CLASS_ID["neck"], CLASS_ID["hair"]]]], dtype=np.uint8)
    assert parser_face(labels).tolist() == [[[False, True, False], [True, False, True]]]
    assert CLASS_ID["cloth"] not in face_class_ids() and CLASS_ID["left_eye"] in face_class_ids()


def test_pool_region_marks_a_cell_face_when_half_its_pixels_are():
    region = np.zeros((1, 4, 4), dtype=bool)
    region[0, 0, :2] = True            # top-left cell: 2 of 4 pixels -> face
    region[0, 2, 2] = True             # bottom-right cell: 1 of 4 -> not face
    assert pool_region(region, 2).tolist() == [[[True, False], [False, False]]]
    assert face_region("landmarks", 4, landmarks=np.array([[[0, 0], [1, 0], [1, 1], [0, 1]]]), grid=2)[0, 0, 0]
    with pytest.raises(LeamError, match="not a multiple of the map grid 3"):
        pool_region(region, 3)


@pytest.mark.parametrize("policy, kwargs, message", [
    ("hull", {}, "face_region='hull' is not valid; choose one of: " + ", ".join(FACE_REGIONS)),
    ("parsing", {}, "needs the parser labels"),
    ("landmarks", {}, "needs the aligned landmarks"),
    ("parsing", {"labels": np.zeros((1, 8, 8), np.uint8)}, "expected the 4x4 frame"),
])
def test_face_region_errors_are_one_line(policy, kwargs, message):
    with pytest.raises(LeamError, match=message) as caught:
        face_region(policy, 4, **kwargs)
    assert "\n" not in str(caught.value)
