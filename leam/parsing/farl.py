"""FaRL face parsing (facer's ``farl/celebm/448``) adapted to the analysis frame.

Optional backend: install ``requirements-farl.txt`` (pyfacer + torchvision). facer is imported lazily
and only to check that the extra is present; the network itself is facer's TorchScript file, loaded
from ``parsing.farl_model_path`` or downloaded from ``parsing.farl_url`` and checked against
``parsing.farl_sha256``.

The crop facer uses for ``farl/celebm/448`` (``facer.transform.get_face_align_matrix_celebm``, read from
FacePerceiver/facer): from five points (image-left eye, image-right eye, nose, image-left and
image-right mouth corner) it builds the FFHQ / CelebA-HQ alignment square:
``eye_avg`` and ``mouth_avg`` are the mid-points (+0.5: facer works with pixel corners),
``x = eye_to_eye - rot90(eye_to_mouth)`` normalised and scaled to ``max(2 |eye_to_eye|,
1.8 |eye_to_mouth|)``, ``y = rot90(x)``, centre ``c = eye_avg + 0.1 eye_to_mouth``; the square
``c - x - y .. c + x + y`` is mapped by a similarity onto the 448 x 448 crop, with no tanh warp
(``warp_factor=0``). Images enter the network as float RGB in 0..1 and it returns
``(logits (N, 19, 448, 448), aux)``.

Here the five points come from the dlib landmarks of the analysis frame (``leam.geometry.five_points``:
eye centres = means of 36-41 and 42-47, nose tip 30, mouth corners 48 and 54, the facer/RetinaFace
order, which is ArcFace's); the crop is sampled from the analysis frame with one
affine warp (``leam.frame.warp``; crop pixels outside the frame are black), and the arg-max labels go
back to the frame with the inverse warp and nearest sampling. Frame pixels the crop does not cover are
NOT_LABELLED (255).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path

import numpy as np
import torch

from leam.device import resolve_device
from leam.errors import ChecksumError, LeamError
from leam.frame import invert_affine, warp
from leam.geometry import five_points
from leam.io import download_to, sha256_file
from leam.parsing.classes import CLASSES, FARL_CELEBM_NAMES, NOT_LABELLED, parser_to_canonical
from leam.parsing.landmarks import ParseResult, landmark_failures

log = logging.getLogger(__name__)

CROP_SIZE = 448
NUM_FARL_CLASSES = len(FARL_CELEBM_NAMES)
ENABLE_HINT = ("FaRL parsing needs the optional extra: pip install -r requirements-farl.txt "
               "(pyfacer + torchvision), or set parsing.backend=landmarks")


def require_facer() -> None:
    """Import facer lazily; a missing extra is a one-line LeamError saying how to enable it."""
    try:
        import facer  # noqa: F401
    except Exception as exc:  # ImportError, or torchvision failing to load beside this torch build
        raise LeamError(f"{ENABLE_HINT} (import facer failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _rot90(vectors: np.ndarray) -> np.ndarray:
    return np.stack([-vectors[..., 1], vectors[..., 0]], axis=-1)


def celebm_crop_matrices(landmarks: np.ndarray, crop_size: int = CROP_SIZE) -> np.ndarray:
    """(N, 2, 3) frame -> FaRL crop pixel matrices (OpenCV pixel-centre convention on both sides)."""
    points = five_points(landmarks)
    eye_avg = (points[:, 0] + points[:, 1]) / 2 + 0.5      # pixel-corner coordinates, as facer
    mouth_avg = (points[:, 3] + points[:, 4]) / 2 + 0.5
    eye_to_eye = points[:, 1] - points[:, 0]
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    half = np.maximum(2.0 * np.linalg.norm(eye_to_eye, axis=1), 1.8 * np.linalg.norm(eye_to_mouth, axis=1))
    x_axis, y_axis = x, _rot90(x)                           # unit vectors of the square's sides
    top_left = eye_avg + 0.1 * eye_to_mouth - (x_axis + y_axis) * half[:, None]
    scale = crop_size / (2.0 * half)                        # crop pixels per frame pixel
    linear = scale[:, None, None] * np.stack([x_axis, y_axis], axis=1)    # (N, 2, 2)
    # corner coords: v = L (u - top_left); pixel centres: u = p + 0.5, v_pixel = v - 0.5
    shift = np.einsum("nij,nj->ni", linear, 0.5 - top_left) - 0.5
    return np.concatenate([linear, shift[..., None]], axis=2)


def fetch_model(model_path: str, url: str, sha256: str, cache_dir: Path) -> Path:
    """The TorchScript file: ``model_path`` if set, else ``url`` downloaded into ``cache_dir``.

    A set ``sha256`` is always checked; a download without one is refused (it could be anything).
    """
    if model_path:
        path = Path(os.path.expanduser(model_path))
        if not path.is_file():
            raise LeamError(f"parsing.farl_model_path={model_path!r} does not exist")
    elif url:
        if urllib.parse.urlparse(url).scheme not in ("http", "https", "file"):
            raise LeamError(f"parsing.farl_url={url!r} is not an http(s) or file URL")
        if not sha256:
            raise LeamError("parsing.farl_sha256 is empty: set it to the sha256 of the file at parsing.farl_url")
        path = Path(cache_dir) / Path(urllib.parse.urlparse(url).path).name
        if not path.is_file():
            log.info("downloading %s -> %s", url, path)
            download_to(url, path, "the FaRL model")
    else:
        raise LeamError("parsing.backend=farl needs parsing.farl_model_path or parsing.farl_url (+ farl_sha256)")
    if sha256:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise ChecksumError(f"FaRL model {path}: expected sha256 {sha256}, got {actual}")
    return path


def load_model(path: Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError/... for a bad archive
        raise LeamError(f"cannot load TorchScript model {path}: {str(exc).splitlines()[0]}") from None
    return model.eval()


class FarlParser:
    """Run a FaRL-style parser (float RGB 0..1, (N, 3, 448, 448) -> logits (N, 19, 448, 448)) on frames."""

    def __init__(self, model: torch.nn.Module, crop_size: int = CROP_SIZE, device: str | torch.device = "cpu",
                 batch_size: int = 8) -> None:
        self.model = model
        self.crop_size = crop_size
        self.device = torch.device(device)
        self.batch_size = max(int(batch_size), 1)
        self.to_canonical = torch.as_tensor(parser_to_canonical("farl_celebm").astype(np.int64))

    @property
    def available(self) -> list[str]:
        return list(CLASSES)

    def _logits(self, crops: torch.Tensor) -> torch.Tensor:
        output = self.model(crops)
        if isinstance(output, (tuple, list)):
            output = output[0]
        expected = (crops.shape[0], NUM_FARL_CLASSES, self.crop_size, self.crop_size)
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise LeamError(f"FaRL parser output has shape {got}; expected logits {expected} "
                            f"({NUM_FARL_CLASSES} CelebAMask-HQ classes at {self.crop_size}x{self.crop_size})")
        return output

    @torch.no_grad()
    def parse(self, frames: np.ndarray, landmarks: np.ndarray) -> ParseResult:
        """Labels (N, S, S) uint8 in the analysis frame for frames (N, S, S, 3) uint8 RGB."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] != frames.shape[2]:
            raise LeamError(f"frames must have shape (N, S, S, 3), got {frames.shape}")
        size = frames.shape[1]
        reasons = landmark_failures(landmarks, size)
        kept = np.array([reason == "" for reason in reasons], dtype=bool)
        labels = np.full(frames.shape[:3], NOT_LABELLED, dtype=np.uint8)
        rows = np.flatnonzero(kept)
        if rows.size == 0:
            return ParseResult(labels, kept, reasons, self.available)
        matrices = celebm_crop_matrices(np.asarray(landmarks)[rows], self.crop_size)
        back = invert_affine(matrices)
        for start in range(0, rows.size, self.batch_size):
            batch = rows[start:start + self.batch_size]
            part = slice(start, start + batch.size)
            images = torch.as_tensor(frames[batch], device=self.device).permute(0, 3, 1, 2).float() / 255.0
            crops = warp(images, matrices[part], self.crop_size, mode="bilinear", padding_mode="zeros")
            crop_labels = self._logits(crops).argmax(dim=1, keepdim=True).float()          # (B, 1, C, C)
            stacked = torch.cat([crop_labels, torch.ones_like(crop_labels)], dim=1)        # + coverage
            in_frame = warp(stacked, back[part], size, mode="nearest", padding_mode="zeros").cpu()
            ids = self.to_canonical[in_frame[:, 0].long()]
            ids[in_frame[:, 1] < 0.5] = NOT_LABELLED
            labels[batch] = ids.numpy().astype(np.uint8)
        return ParseResult(labels, kept, reasons, self.available)


def load_farl_parser(model_path: str, url: str, sha256: str, cache_dir: Path, device: str = "auto",
                     batch_size: int = 8) -> FarlParser:
    """Check the extra is installed, fetch + verify the TorchScript file and wrap it; ``device`` is the
    ``parsing.device`` choice (auto, cpu, cuda; :func:`leam.device.resolve_device`)."""
    device = resolve_device(device, "parsing.device")
    require_facer()
    path = fetch_model(model_path, url, sha256, cache_dir)
    return FarlParser(load_model(path, device), device=device, batch_size=batch_size)
