"""Embeddings of analysis frames, and the reference embedding each photo is compared with.

Why one module: the ``models`` stage (verification, ``data/embeddings/<model>.npy``), the LEAM maps
(:mod:`leam.core`, :mod:`leam.dataset_maps`), the symmetry check and the occlusion targets must see a photo
through exactly the same pixels, or their cosines would disagree. A network never sees the analysis frame
itself: each photo reaches the model input through its own ``frame -> input`` affine
(``ModelSpec.input_warp`` of the frame landmarks, applied by :func:`leam.frame.frame_to_input`).

Conventions: frames are uint8 RGB (N, S, S, 3) in the analysis frame (S = ``align.frame_size``), landmarks
(N, 68, 2) in frame pixels; model inputs are float32 RGB 0..255 (N, 3, s, s) (a module normalises
internally); embeddings are float32 (N, D), raw (not unit-norm) unless a function says otherwise. No
gradients: these are the clean embeddings and references, not the objective LEAM differentiates.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from leam.device import padded_forward
from leam.engine import map_batches
from leam.errors import LeamError
from leam.frame import frame_to_input, frame_to_input_on_grid

if TYPE_CHECKING:  # annotations only
    from leam.config import RayParams
    from leam.models.spec import ModelSpec

__all__ = ["EmbeddingWorker", "embed_frame_tensors", "embed_frames", "embed_frames_on_grid", "frames_to_tensor", "reference_embeddings",
           "to_model_input"]


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Frames (N, S, S, 3) (uint8 RGB) -> float32 tensor (N, 3, S, S), same values (0..255), on ``device``.

    Copies first: the frames may be a read-only memory map of ``data/aligned/frames.npy``.
    """
    return torch.from_numpy(np.array(frames)).to(device).permute(0, 3, 1, 2).to(torch.float32)


def to_model_input(spec: ModelSpec, frames: np.ndarray | torch.Tensor, landmarks: np.ndarray,
                   frame_padding: float, device: str | torch.device = "cpu") -> tuple[torch.Tensor, np.ndarray]:
    """Analysis frames (N, S, S, 3) uint8 + frame landmarks (N, 68, 2) -> model inputs and warp matrices.

    Returns inputs (N, 3, s, s) float32 RGB 0..255 on ``device`` (s = ``spec.input_size``) and the
    (N, 2, 3) float64 frame -> input pixel matrices (``spec.input_warp``; ``frame_padding`` = ``align.padding``).
    """
    shape = tuple(np.shape(frames))
    if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or shape[0] == 0:
        raise LeamError(f"expected non-empty analysis frames (N, S, S, 3), got {shape}")
    landmarks = np.asarray(landmarks)
    if landmarks.shape != (shape[0], 68, 2):
        raise LeamError(f"expected landmarks ({shape[0]}, 68, 2), got {landmarks.shape}")
    matrices = np.asarray(spec.input_warp(landmarks, shape[1], frame_padding), dtype=np.float64)
    return frame_to_input(frames_to_tensor(frames, device), matrices, spec.input_size), matrices


@torch.no_grad()
def embed_frame_tensors(module: nn.Module, frames: torch.Tensor, frame_to_input_matrices: np.ndarray,
                        input_size: int) -> torch.Tensor:
    """One forward pass over frames that are already tensors: (B, 3, S, S) float RGB 0..255 -> (B, D).

    For frames changed after loading (the occlusion stage's occluded frames) whose warp matrices (B, 2, 3)
    frame -> input pixels were computed once per photo; the embeddings are as the module returns them, on
    its device. Photos still in uint8 frames go through :func:`embed_frames`. The pass has at least 16 rows
    (:func:`leam.device.padded_forward`), so a photo's embedding does not depend on the batch it is in.
    """
    return padded_forward(module, frame_to_input(frames, frame_to_input_matrices, input_size))


