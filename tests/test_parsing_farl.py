"""FaRL adapter contract with a stand-in TorchScript model (the real weights are not available here)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

from leam.errors import ChecksumError, LeamError
from leam.frame import transform_points
from leam.io import sha256_file
from leam.parsing.classes import CLASS_ID, FARL_CELEBM_NAMES, NOT_LABELLED
from leam.parsing.farl import (
    CROP_SIZE,
    FarlParser,
    celebm_crop_matrices,
    fetch_model,
    five_points,
    load_model,
    require_facer,
)


class ColourParser(nn.Module):
    """Labels red pixels facer 're' (8), blue ones 'le' (9), black ones 'background' (0)."""

    def __init__(self, classes: int = 19) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, images: torch.Tensor):
        red, blue = images[:, 0:1], images[:, 2:3]
        zeros = torch.zeros_like(red)
        channels = [0.1 - red - blue] + [zeros] * 7 + [red, blue] + [zeros] * (self.classes - 10)
        return torch.cat(channels, dim=1), zeros


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    path = tmp_path_factory.mktemp("farl") / "standin.pt"
    torch.jit.script(ColourParser()).save(str(path))
    return path


@pytest.fixture(scope="module")
def faces(aligned_small):
    result, _ = aligned_small
    return result.frames[:6], result.landmarks[:6].astype(np.float64)


def test_crop_matches_facer_square(faces):
    """The FFHQ square built from the five points lands exactly on the 448x448 crop corners."""
    _, landmarks = faces
    points = five_points(landmarks)
    eye_avg = (points[:, 0] + points[:, 1]) / 2
    eye_to_eye = points[:, 1] - points[:, 0]
    eye_to_mouth = (points[:, 3] + points[:, 4]) / 2 - eye_avg
    x = eye_to_eye - np.stack([-eye_to_mouth[:, 1], eye_to_mouth[:, 0]], 1)
    x *= (np.maximum(2 * np.linalg.norm(eye_to_eye, axis=1), 1.8 * np.linalg.norm(eye_to_mouth, axis=1))
          / np.linalg.norm(x, axis=1))[:, None]
    y = np.stack([-x[:, 1], x[:, 0]], 1)
    centre = eye_avg + 0.1 * eye_to_mouth
    corners = np.stack([centre - x - y, centre + x - y, centre + x + y, centre - x + y], 1)  # pixel-centre coords
    mapped = transform_points(corners, celebm_crop_matrices(landmarks))
    target = np.array([[0, 0], [CROP_SIZE, 0], [CROP_SIZE, CROP_SIZE], [0, CROP_SIZE]]) - 0.5
    np.testing.assert_allclose(mapped, np.broadcast_to(target, mapped.shape), atol=1e-6)
    eyes = transform_points(points[:, :2], celebm_crop_matrices(landmarks))
    # the square's axis blends the eye line and the eye-mouth axis, so eyes are only nearly level
    assert (np.abs(eyes[:, 0, 1] - eyes[:, 1, 1]) < 0.05 * CROP_SIZE).all()
    assert (eyes[:, 0, 0] < CROP_SIZE / 2).all() and (eyes[:, 1, 0] > CROP_SIZE / 2).all()


def test_labels_come_back_into_the_frame(faces, scripted):
    frames, landmarks = faces
    size = frames.shape[1]
    painted = np.zeros_like(frames)
    painted[:, :, : size // 2, 0] = 255          # image left half red  -> 're' -> right_eye
    painted[:, :, size // 2:, 2] = 255           # image right half blue -> 'le' -> left_eye
    parser = FarlParser(load_model(scripted), batch_size=4)
    result = parser.parse(painted, landmarks)
    assert result.kept.all() and result.labels.shape == (6, size, size) and result.labels.dtype == np.uint8
    labels = result.labels
    covered = labels != NOT_LABELLED
    left, right = np.zeros_like(covered), np.zeros_like(covered)
    left[:, :, : size // 2 - 2], right[:, :, size // 2 + 2:] = True, True
    assert (labels[covered & left] == CLASS_ID["right_eye"]).mean() > 0.99
    assert (labels[covered & right] == CLASS_ID["left_eye"]).mean() > 0.99
    # the crop covers the whole face: every landmark pixel is labelled
    xy = np.rint(landmarks).astype(int)
    assert covered[np.arange(6)[:, None], xy[..., 1], xy[..., 0]].all()
    assert 0.3 < covered.mean() < 1.0            # the FFHQ square does not cover the padded frame


def test_bad_outputs_and_inputs(faces, scripted, tmp_path):
    frames, landmarks = faces
    wrong = FarlParser(torch.jit.script(ColourParser(classes=11)))
    with pytest.raises(LeamError, match=r"expected logits \(2, 19, 448, 448\)"):
        wrong.parse(frames[:2], landmarks[:2])
    bad = landmarks[:3].copy()
    bad[1] = np.nan
    result = FarlParser(load_model(scripted)).parse(frames[:3], bad)
    assert result.reasons[1] == "landmarks_not_finite" and (result.labels[1] == NOT_LABELLED).all()
    assert result.kept.tolist() == [True, False, True]
    with pytest.raises(LeamError, match="farl_model_path"):
        fetch_model(str(tmp_path / "missing.pt"), "", "", tmp_path)
    with pytest.raises(ChecksumError):
        fetch_model(str(scripted), "", "0" * 64, tmp_path)
    assert fetch_model(str(scripted), "", sha256_file(scripted), tmp_path) == scripted
    with pytest.raises(LeamError, match="farl_sha256 is empty"):
        fetch_model("", "https://example.invalid/model.pt", "", tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(LeamError, match="cannot load TorchScript"):
        load_model(junk)
    assert len(FARL_CELEBM_NAMES) == 19


@pytest.mark.skipif(importlib.util.find_spec("facer") is not None, reason="facer is installed")
def test_missing_extra_is_one_line():
    with pytest.raises(LeamError) as info:
        require_facer()
    assert "requirements-farl.txt" in str(info.value) and "\n" not in str(info.value)
