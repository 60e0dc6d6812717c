"""Face-alignment geometry (leam.geometry): exact recovery of a known similarity, degenerate input,
and agreement with the two fits it replaced on real landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from leam import geometry
from leam.errors import LeamError
from leam.frame import transform_points


def _similarity(angle: float, scale: float, shift) -> np.ndarray:
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.concatenate([rotation, np.asarray(shift, dtype=np.float64)[:, None]], axis=1)


# The two fits leam.geometry replaced, kept verbatim as references: the closed form of
# leam.models.iresnet and the SVD (Umeyama) form of leam.models.human_models.
def _closed_form_fit(source, target):
    source = np.asarray(source, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), source.shape)
    src_mean, dst_mean = source.mean(axis=1, keepdims=True), target.mean(axis=1, keepdims=True)
    src, dst = source - src_mean, target - dst_mean
    norm = (src ** 2).sum(axis=(1, 2))
    a = (src * dst).sum(axis=(1, 2)) / norm
    b = (src[..., 0] * dst[..., 1] - src[..., 1] * dst[..., 0]).sum(axis=1) / norm
    linear = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], axis=1)
    shift = dst_mean[:, 0] - np.einsum("nij,nj->ni", linear, src_mean[:, 0])
    return np.concatenate([linear, shift[..., None]], axis=2)


def _svd_umeyama_fit(source, target):
    src_mean = source.mean(1, keepdims=True)
    dst_mean = target.mean(0)[None, None]
    src = source - src_mean
    dst = np.broadcast_to(target - target.mean(0), src.shape)
    cov = np.einsum("npi,npj->nij", dst, src) / source.shape[1]
    u, s, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    d = np.stack([np.ones_like(sign), sign], axis=-1)
    rotation = u @ (d[..., None] * vt)
    variance = (src ** 2).sum((1, 2)) / source.shape[1]
    scale = (s * d).sum(-1) / variance
    linear = scale[:, None, None] * rotation
    shift = dst_mean[:, 0] - np.einsum("nij,nj->ni", linear, src_mean[:, 0])
    return np.concatenate([linear, shift[..., None]], axis=2)


def test_fit_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 224, size=(3, 5, 2))
    truth = np.stack([_similarity(0.3, 0.45, [12.0, -7.0]), _similarity(-2.5, 1.7, [0.0, 40.0]),
                      _similarity(np.pi, 1.0, [224.0, 224.0])])  # a half turn is a rotation, not a reflection
    target = transform_points(source, truth)
    fitted = geometry.similarity_fit(source, target)
    np.testing.assert_allclose(fitted, truth, atol=1e-10)
    single = geometry.similarity_fit(source[0], target[0])  # unbatched in, unbatched out
    assert single.shape == (2, 3)
    np.testing.assert_allclose(single, truth[0], atol=1e-10)
    # a reflection is not a similarity: the best fit stays a rotation (positive determinant)
    mirrored = source[:1] * np.array([-1.0, 1.0])
    assert np.linalg.det(geometry.similarity_fit(source[:1], mirrored)[0, :, :2]) > 0


def test_five_points_and_warp_put_the_template_in_place():
    landmarks = np.random.default_rng(1).uniform(0, 224, size=(2, 68, 2))
    points = geometry.five_points(landmarks)
    np.testing.assert_allclose(points[:, 0], landmarks[:, 36:42].mean(axis=1))
    np.testing.assert_allclose(points[:, 1], landmarks[:, 42:48].mean(axis=1))
    assert np.array_equal(points[:, 2:], landmarks[:, [30, 48, 54]])
    frame = transform_points(geometry.ARCFACE_TEMPLATE, _similarity(0.1, 2.0, [20.0, 10.0]))
    landmarks[:, 36:42], landmarks[:, 42:48] = frame[0], frame[1]
    landmarks[:, 30], landmarks[:, 48], landmarks[:, 54] = frame[2], frame[3], frame[4]
    for size in (112, 224):
        matrices = geometry.arcface_input_warp(landmarks, 224, 0.5, size=size)
        moved = transform_points(geometry.five_points(landmarks), matrices)
        np.testing.assert_allclose(moved, np.broadcast_to(geometry.ARCFACE_TEMPLATE * size / 112, moved.shape), atol=1e-9)
    with pytest.raises(LeamError, match=r"\(N, 68, 2\)"):
        geometry.five_points(landmarks[:, :5])


def test_degenerate_input_is_a_leam_error_naming_the_image():
    source = np.random.default_rng(2).uniform(0, 224, size=(3, 5, 2))
    coincident = source.copy()
    coincident[1] = [100.0, 80.0]
    with pytest.raises(LeamError, match=r"source points of image\(s\) \[1\] coincide"):
        geometry.similarity_fit(coincident, geometry.ARCFACE_TEMPLATE)
    flat_target = np.broadcast_to(geometry.ARCFACE_TEMPLATE, source.shape).copy()
    flat_target[2] = [56.0, 71.0]
    with pytest.raises(LeamError, match=r"image\(s\) \[2\] has scale 0"):
        geometry.similarity_fit(source, flat_target)
    broken = source.copy()
    broken[0, 3, 1] = np.nan
    with pytest.raises(LeamError, match=r"image\(s\) \[0\] contain NaN"):
        geometry.similarity_fit(broken, geometry.ARCFACE_TEMPLATE)
    with pytest.raises(LeamError, match="do not match"):
        geometry.similarity_fit(source, geometry.ARCFACE_TEMPLATE[:4])


def test_replaced_fits_agree_on_real_landmarks(aligned_small):
    result, _ = aligned_small
    landmarks = result.landmarks.astype(np.float64)
    points = geometry.five_points(landmarks)
    for size in (112, 224):
        template = geometry.ARCFACE_TEMPLATE * size / 112
        new = geometry.arcface_input_warp(landmarks, 224, 0.5, size=size)
        assert np.abs(new - _closed_form_fit(points, template)).max() < 1e-12
        assert np.abs(new - _svd_umeyama_fit(points, template)).max() < 1e-9
    # real faces sit close to the template: a few pixels of the 112 crop, at a plausible scale
    moved = transform_points(points, geometry.arcface_input_warp(landmarks, 224, 0.5))
    assert np.median(np.linalg.norm(moved - geometry.ARCFACE_TEMPLATE, axis=-1)) < 3.0