@torch.no_grad()
def embed_frames_on_grid(module: nn.Module, frames: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """:func:`embed_frame_tensors` with the warp's sampling grid (B, s, s, 2) computed beforehand
    (:func:`leam.frame.frame_to_input_grid` of the photos' matrices): bit-identical embeddings (B, D), for
    callers that embed many versions of the same photos (the occlusion stage's masks and thresholds)."""
    return padded_forward(module, frame_to_input_on_grid(frames, grid))


class EmbeddingWorker:
    """Embeddings of one batch of frames: the unit of work of either engine (:mod:`leam.engine`).

    Built once per engine (with ``ray``: once per actor, which then holds the network) with the model, its
    spec, the frames' ``align.padding`` and the device it runs on (the model is moved there). A batch:
    ``start``, ``frames`` (B, S, S, 3) uint8, ``landmarks`` (B, 68, 2); out: ``start``, ``embeddings``
    float32 (B, D) on the CPU.
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, frame_padding: float, device: torch.device):
        self.model, self.spec, self.frame_padding, self.device = model.to(device), spec, frame_padding, device

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        inputs, _ = to_model_input(self.spec, batch["frames"], batch["landmarks"], self.frame_padding, self.device)
        embeddings = padded_forward(self.model, inputs)  # bit-identical for every batch size (leam.device)
        return {"start": batch["start"], "embeddings": embeddings.float().cpu().numpy()}


def embed_frames(model: nn.Module, spec: ModelSpec, frames: np.ndarray, landmarks: np.ndarray,
                 frame_padding: float, batch_size: int = 32, device: str | torch.device = "cpu",
                 progress: bool = False, engine: str = "local", ray: RayParams | None = None) -> torch.Tensor:
    """Embeddings (N, D) float32 on the CPU of analysis frames (N, S, S, 3) uint8 with landmarks (N, 68, 2).

    ``batch_size`` frames per forward pass on ``device`` (where ``model`` must already be); each through
    :func:`to_model_input`, the warp LEAM uses. ``progress`` shows a bar per batch. Row i is frame i; the
    ``models`` stage stores these rows as ``data/embeddings/<model>.npy``. engine, ray: where the batches
    run (:func:`leam.engine.map_batches`; ``ray`` actors each hold the network and run on a GPU when the
    cluster has one; on the same device the same embeddings bit for bit).
    """
    if len(frames) == 0:
        raise LeamError("no images to embed")
    if len(landmarks) != len(frames):
        raise LeamError(f"{len(frames)} frames but {len(landmarks)} landmark sets")
    starts = range(0, len(frames), batch_size)
    batches = ({"start": start, "frames": frames[start:start + batch_size],
                "landmarks": landmarks[start:start + batch_size]} for start in starts)
    outputs = map_batches(partial(EmbeddingWorker, model, spec, frame_padding), batches, len(starts), engine, ray,
                          device, gpu_capable=True, desc=f"embed {spec.name}", progress=progress)
    return torch.from_numpy(np.concatenate([output["embeddings"] for output in outputs]))


def reference_embeddings(unit_embeddings: torch.Tensor, reference_rows: Sequence[int | Sequence[int]]) -> torch.Tensor:
    """The reference embedding (N, D) of each photo: the mean of its reference rows' unit embeddings.

    ``unit_embeddings`` (M, D) are L2-normalised (``F.normalize(embeddings, dim=1)``; they are taken as
    given, so already-unit embeddings are not normalised twice); entry i of ``reference_rows`` (a
    reference plan's ``reference_rows`` column, :func:`leam.core.select_references`) is one row or the rows
    to average (``mean_others``). The mean is not renormalised: the cosine LEAM explains is scale-free.
    """
    rows_of = [[rows] if np.isscalar(rows) else list(rows) for rows in reference_rows]
    if not rows_of:
        return unit_embeddings[:0]
    return torch.stack([unit_embeddings[rows].mean(dim=0) for rows in rows_of])
