"""The face region in the analysis frame: where the ``face`` and ``blob`` random baselines may occlude.

Masks are bool (N, S, S) in frame pixels. The occlusion stage uses the landmark hull (every image has
landmarks; parser labels are optional).
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

__all__ = ["face_region_from_labels", "face_region_from_landmarks"]


def face_region_from_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Face region (N, S, S) bool: the filled convex hull of the 68 frame landmarks (N, 68, 2), in pixels."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    regions = np.zeros((landmarks.shape[0], size, size), dtype=np.uint8)
    for index, points in enumerate(landmarks):  # one polygon fill per image, not per pixel
        hull = cv2.convexHull(np.round(points).astype(np.int32))
        cv2.fillConvexPoly(regions[index], hull, 1)
    return regions.astype(bool)


def face_region_from_labels(labels: np.ndarray, background_ids: Iterable[int]) -> np.ndarray:
    """Face region (N, S, S) bool from parser labels: labelled (not 255) and not a background class."""
    labels = np.asarray(labels)
    return (labels != 255) & ~np.isin(labels, list(background_ids))
