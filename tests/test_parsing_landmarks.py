"""Landmark parser on real aligned sample faces: parts land where dlib puts them, failures are discards."""

from __future__ import annotations

import numpy as np
import pytest

from leam.errors import LeamError
from leam.parsing.classes import CLASS_ID, NOT_LABELLED
from leam.parsing.landmarks import LandmarkParserConfig, landmark_failures, parse_landmarks


@pytest.fixture(scope="module")
def parsed(aligned_small):
    result, _ = aligned_small
    landmarks = result.landmarks.astype(np.float64)
    return landmarks, parse_landmarks(landmarks, result.frames.shape[1])


def _label_at(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Label of the pixel containing each point: labels (N, S, S), points (N, 2) frame pixels."""
    xy = np.rint(points).astype(int)
    return labels[np.arange(len(points)), xy[:, 1], xy[:, 0]]


def test_parts_cover_their_landmarks(parsed):
    landmarks, result = parsed
    assert result.kept.all() and result.labels.shape == (len(landmarks), 224, 224)
    labels = result.labels
    assert (_label_at(labels, landmarks[:, 30]) == CLASS_ID["nose"]).all()
    # subject's right eye = dlib 36-41 = image left; its centroid is labelled right_eye
    right_eye, left_eye = landmarks[:, 36:42].mean(1), landmarks[:, 42:48].mean(1)
    assert (right_eye[:, 0] < 112).all() and (left_eye[:, 0] > 112).all()
    assert (_label_at(labels, right_eye) == CLASS_ID["right_eye"]).all()
    assert (_label_at(labels, left_eye) == CLASS_ID["left_eye"]).all()
    # lips: between the outer and inner contour at the mouth's middle
    assert (_label_at(labels, (landmarks[:, 51] + landmarks[:, 62]) / 2) == CLASS_ID["upper_lip"]).mean() >= 0.9
    assert (_label_at(labels, (landmarks[:, 57] + landmarks[:, 66]) / 2) == CLASS_ID["lower_lip"]).mean() >= 0.9
    assert (_label_at(labels, landmarks[:, 19]) == CLASS_ID["right_brow"]).all()
    assert (_label_at(labels, landmarks[:, 24]) == CLASS_ID["left_brow"]).all()
    assert (_label_at(labels, (landmarks[:, 8] + landmarks[:, 57]) / 2) == CLASS_ID["skin"]).all()
    # the frame corners are not labelled (hair/background cannot be told), never "background"
    assert (labels[:, 0, 0] == NOT_LABELLED).all() and (labels[:, 0, -1] == NOT_LABELLED).all()
    assert not (labels == CLASS_ID["background"]).any() and not (labels == CLASS_ID["hair"]).any()
    for name in ("neck", "skin", "nose", "upper_lip", "lower_lip", "right_brow", "left_brow"):
        assert ((labels == CLASS_ID[name]).sum(axis=(1, 2)) > 0).all(), name


def test_parameters_change_the_regions(parsed):
    landmarks, base = parsed
    tall = parse_landmarks(landmarks[:4], 224, LandmarkParserConfig(forehead_fraction=0.6, neck_fraction=0.0))
    skin = CLASS_ID["skin"]
    assert ((tall.labels == skin).sum((1, 2)) > (base.labels[:4] == skin).sum((1, 2))).all()
    assert not (tall.labels == CLASS_ID["neck"]).any() and "neck" not in tall.available
    assert "neck" in base.available and "hair" not in base.available and "right_ear" not in base.available
    with pytest.raises(LeamError, match="forehead_fraction"):
        LandmarkParserConfig(forehead_fraction=-0.1)


def test_failed_landmarks_are_counted_discards(parsed):
    landmarks, base = parsed
    bad = landmarks[:5].copy()
    bad[0, 10] = np.nan
    bad[1] += 500.0                                   # fit far outside the frame
    bad[2, :, 0] = 223 - bad[2, :, 0]                 # mirrored: eyes swapped sides
    bad[3] = bad[3].mean(0)                           # collapsed to a point
    result = parse_landmarks(bad, 224)
    assert result.reasons == ["landmarks_not_finite", "landmarks_outside_frame", "landmarks_flipped",
                              "landmarks_degenerate", ""]
    assert result.kept.tolist() == [False, False, False, False, True]
    assert (result.labels[:4] == NOT_LABELLED).all()
    np.testing.assert_array_equal(result.labels[4], base.labels[4])
    with pytest.raises(LeamError, match="shape"):
        landmark_failures(np.zeros((2, 5, 2)), 224)
