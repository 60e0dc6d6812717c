"""Before/after strips of the protect report: what a protection changes and how visible it is.

A strip is uint8 RGB (S, 4 S, 3) in the analysis frame: the clean photo | its own-map mask (red) | the
optimised protection at the headline budget and epsilon | the perturbation, amplified so that
``epsilon`` maps to full scale around mid-grey. Panels show exactly the saved, scored 8-bit photos.
"""

from __future__ import annotations

import numpy as np

__all__ = ["example_strip"]


def example_strip(clean: np.ndarray, protected: np.ndarray, epsilon: float) -> np.ndarray:
    """One strip from a clean and a protected uint8 frame (S, S, 3) (see module)."""
    difference = protected.astype(np.int16) - clean.astype(np.int16)
    changed = (difference != 0).any(axis=2)
    mask = clean.copy()
    mask[changed] = (0.5 * mask[changed] + np.array([127, 0, 0])).astype(np.uint8)
    amplified = np.clip(127.5 + difference * (127.5 / max(float(epsilon), 1.0)), 0, 255).astype(np.uint8)
    return np.concatenate([clean, mask, protected, amplified], axis=1)
