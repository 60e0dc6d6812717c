"""leam.occlusion.targets: a frame mask reaches every model input intact; a target embeds as leam.embedding does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leam import occlusion as occ
from leam.embedding import embed_frames, frames_to_tensor
from leam.face_region import landmark_hull
from leam.frame import dlib_chip_matrix, frame_to_input, input_to_frame
from leam.models.spec import ModelSpec
from leam.occlusion.targets import cosine
from leam.topt import top_fraction_mask
from tests.occlusion_faces import (  # noqa: F401
    FRAME,
    PADDING,
    TINY_INPUT,
    TinyFaceNet,
    occlusion_faces,
    smooth_maps,
    tiny_input_warp,
)


@pytest.mark.parametrize("fraction", [0.05, 0.10])
def test_mask_survives_the_round_trip_through_a_model_input(occlusion_faces: dict, fraction: float) -> None:  # noqa: F811
    """Frame mask -> model input -> frame (bilinear both ways, threshold 0.5) keeps IoU high."""
    landmarks = occlusion_faces["landmarks"]
    maps = torch.from_numpy(smooth_maps(len(landmarks), seed=3))
    region = torch.from_numpy(landmark_hull(landmarks, FRAME))
    # Rank inside the face so the mask lies where every model input sees it.
    mask = top_fraction_mask(occ.upsample_maps(maps, FRAME), fraction, valid=region)
    for input_size, chip_padding in ((150, 0.25), (112, 0.1)):
        matrix = dlib_chip_matrix(FRAME, PADDING, input_size, chip_padding)
        rotation = cv2.getRotationMatrix2D((input_size / 2, input_size / 2), 7.0, 1.0)  # as a 5-point fit would add
        full = np.vstack([matrix, [0, 0, 1]])
        matrices = np.repeat((rotation @ full)[None], len(landmarks), axis=0)
        there = frame_to_input(mask[:, None].float().expand(-1, 3, -1, -1), matrices, input_size)
        back = input_to_frame(there, matrices, FRAME)[:, 0] > 0.5
        # Compare where the input sees the frame (a tight 112 crop cuts off part of the jaw).
        seen = input_to_frame(torch.ones_like(there[:, :1]), matrices, FRAME)[:, 0] > 0.999
        assert seen.float().mean() > 0.2
        inside = mask & seen
        iou = ((back & inside).sum((1, 2)) / (back | inside).sum((1, 2))).numpy()
        assert iou.min() > 0.85, (input_size, iou)


def test_target_from_spec_embeds_frames_through_its_input_warp(occlusion_faces: dict) -> None:  # noqa: F811
    frames, landmarks = occlusion_faces["frames"][:3], occlusion_faces["landmarks"][:3]
    spec = ModelSpec(name="tiny", description="random tiny CNN (test)", input_size=TINY_INPUT, embedding_dim=32,
                     layers=("features.2",), load=lambda weights_dir: TinyFaceNet(), input_warp=tiny_input_warp)
    target = occ.Target.from_spec(spec, TinyFaceNet(), landmarks, FRAME, PADDING)
    assert target.name == "tiny" and target.input_size == TINY_INPUT and target.frame_to_input.shape == (3, 2, 3)
    rows = np.array([2, 0])
    embeddings = target.embed(frames_to_tensor(frames[rows]), rows)
    assert embeddings.shape == (2, 32) and torch.allclose(embeddings.norm(dim=1), torch.ones(2))
    assert torch.allclose(cosine(embeddings, embeddings), torch.ones(2))
    # the same photos as the other stages embed them (leam.embedding), up to the unit norm
    direct = embed_frames(target.module, spec, frames[rows], landmarks[rows], PADDING)
    assert torch.equal(embeddings, F.normalize(direct, dim=1))


def test_a_batch_warp_grid_embeds_every_version_of_its_photos_bit_for_bit(occlusion_faces: dict) -> None:  # noqa: F811
    frames = occlusion_faces["frames"][:4]
    chip = np.vstack([dlib_chip_matrix(FRAME, PADDING, TINY_INPUT, 0.25), [0, 0, 1]])
    matrices = np.stack([(cv2.getRotationMatrix2D((32, 32), angle, 1.0 + angle / 100) @ chip)
                         for angle in (-6.0, 0.0, 3.0, 8.0)])  # one warp per photo
    target = occ.Target("tiny", TinyFaceNet(), TINY_INPUT, matrices)
    rows = np.array([3, 0, 2])
    batch = frames_to_tensor(frames[rows])
    grid = target.input_grid(rows, FRAME)
    assert grid.shape == (3, TINY_INPUT, TINY_INPUT, 2)
    for version in (batch, torch.where(batch > 128, 0.0, batch)):  # clean and an occluded version
        assert torch.equal(target.embed_on_grid(version, grid), target.embed(version, rows))
    # a queue mixing versions of the batch's photos takes rows of the batch's grid
    pick = np.array([2, 2, 0, 1])
    assert torch.equal(grid[torch.from_numpy(pick)], target.input_grid(rows[pick], FRAME))
