"""Face alignment into the canonical analysis frame (dlib detection, 68 landmarks, face chip).

As in the paper, every photo is rotated so the eyes are level and the face is vertically symmetric,
then cropped and scaled to a square frame of ``frame_size`` pixels. The geometry is dlib's face chip
(``dlib.get_face_chip_details(shape, size, padding)``): the mean-face template is fitted to the 68
landmarks by a similarity transform and ``padding`` widens the crop by that fraction of the template
on every side (0.25 = dlib's recognition chip, 0.5 = the whole head).

Frame geometry (checked numerically against ``dlib.extract_image_chip`` in ``tests/test_align.py``):
a ``chip_details`` holds an axis-aligned rectangle ``rect`` in original pixels and an ``angle``; the
rectangle is rotated by ``angle`` about its centre, and its rotated top-left, top-right and
bottom-right corners land on the frame pixel centres (0, 0), (S-1, 0), (S-1, S-1). The similarity
matrix built from that is exact to 1e-9 px against dlib whenever dlib samples the original image
directly (frame scale under 2 original px per frame px). When the chip shrinks the face more than
that, dlib samples an image pyramid and its output is shifted by (2^L - 1) / 2 original pixels
(under half a frame pixel); this module uses the exact geometry instead and low-passes the image
(area averaging) before the warp to avoid aliasing.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import dlib
import numpy as np
from tqdm import tqdm

from leam.assets import dlib_model_path
from leam.errors import LeamError, check_choice
from leam.frame import invert_affine, transform_points
from leam.imageio import ImageDiscard, load_rgb

log = logging.getLogger(__name__)

DETECTORS = ("hog", "cnn")
MULTIPLE_FACE_POLICIES = ("discard", "largest", "largest_if_dominant")
N_LANDMARKS = 68
ANTIALIAS_ABOVE = 1.5
"""Original pixels per frame pixel above which the image is area-averaged before the warp."""


@dataclass(frozen=True)
class AlignConfig:
    """Alignment parameters (the ``align`` group of ``params.yaml``)."""

    frame_size: int = 224
    padding: float = 0.5
    detector: str = "hog"
    upsample: int = 1
    max_side: int = 1200
    max_pixels: int = 50_000_000
    multiple_faces: str = "largest_if_dominant"
    dominance_ratio: float = 2.0

    def validate(self) -> "AlignConfig":
        """Raise a one-line LeamError naming the bad value and the valid range or choices."""
        check_choice("align.detector", self.detector, DETECTORS)
        check_choice("align.multiple_faces", self.multiple_faces, MULTIPLE_FACE_POLICIES)
        _check_number("align.frame_size", self.frame_size, minimum=32, integer=True)
        _check_number("align.padding", self.padding, minimum=0.0)
        _check_number("align.upsample", self.upsample, minimum=0, integer=True)
        _check_number("align.max_side", self.max_side, minimum=64, integer=True)
        _check_number("align.max_pixels", self.max_pixels, minimum=1, integer=True)
        _check_number("align.dominance_ratio", self.dominance_ratio, minimum=1.0)
        return self


def _check_number(name: str, value, minimum: float, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise LeamError(f"{name}={value!r} is not valid; it must be {kind} >= {minimum}")


@dataclass
class AlignmentResult:
    """Aligned frames of the kept images, in input order.

    ``frames`` (N, S, S, 3) uint8 RGB; ``landmarks`` (N, 68, 2) float32 (x, y) frame pixels;
    ``transforms`` (N, 2, 3) float64 original pixels -> frame pixels; ``kept`` indices into the input
    paths (row i of the arrays is ``paths[kept[i]]``); ``discards`` (index, reason) for the rest.
    """

    frames: np.ndarray
    landmarks: np.ndarray
    transforms: np.ndarray
    kept: list[int] = field(default_factory=list)
    discards: list[tuple[int, str]] = field(default_factory=list)


def chip_to_image_matrix(details: "dlib.chip_details") -> np.ndarray:
    """(2, 3) similarity matrix frame pixel -> original pixel for a dlib ``chip_details``."""
    rect = details.rect
    centre = np.array([(rect.left() + rect.right()) / 2.0, (rect.top() + rect.bottom()) / 2.0])
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    scale_x = (rect.right() - rect.left()) / (details.cols - 1)
    scale_y = (rect.bottom() - rect.top()) / (details.rows - 1)
    linear = rotation @ np.diag([scale_x, scale_y])
    origin = rotation @ (np.array([rect.left(), rect.top()]) - centre) + centre  # where frame (0, 0) lands
    return np.hstack([linear, origin[:, None]])


def image_to_frame_matrix(details: "dlib.chip_details") -> np.ndarray:
    """(2, 3) similarity matrix original pixel -> frame pixel (what ``transforms.npy`` stores)."""
    return invert_affine(chip_to_image_matrix(details))


def warp_to_frame(image: np.ndarray, image_to_frame: np.ndarray, frame_size: int) -> np.ndarray:
    """Resample ``image`` (H, W, 3) uint8 into the (S, S, 3) frame; outside the photo is black.

    Bilinear, after area-averaging a crop of the face region when the frame shrinks the photo by more
    than ``ANTIALIAS_ABOVE`` (large photos would alias otherwise). The geometry is exactly
    ``image_to_frame`` either way.
    """
    frame_to_image = invert_affine(image_to_frame)
    scale = float(np.hypot(*frame_to_image[:, 0]))  # original px per frame px
    if scale > ANTIALIAS_ABOVE:
        image, frame_to_image = _shrink_face_region(image, frame_to_image, frame_size, scale)
    return cv2.warpAffine(image, frame_to_image, (frame_size, frame_size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _shrink_face_region(image: np.ndarray, frame_to_image: np.ndarray, frame_size: int,
                        scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Crop the frame's footprint (plus margin) and area-resize it to about frame resolution."""
    height, width = image.shape[:2]
    corners = np.array([[0, 0], [frame_size - 1, 0], [0, frame_size - 1], [frame_size - 1, frame_size - 1]], float)
    footprint = transform_points(corners, frame_to_image)
    margin = 2.0 * scale
    x0 = int(np.clip(np.floor(footprint[:, 0].min() - margin), 0, width - 1))
    y0 = int(np.clip(np.floor(footprint[:, 1].min() - margin), 0, height - 1))
    x1 = int(np.clip(np.ceil(footprint[:, 0].max() + margin) + 1, x0 + 1, width))
    y1 = int(np.clip(np.ceil(footprint[:, 1].max() + margin) + 1, y0 + 1, height))
    crop = image[y0:y1, x0:x1]
    new_w = max(1, int(round((x1 - x0) / scale)))
    new_h = max(1, int(round((y1 - y0) / scale)))
    small = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
    # original -> small (OpenCV resize maps pixel centres: x' = (x - x0 + 0.5) * fx - 0.5)
    image_to_small = np.array([[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]])
    full = np.vstack([frame_to_image, [0.0, 0.0, 1.0]])
    return small, image_to_small @ full


