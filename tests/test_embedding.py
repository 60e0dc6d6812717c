"""leam.embedding: frames -> model inputs -> embeddings (one warp, any batch size), and reference embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.embedding import embed_frame_tensors, embed_frames, frames_to_tensor, reference_embeddings, to_model_input
from leam.errors import LeamError
from leam.frame import dlib_chip_matrix, frame_to_input
from leam.models.spec import ModelSpec

FRAME_PADDING = 0.5  # the analysis frame of the ``real_faces`` fixture (tests/conftest.py)
INPUT = 48


def chip_warp(landmarks: np.ndarray, frame_size: int, frame_padding: float) -> np.ndarray:
    """A dlib-chip crop per image, shifted by the image's first landmark (so every row has its own warp)."""
    matrices = np.repeat(dlib_chip_matrix(frame_size, frame_padding, INPUT, 0.25)[None], len(landmarks), axis=0)
    matrices[:, :, 2] += (landmarks[:, 0] - frame_size / 2) * 0.05
    return matrices


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 16)).eval()


SPEC = ModelSpec(name="tiny", description="random tiny CNN (test)", input_size=INPUT, embedding_dim=16,
                 layers=("0",), load=lambda weights_dir: tiny_net(), input_warp=chip_warp)


def test_frames_to_tensor_copies_channels_first_floats(real_faces) -> None:
    frames = real_faces["frames"][:2].copy()
    frames.flags.writeable = False  # as a memory map of data/aligned/frames.npy is
    tensor = frames_to_tensor(frames)
    assert tensor.shape == (2, 3, 224, 224) and tensor.dtype == torch.float32
    expected = torch.from_numpy(np.array(frames[1])).float()
    assert torch.equal(tensor[1].permute(1, 2, 0), expected)
    tensor += 1  # a copy: the frames stay as they were
    assert torch.equal(torch.from_numpy(np.array(frames[1])).float(), expected)


def test_embeddings_are_the_model_on_its_warped_input_whatever_the_batch(real_faces) -> None:
    frames, landmarks, model = real_faces["frames"], real_faces["landmarks"], tiny_net()
    embeddings = embed_frames(model, SPEC, frames, landmarks, FRAME_PADDING, batch_size=4, progress=True)
    assert embeddings.shape == (6, 16) and embeddings.dtype == torch.float32 and embeddings.device.type == "cpu"
    matrices = chip_warp(landmarks, 224, FRAME_PADDING)
    with torch.no_grad():
        by_hand = model(frame_to_input(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), matrices, INPUT))
    torch.testing.assert_close(embeddings, by_hand)
    for batch_size in (1, 32):
        torch.testing.assert_close(embed_frames(model, SPEC, frames, landmarks, FRAME_PADDING, batch_size), embeddings)
    # frames already tensors (the occlusion stage's occluded frames) with their precomputed matrices
    tensors = embed_frame_tensors(model, frames_to_tensor(frames[[4, 1]]), matrices[[4, 1]], INPUT)
    torch.testing.assert_close(tensors, embeddings[[4, 1]])
    inputs, warp = to_model_input(SPEC, frames[:2], landmarks[:2], FRAME_PADDING)
    assert inputs.shape == (2, 3, INPUT, INPUT) and warp.dtype == np.float64
    np.testing.assert_array_equal(warp, matrices[:2])


def test_bad_frames_are_one_line_errors(real_faces) -> None:
    frames, landmarks, model = real_faces["frames"], real_faces["landmarks"], tiny_net()
    cases = [
        (lambda: embed_frames(model, SPEC, frames[:0], landmarks[:0], FRAME_PADDING), "no images to embed"),
        (lambda: embed_frames(model, SPEC, frames[:3], landmarks[:2], FRAME_PADDING), "3 frames but 2 landmark"),
        (lambda: embed_frames(model, SPEC, frames[:, :200], landmarks, FRAME_PADDING), "(N, S, S, 3)"),
        (lambda: to_model_input(SPEC, frames[:2], landmarks[:2, :5], FRAME_PADDING), "landmarks (2, 68, 2)"),
    ]
    for call, fragment in cases:
        with pytest.raises(LeamError) as info:
            call()
        assert fragment in str(info.value) and "\n" not in str(info.value)


def test_reference_embeddings_take_one_row_or_the_mean_of_several() -> None:
    unit = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    refs = reference_embeddings(unit, [2, [0], np.array([0, 1]), [np.int64(1)]])
    assert torch.equal(refs[0], unit[2]) and torch.equal(refs[1], unit[0]) and torch.equal(refs[3], unit[1])
    assert torch.allclose(refs[2], torch.tensor([0.5, 0.5]))  # not renormalised: cosine is scale-free
    assert reference_embeddings(unit, []).shape == (0, 2)
