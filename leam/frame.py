"""The canonical analysis frame and the warps between it and each model's input.

Every spatial quantity (aligned image, landmarks, parser labels, LEAM maps, occlusion masks) lives in
one square analysis frame of ``align.frame_size`` pixels. The frame is dlib's face chip at that size with
``align.padding`` (see ``leam.align``). A model sees the frame through one 2x3 affine matrix per image,
``frame -> model input`` in pixel coordinates (OpenCV convention: pixel centres at integer
coordinates), and its maps come back through the inverse of the same matrix.

Warps run batched on tensors with ``grid_sample`` so they are differentiable and cheap.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dlib_chip_matrix(frame_size: int, frame_padding: float, chip_size: int, chip_padding: float) -> np.ndarray:
    """Affine matrix (2, 3) from a dlib face chip (size, padding) to another of the same face.

    dlib maps face-template coordinates ``t`` (0..1 over the mean face) to chip pixels as
    ``(t + padding) / (1 + 2 * padding) * (size - 1)``; two chips of the same face therefore differ by a
    fixed scale and shift.
    """
    scale = (chip_size - 1) / (1 + 2 * chip_padding) * (1 + 2 * frame_padding) / (frame_size - 1)
    shift = (chip_size - 1) / (1 + 2 * chip_padding) * (chip_padding - frame_padding)
    return np.array([[scale, 0.0, shift], [0.0, scale, shift]], dtype=np.float64)


def invert_affine(matrices: np.ndarray) -> np.ndarray:
    """Invert affine matrices of shape (2, 3) or (N, 2, 3)."""
    matrices = np.asarray(matrices, dtype=np.float64)
    single = matrices.ndim == 2
    batch = matrices[None] if single else matrices
    full = np.zeros((batch.shape[0], 3, 3))
    full[:, :2] = batch
    full[:, 2, 2] = 1.0
    inverse = np.linalg.inv(full)[:, :2]
    return inverse[0] if single else inverse


def transform_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply (N, 2, 3) or (2, 3) matrices to points (N, P, 2) or (P, 2)."""
    points = np.asarray(points, dtype=np.float64)
    matrices = np.asarray(matrices, dtype=np.float64)
    return points @ np.swapaxes(matrices[..., :2], -1, -2) + matrices[..., None, :, 2]


def _sampling_grid(dest_to_source: torch.Tensor, out_size: int, source_size: int) -> torch.Tensor:
    """Normalised ``grid_sample`` grid (N, out, out, 2) for destination pixels mapped into the source."""
    coords = torch.arange(out_size, dtype=dest_to_source.dtype, device=dest_to_source.device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    ones = torch.ones_like(xx)
    pixels = torch.stack([xx, yy, ones], dim=-1).reshape(1, -1, 3)  # (1, out*out, 3)
    source = pixels @ dest_to_source.transpose(1, 2)  # (N, out*out, 2)
    normalised = (2.0 * source + 1.0) / source_size - 1.0  # align_corners=False convention
    return normalised.reshape(-1, out_size, out_size, 2)


def _as_batch(matrices, batch: int, device, dtype) -> torch.Tensor:
    matrices = torch.as_tensor(np.asarray(matrices), dtype=dtype, device=device)
    if matrices.ndim == 2:
        matrices = matrices.expand(batch, 2, 3)
    if matrices.shape != (batch, 2, 3):
        raise ValueError(f"expected affine matrices of shape ({batch}, 2, 3), got {tuple(matrices.shape)}")
    return matrices


def warp_grid(source_to_dest, batch: int, source_size: int, out_size: int, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``grid_sample`` grid (N, out, out, 2) of :func:`warp` for ``source -> destination`` matrices.

    Depends on the matrices only, not on the pixels: a caller that warps many versions of the same photos
    (the occlusion stage's occluded frames) computes it once and samples each version with it.
    """
    forward = _as_batch(source_to_dest, batch, device, torch.float64).cpu().numpy()
    dest_to_source = torch.as_tensor(invert_affine(forward), dtype=dtype, device=device)
    return _sampling_grid(dest_to_source, out_size, source_size)


def warp(images: torch.Tensor, source_to_dest, out_size: int, mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Warp a batch (N, C, S, S) by ``source -> destination`` matrices into (N, C, out, out)."""
    batch, _, height, width = images.shape
    if height != width:
        raise ValueError(f"square images expected, got {height}x{width}")
    grid = warp_grid(source_to_dest, batch, height, out_size, images.dtype, images.device)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def frame_to_input(frames: torch.Tensor, frame_to_input_matrix, input_size: int) -> torch.Tensor:
    """Analysis-frame images (N, 3, S, S) -> model input (N, 3, input_size, input_size), same value range."""
    return warp(frames, frame_to_input_matrix, input_size, padding_mode="border")


def frame_to_input_grid(frame_to_input_matrix, batch: int, frame_size: int, input_size: int,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """The float32 sampling grid (N, s, s, 2) of :func:`frame_to_input`, for :func:`frame_to_input_on_grid`."""
    return warp_grid(frame_to_input_matrix, batch, frame_size, input_size, torch.float32, device)


def frame_to_input_on_grid(frames: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """:func:`frame_to_input` of float32 frames (N, 3, S, S) with their grid (N, s, s, 2) computed beforehand:
    the same values, bit for bit, without recomputing the grid."""
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


def input_to_frame(maps: torch.Tensor, frame_to_input_matrix, frame_size: int) -> torch.Tensor:
    """Maps on the model input grid (N, C, s, s) -> analysis frame (N, C, S, S); outside the input is 0."""
    matrices = np.asarray(frame_to_input_matrix)
    return warp(maps, invert_affine(matrices), frame_size, padding_mode="zeros")
