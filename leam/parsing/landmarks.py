"""Offline face parsing from dlib's 68 landmarks: polygons rasterised into the analysis frame.

Why: it needs no weights and no network, so the pipeline always has parser labels; the learned FaRL
backend (``leam.parsing.farl``) is the optional, finer alternative.

What it can and cannot see. Landmarks outline the brows, eyes, nose, lips and the jaw, so those classes
and the face skin (jaw line up to an estimated forehead) are drawn; the neck is a band below the jaw.
Ears are NOT drawn: dlib has no ear landmarks and ear visibility depends on yaw and hair, so any ear
polygon would be a guess. Hair, hat, cloth, eyeglasses, earrings, necklace and background cannot be told
from landmarks either. Every pixel outside the drawn regions is :data:`NOT_LABELLED` (255), never
``background``, and ``classes.json`` lists those classes as not available.

Geometry (all in frame pixels, OpenCV convention: pixel centres at integer coordinates):

* ``up`` is the unit vector from the chin (landmark 8) to the mid-brow point (mean of 17-26); the
  face height ``h`` is that distance and ``d`` is the distance between the two eye centres.
* skin: polygon of the jaw line 0-16 closed over the brows raised by ``forehead_fraction * h``. By the
  facial-thirds rule the forehead (hairline to brows) is about half of brows-to-chin; the default 0.35
  stays below most hairlines and fringes so hair is rarely called skin.
* neck: jaw points 5-11 and the same points moved ``neck_fraction * h`` down (0 disables the class).
* brows: band around the brow points (17-21, 22-26), ``brow_thickness * d`` thick, mostly below the
  points because dlib's brow points follow the upper brow edge.
* nose: convex hull of the bridge (27-30, widened by ``nose_width * d``) and the nostril base (31-35).
* eyes: polygons 36-41 (subject's right eye, image left) and 42-47; lips: outer contour 48-59 minus the
  inner contour 60-67 split at the mouth corners; inner mouth: polygon 60-67 (empty when closed).

Drawing order resolves overlaps: neck, skin, nose, brows, eyes, lips, inner mouth (later wins).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from leam.errors import LeamError
from leam.parsing.classes import CLASS_ID, NOT_LABELLED

JAW = np.arange(0, 17)
RIGHT_BROW = np.arange(17, 22)   # subject's right (image left)
LEFT_BROW = np.arange(22, 27)
NOSE_BRIDGE = np.arange(27, 31)
NOSE_BASE = np.arange(31, 36)
RIGHT_EYE = np.arange(36, 42)    # subject's right eye = image left in a frontal photo
LEFT_EYE = np.arange(42, 48)
UPPER_LIP = np.array([48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60])
LOWER_LIP = np.array([54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64])
INNER_MOUTH = np.arange(60, 68)
NECK_JAW = np.arange(5, 12)

SETTINGS = ("forehead_fraction", "neck_fraction", "brow_thickness", "nose_width")
"""The ``parsing.*`` keys that shape the landmark parser (recorded in ``classes.json``)."""

_SHIFT = 4  # fillPoly sub-pixel bits: coordinates are drawn with 1/16 pixel precision


@dataclass(frozen=True)
class LandmarkParserConfig:
    """Shape parameters, as fractions of face height ``h`` (chin to mid-brow) or eye distance ``d``."""

    forehead_fraction: float = 0.35
    neck_fraction: float = 0.3
    brow_thickness: float = 0.18
    nose_width: float = 0.28
    outside_margin: float = 0.05
    """Landmarks more than this fraction of the frame outside it mark a failed fit (discarded)."""

    def __post_init__(self) -> None:
        for name in ("forehead_fraction", "neck_fraction", "brow_thickness", "nose_width", "outside_margin"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0 or value > 2:
                raise LeamError(f"parsing.{name}={value!r} is not valid; use a fraction in [0, 2]")

    def available(self) -> list[str]:
        """Canonical classes this configuration can produce."""
        names = ["skin", "right_brow", "left_brow", "right_eye", "left_eye", "nose", "inner_mouth",
                 "lower_lip", "upper_lip"]
        return (["neck"] if self.neck_fraction > 0 else []) + names


@dataclass
class ParseResult:
    """Labels for every input row; rows with ``kept=False`` are all NOT_LABELLED and have a reason."""

    labels: np.ndarray          # (N, S, S) uint8 canonical ids, 255 = not labelled
    kept: np.ndarray            # (N,) bool
    reasons: list[str]          # (N,) "" for kept rows, else the discard reason
    available: list[str]        # canonical classes the backend can produce
    points: np.ndarray | None = None  # the backend's own points (mesh: (N, 468, 2) frame pixels), else None


def landmark_failures(landmarks: np.ndarray, frame_size: int, outside_margin: float = 0.05) -> list[str]:
    """Discard reason per face ("" = usable) for landmarks (N, 68, 2) in frame pixels.

    Reasons: ``landmarks_not_finite`` (NaN/inf), ``landmarks_outside_frame`` (a point further than
    ``outside_margin * S`` outside the frame), ``landmarks_degenerate`` (eye distance or face height under
    5% of the frame), ``landmarks_flipped`` (subject's right eye not on the image left of the left eye).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise LeamError(f"landmarks must have shape (N, 68, 2), got {landmarks.shape}")
    finite = np.isfinite(landmarks).all(axis=(1, 2))
    safe = np.where(np.isfinite(landmarks), landmarks, 0.0)
    margin = outside_margin * frame_size
    outside = ((safe < -margin) | (safe > frame_size - 1 + margin)).any(axis=(1, 2))
    right_eye, left_eye = safe[:, RIGHT_EYE].mean(1), safe[:, LEFT_EYE].mean(1)
    eye_distance = np.linalg.norm(left_eye - right_eye, axis=1)
    height = np.linalg.norm(safe[:, 17:27].mean(1) - safe[:, 8], axis=1)
    degenerate = (eye_distance < 0.05 * frame_size) | (height < 0.05 * frame_size)
    flipped = right_eye[:, 0] >= left_eye[:, 0]
    reasons = []
    for ok, out, deg, flip in zip(finite, outside, degenerate, flipped):
        reasons.append("landmarks_not_finite" if not ok else "landmarks_outside_frame" if out
                       else "landmarks_degenerate" if deg else "landmarks_flipped" if flip else "")
    return reasons


def landmark_polygons(landmarks: np.ndarray, config: LandmarkParserConfig) -> list[tuple[str, np.ndarray]]:
    """Polygons for every class, batched over faces: [(class name, (N, P, 2) float frame pixels)].

    Listed in drawing order (later polygons overwrite earlier ones).
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    chin = pts[:, 8]
    brow_mid = pts[:, 17:27].mean(1)
    up = brow_mid - chin
    height = np.linalg.norm(up, axis=1, keepdims=True)
    up = up / height                                              # (N, 2) unit, towards the forehead
    side = np.stack([-up[:, 1], up[:, 0]], axis=1)                # (N, 2) unit, perpendicular to up
    eye_distance = np.linalg.norm(pts[:, LEFT_EYE].mean(1) - pts[:, RIGHT_EYE].mean(1), axis=1)[:, None]

    polygons: list[tuple[str, np.ndarray]] = []
    if config.neck_fraction > 0:
        jaw = pts[:, NECK_JAW]
        down = (-up * config.neck_fraction * height)[:, None]
        polygons.append(("neck", np.concatenate([jaw, (jaw + down)[:, ::-1]], axis=1)))

    brows_raised = pts[:, 26:16:-1] + (up * config.forehead_fraction * height)[:, None]
    polygons.append(("skin", np.concatenate([pts[:, JAW], brows_raised], axis=1)))

    half_width = (config.nose_width * eye_distance / 2)[:, :, None] * side[:, None]
    bridge = pts[:, NOSE_BRIDGE]
    nose_points = np.concatenate([bridge - half_width, bridge + half_width, pts[:, NOSE_BASE]], axis=1)
    polygons.append(("nose", nose_points))  # drawn as a convex hull

    thickness = config.brow_thickness * eye_distance
    above = (up * 0.25 * thickness)[:, None]
    below = (up * 0.75 * thickness)[:, None]
    for name, index in (("right_brow", RIGHT_BROW), ("left_brow", LEFT_BROW)):
        brow = pts[:, index]
        polygons.append((name, np.concatenate([brow + above, (brow - below)[:, ::-1]], axis=1)))

    polygons += [("right_eye", pts[:, RIGHT_EYE]), ("left_eye", pts[:, LEFT_EYE]),
                 ("upper_lip", pts[:, UPPER_LIP]), ("lower_lip", pts[:, LOWER_LIP]),
                 ("inner_mouth", pts[:, INNER_MOUTH])]
    return polygons


def parse_landmarks(landmarks: np.ndarray, frame_size: int,
                    config: LandmarkParserConfig | None = None) -> ParseResult:
    """Canonical labels (N, S, S) uint8 from frame landmarks (N, 68, 2); failed fits are counted discards."""
    config = config or LandmarkParserConfig()
    landmarks = np.asarray(landmarks, dtype=np.float64)
    reasons = landmark_failures(landmarks, frame_size, config.outside_margin)
    kept = np.array([reason == "" for reason in reasons], dtype=bool)
    labels = np.full((landmarks.shape[0], frame_size, frame_size), NOT_LABELLED, dtype=np.uint8)
    if kept.any():
        polygons = landmark_polygons(landmarks[kept], config)
        scale = float(1 << _SHIFT)
        fixed = [(CLASS_ID[name], np.round(points * scale).astype(np.int32)) for name, points in polygons]
        for out_row, row in enumerate(np.flatnonzero(kept)):
            canvas = labels[row]
            for class_id, points in fixed:
                poly = np.ascontiguousarray(points[out_row])
                if class_id == CLASS_ID["nose"]:
                    poly = np.ascontiguousarray(cv2.convexHull(poly)[:, 0])
                cv2.fillPoly(canvas, [poly], int(class_id), lineType=cv2.LINE_8, shift=_SHIFT)
    return ParseResult(labels=labels, kept=kept, reasons=reasons, available=config.available())
