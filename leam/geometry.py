"""Face-alignment geometry, defined once: ArcFace's 5-point template and the similarity fit onto it.

InsightFace's ArcFace crops (and every network trained on them: the iresnet zoo, mobileface,
mobilefacenet) place a face by fitting one similarity (rotation, uniform scale, shift; no reflection)
from 5 facial points to a fixed template in the 112 x 112 crop (``norm_crop``; skimage's
``SimilarityTransform.estimate``, i.e. Umeyama's least-squares estimate). FaRL's parser crop
(``leam.parsing.farl``) starts from the same 5 points.

Conventions
-----------
- Points are (x, y) in pixels, OpenCV convention (pixel centres at integer coordinates), like every
  frame quantity (``leam.frame``). Matrices are (N, 2, 3) affine ``source -> target`` pixel maps,
  applied as ``p' = A p + b`` (``leam.frame.transform_points``).
- The 5 points, in template order: eye centre on the image's left (the subject's right eye, mean of
  dlib points 36-41), eye centre on the image's right (42-47), nose tip (30), mouth corner on the
  image's left (48), mouth corner on the image's right (54). dlib's 68 landmarks come from ``align``.
- The fit minimises sum_p |s R x_p + t - y_p|^2 over s > 0, R a rotation, t a shift. In 2-D it has the
  closed form below (the rotation-only case of Umeyama 1991), batched over images. Degenerate input
  (all source points coincide, or nothing of the target survives, scale 0) has no similarity and is a
  LeamError naming the images, never a silent non-invertible matrix.
"""

from __future__ import annotations

import numpy as np

from leam.errors import LeamError

__all__ = ["ARCFACE_SIZE", "ARCFACE_TEMPLATE", "five_points", "similarity_fit", "arcface_input_warp"]

ARCFACE_SIZE = 112
"""Side in pixels of the crop the template is defined for."""

ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)
"""InsightFace's 5-point template (x, y) of its 112 x 112 crops, in the order of :func:`five_points`."""

_EYE_IMAGE_LEFT = slice(36, 42)
_EYE_IMAGE_RIGHT = slice(42, 48)
_NOSE_TIP, _MOUTH_IMAGE_LEFT, _MOUTH_IMAGE_RIGHT = 30, 48, 54


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """dlib 68-point landmarks (N, 68, 2) -> the 5 template points (N, 5, 2) float64, same order as the template."""
    landmarks = np.asarray(landmarks68, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise LeamError(f"expected landmarks of shape (N, 68, 2), got {landmarks.shape}")
    return np.stack([
        landmarks[:, _EYE_IMAGE_LEFT].mean(axis=1),
        landmarks[:, _EYE_IMAGE_RIGHT].mean(axis=1),
        landmarks[:, _NOSE_TIP],
        landmarks[:, _MOUTH_IMAGE_LEFT],
        landmarks[:, _MOUTH_IMAGE_RIGHT],
    ], axis=1)


def similarity_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) mapping source onto target.

    source (N, P, 2) or (P, 2); target (P, 2) or (N, P, 2), P >= 2 corresponding points in pixels.
    Returns (N, 2, 3) float64 (or (2, 3) when both inputs are unbatched). With centred points x, y:
    ``s cos = sum x.y / sum |x|^2``, ``s sin = sum x^y / sum |x|^2`` (x^y the 2-D cross product), the
    shift maps the source centroid onto the target centroid. Raises LeamError for non-finite points,
    coincident source points or a zero fitted scale.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    single = source.ndim == 2 and target.ndim == 2
    source = source[None] if source.ndim == 2 else source
    if source.ndim != 3 or source.shape[2] != 2 or source.shape[1] < 2:
        raise LeamError(f"similarity_fit needs source points of shape (N, P, 2) with P >= 2, got {source.shape}")
    try:
        target = np.broadcast_to(target, source.shape)
    except ValueError:
        raise LeamError(f"target points {target.shape} do not match source points {source.shape}") from None
    bad = np.flatnonzero(~(np.isfinite(source).all(axis=(1, 2)) & np.isfinite(target).all(axis=(1, 2))))
    if bad.size:
        raise LeamError(f"similarity_fit: points of image(s) {bad[:10].tolist()} contain NaN/inf")
    src_mean, dst_mean = source.mean(axis=1, keepdims=True), target.mean(axis=1, keepdims=True)
    src, dst = source - src_mean, target - dst_mean
    norm = (src ** 2).sum(axis=(1, 2))
    scale_of = 1.0 + np.abs(src_mean[:, 0]).max(axis=1)  # coordinates' magnitude, for a relative tolerance
    coincident = np.flatnonzero(norm <= (1e-9 * scale_of) ** 2)
    if coincident.size:
        raise LeamError(f"similarity_fit: the source points of image(s) {coincident[:10].tolist()} coincide; "
                        f"no similarity maps them onto the target")
    a = (src * dst).sum(axis=(1, 2)) / norm                                              # s * cos
    b = (src[..., 0] * dst[..., 1] - src[..., 1] * dst[..., 0]).sum(axis=1) / norm      # s * sin
    flat = np.flatnonzero(np.hypot(a, b) <= 1e-12)
    if flat.size:
        raise LeamError(f"similarity_fit: the best similarity of image(s) {flat[:10].tolist()} has scale 0 "
                        f"(target points coincide or fit no rotation); cannot align")
    linear = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], axis=1)             # (N, 2, 2)
    shift = dst_mean[:, 0] - np.einsum("nij,nj->ni", linear, src_mean[:, 0])
    matrices = np.concatenate([linear, shift[..., None]], axis=2)
    return matrices[0] if single else matrices


def arcface_input_warp(landmarks68: np.ndarray, frame_size: int, frame_padding: float,
                       size: int = ARCFACE_SIZE) -> np.ndarray:
    """Frame landmarks (N, 68, 2) -> (N, 2, 3) frame -> ArcFace input matrices for a ``size`` x ``size`` crop.

    The ``ModelSpec.input_warp`` of every ArcFace-style model. Per image, the similarity fit of the 5
    points onto the template scaled by ``size / 112``, as InsightFace makes its crops. The landmarks
    already live in frame pixels, so the fit is directly frame -> input: ``frame_size`` and
    ``frame_padding`` (part of the registry's signature) do not enter.
    """
    del frame_size, frame_padding
    return similarity_fit(five_points(landmarks68), ARCFACE_TEMPLATE * (size / ARCFACE_SIZE))
