"""Test inputs of leam.occlusion: real aligned faces from the sample, smooth random maps, a tiny target CNN.

Imported by the tests/test_occlusion*.py modules (the ``occlusion_faces`` fixture with them).
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import dlib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam import occlusion as occ
from leam.assets import dlib_model_path
from leam.frame import dlib_chip_matrix

FRAME = 224
PADDING = 0.5
TINY_INPUT = 64


def align_faces(paths: list[str], size: int = FRAME, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Real analysis frames (N, S, S, 3) uint8 and frame landmarks (N, 68, 2) with dlib's face chip.

    Landmarks are re-detected on the chip (the chip holds one centred face). Returns also the kept input
    positions (images without exactly one detectable face are skipped).
    """
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("landmarks68")))
    frames, marks, kept = [], [], []
    for position, path in enumerate(paths):
        image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        scale = min(1.0, 800 / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        faces = detector(small, 1)
        if len(faces) != 1:
            continue
        box = faces[0]
        rect = dlib.rectangle(int(box.left() / scale), int(box.top() / scale), int(box.right() / scale), int(box.bottom() / scale))
        chip = dlib.get_face_chip(image, predictor(image, rect), size=size, padding=padding)
        chip_faces = detector(chip, 1)
        if len(chip_faces) != 1:
            continue
        shape = predictor(chip, chip_faces[0])
        frames.append(chip)
        marks.append([(p.x, p.y) for p in shape.parts()])
        kept.append(position)
    return np.stack(frames), np.asarray(marks, dtype=np.float32), kept


class TinyFaceNet(nn.Module):
    """A small random CNN obeying the registry contract (RGB 0..255 in, (N, 32) out)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(32 * 8 * 8, 32)
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images / 127.5 - 1.0).flatten(1))


def tiny_input_warp(landmarks: np.ndarray, frame_size: int, frame_padding: float) -> np.ndarray:
    """Frame -> a 64 px dlib chip with padding 0.25 (the geometry of dlib's recognition input)."""
    matrix = dlib_chip_matrix(frame_size, frame_padding, TINY_INPUT, 0.25)
    return np.repeat(matrix[None], len(landmarks), axis=0)


def tiny_target(landmarks: np.ndarray, name: str = "tiny", seed: int = 0) -> occ.Target:
    """A :class:`TinyFaceNet` target for frames with these landmarks."""
    return occ.Target(name, TinyFaceNet(seed), TINY_INPUT, tiny_input_warp(landmarks, FRAME, PADDING))


@functools.lru_cache(maxsize=1)
def _aligned(paths: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    frames, marks, kept = align_faces(list(paths))
    return frames, marks, tuple(kept)


def aligned_slice(small_slice: pd.DataFrame, identities: int) -> dict:
    """The first ``identities`` identities of the slice (3 images each), aligned once per session."""
    rows = small_slice[small_slice.identity.isin(sorted(small_slice.identity.unique())[:6])].reset_index(drop=True)
    frames, marks, kept = _aligned(tuple(rows.abspath))
    rows = rows.iloc[list(kept)].reset_index(drop=True)
    take = rows.identity.isin(sorted(rows.identity.unique())[:identities]).to_numpy()
    rows = rows[take]
    ids = [f"{i}/{Path(f).stem}" for i, f in zip(rows.identity, rows.file)]
    return {"frames": frames[take], "landmarks": marks[take], "identity": rows.identity.tolist(), "image_id": ids}


@pytest.fixture(scope="module")
def occlusion_faces(small_slice: pd.DataFrame) -> dict:
    """Two identities x 3 real images, aligned: frames, landmarks, identities, image ids."""
    faces = aligned_slice(small_slice, 2)
    assert len(faces["frames"]) >= 4, "too few detectable faces in the slice"
    return faces


def smooth_maps(count: int, grid: int = 112, seed: int = 0) -> np.ndarray:
    """Smooth random maps (N, G, G) with many distinct values (a blurred noise field)."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.random((count, 1, grid // 8, grid // 8), dtype=np.float32))
    return F.interpolate(noise, size=(grid, grid), mode="bicubic", align_corners=False)[:, 0].numpy()


def design(guides: dict, thresholds=(0.01, 0.05), kinds=("uniform", "face"), repeats=2) -> occ.Design:
    return occ.Design(list(thresholds), "black", list(kinds), repeats, 0, guides=guides)


def first_references(identities: list[str]) -> list[list[int]]:
    """Baseline references: the identity's first image; the first image itself uses the next one."""
    firsts: dict[str, list[int]] = {}
    for row, identity in enumerate(identities):
        firsts.setdefault(identity, []).append(row)
    return [[firsts[i][1]] if firsts[i][0] == row else [firsts[i][0]] for row, i in enumerate(identities)]