def choose_face(areas: Sequence[float], policy: str, dominance_ratio: float) -> int:
    """Index of the face to keep among detections of the given areas (px^2), or raise ImageDiscard."""
    if len(areas) == 0:
        raise ImageDiscard("no_face", "the detector found no face")
    order = np.argsort(areas)[::-1]
    if len(areas) == 1:
        return int(order[0])
    if policy == "discard":
        raise ImageDiscard("multiple_faces", f"{len(areas)} faces and align.multiple_faces=discard")
    if policy == "largest_if_dominant":
        ratio = areas[order[0]] / max(areas[order[1]], 1e-9)
        if ratio < dominance_ratio:
            raise ImageDiscard("multiple_faces",
                               f"{len(areas)} faces, largest only {ratio:.2f}x the next (< {dominance_ratio})")
    return int(order[0])


@functools.lru_cache(maxsize=None)
def _dlib_model(kind: str):
    """dlib models, loaded once per process (the 68-point predictor is a 100 MB file)."""
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
    return dlib.shape_predictor(str(dlib_model_path("landmarks68")))


class FaceAligner:
    """Detector + landmark predictor for one config (dlib objects cannot be pickled: one per process)."""

    def __init__(self, config: AlignConfig) -> None:
        self.config = config.validate()
        self._cnn = _dlib_model("cnn") if config.detector == "cnn" else None
        self._hog = _dlib_model("hog") if config.detector == "hog" else None
        self._predictor = _dlib_model("landmarks68")

    def detect(self, image: np.ndarray) -> list[dlib.rectangle]:
        """Face rectangles in original pixels, found on a copy downscaled to ``max_side``."""
        height, width = image.shape[:2]
        factor = min(1.0, self.config.max_side / max(height, width))
        small = image
        if factor < 1.0:
            size = (max(1, int(round(width * factor))), max(1, int(round(height * factor))))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if self._cnn is not None:
            found = [d.rect for d in self._cnn(small, self.config.upsample)]
        else:
            found = list(self._hog(small, self.config.upsample))
        return [dlib.rectangle(int(round(r.left() / factor)), int(round(r.top() / factor)),
                               int(round(r.right() / factor)), int(round(r.bottom() / factor))) for r in found]

    def align(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One RGB photo (H, W, 3) uint8 -> (frame (S, S, 3) uint8, landmarks (68, 2) frame px,
        transform (2, 3) original -> frame). Raises ImageDiscard (``no_face``, ``multiple_faces``)."""
        config = self.config
        faces = self.detect(image)
        areas = [float(r.width()) * float(r.height()) for r in faces]
        face = faces[choose_face(areas, config.multiple_faces, config.dominance_ratio)]
        shape = self._predictor(image, face)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        details = dlib.get_face_chip_details(shape, size=config.frame_size, padding=config.padding)
        transform = image_to_frame_matrix(details)
        frame = warp_to_frame(image, transform, config.frame_size)
        return frame, transform_points(points, transform).astype(np.float32), transform

    def align_file(self, path: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.align(load_rgb(path, max_pixels))


# ---- worker processes -------------------------------------------------------------------------------
_WORKER: FaceAligner | None = None


def _init_worker(config: AlignConfig) -> None:
    global _WORKER
    cv2.setNumThreads(1)  # one process per core already
    _WORKER = FaceAligner(config)


def _align_task(task: tuple[int, str]):
    assert _WORKER is not None, "worker not initialised"
    return _align_one(_WORKER, task)


def _align_one(aligner: FaceAligner, task: tuple[int, str]):
    """(index, path) -> (index, discard reason or None, (frame, landmarks, transform) or None)."""
    index, path = task
    try:
        frame, landmarks, transform = aligner.align_file(path, aligner.config.max_pixels)
    except ImageDiscard as exc:
        log.debug("discard %s: %s", path, exc)
        return index, exc.reason, None
    return index, None, (frame, landmarks, transform)


def align_images(paths: Sequence[str], *, frame_size: int = 224, padding: float = 0.5, detector: str = "hog",
                 upsample: int = 1, max_side: int = 1200, max_pixels: int = 50_000_000,
                 multiple_faces: str = "largest_if_dominant", dominance_ratio: float = 2.0,
                 workers: int = 1, progress: bool = True) -> AlignmentResult:
    """Align every photo in ``paths`` into the analysis frame; unusable ones become counted discards.

    ``workers`` > 1 uses a process pool whose initializer loads the dlib models once per process.
    Results keep input order regardless of the number of workers.
    """
    config = AlignConfig(frame_size, padding, detector, upsample, max_side, max_pixels, multiple_faces,
                         dominance_ratio).validate()
    _check_number("align.workers", workers, minimum=1, integer=True)
    tasks = [(i, str(p)) for i, p in enumerate(paths)]
    bar = dict(total=len(tasks), desc="align", unit="img", disable=not progress, mininterval=2.0)
    if workers == 1 or len(tasks) <= 1:
        aligner = FaceAligner(config)
        outcomes = [_align_one(aligner, t) for t in tqdm(tasks, **bar)]
    else:
        # forkserver, not fork: forking a process whose torch/OpenMP threads hold locks can deadlock the workers.
        context = multiprocessing.get_context("forkserver")
        with context.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(config,)) as pool:
            outcomes = list(tqdm(pool.imap(_align_task, tasks, chunksize=2), **bar))
    return _collect(outcomes, frame_size)


def _collect(outcomes: Iterable, frame_size: int) -> AlignmentResult:
    kept, discards, frames, landmarks, transforms = [], [], [], [], []
    for index, reason, payload in sorted(outcomes, key=lambda o: o[0]):
        if reason is not None:
            discards.append((index, reason))
            continue
        kept.append(index)
        frames.append(payload[0])
        landmarks.append(payload[1])
        transforms.append(payload[2])
    size = frame_size
    return AlignmentResult(
        frames=np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8),
        landmarks=np.stack(landmarks).astype(np.float32) if landmarks else np.zeros((0, N_LANDMARKS, 2), np.float32),
        transforms=np.stack(transforms).astype(np.float64) if transforms else np.zeros((0, 2, 3), np.float64),
        kept=kept, discards=discards)
