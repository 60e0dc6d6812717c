"""How well a protected photo hides its person from a network, and how visible the protection is.

Per network (a source of the optimisation or a held-out network it never saw), from the clean embeddings
of every aligned photo (``data/embeddings/<model>.npy``, unit-normalised here):

- ``cosine``: cos(f(protected), r), r the photo's LEAM reference (the objective; ``drop`` = clean - protected);
- ``verified``: the share of the person's *other* photos the protected photo still matches, i.e. whose
  cosine exceeds the network's threshold at a false-accept rate ``far`` of the sample's different-identity
  pairs (``data/models_eval/pairs.csv``); verification success of the protection = 1 - verified;
- ``identified``: whether the nearest photo of a gallery of everyone's other photos (cosine, the photo
  itself left out) shows the same person (rank-1 identification).

Visibility, on the 8-bit analysis frames: PSNR and SSIM (scikit-image, data range 255, SSIM over the colour
channels), changed pixels (any channel differs) and the L-infinity distance in pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from leam.errors import LeamError

__all__ = ["Gallery", "far_threshold", "identity_scores", "visibility"]


def far_threshold(different_cosines: np.ndarray, far: float) -> float:
    """Cosine threshold at false-accept rate ``far``: a pair matches when its cosine is above it.

    The ``1 - far`` quantile (``higher`` method) of the different-identity cosines, so at most ``far`` of
    them exceed it. Needs at least ``1 / far`` pairs, else one LeamError.
    """
    values = np.asarray(different_cosines, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not 0 < far < 1:
        raise LeamError(f"protect.far={far!r} must be in (0, 1)")
    if len(values) * far < 1:
        raise LeamError(f"{len(values)} different-identity pairs cannot resolve a false-accept rate of {far:g}; "
                        f"raise verification.max_different_pairs to at least {int(np.ceil(1 / far))} or raise protect.far")
    return float(np.quantile(values, 1.0 - far, method="higher"))


@dataclass
class Gallery:
    """One network's view of the sample: unit clean embeddings (M, D) of every aligned row, labels, threshold."""

    name: str
    embeddings: torch.Tensor
    identities: np.ndarray
    threshold: float

    @classmethod
    def from_embeddings(cls, name: str, embeddings: np.ndarray, identities, threshold: float) -> Gallery:
        unit = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings, dtype=np.float32)), dim=1)
        return cls(name, unit, np.asarray(identities), float(threshold))


def identity_scores(gallery: Gallery, embeddings: torch.Tensor, photo_rows: np.ndarray,
                    references: torch.Tensor) -> pd.DataFrame:
    """``cosine``, ``verified`` and ``identified`` (module docstring) of unit embeddings (B, D) of photos
    whose aligned rows are ``photo_rows`` (B,), against their references (B, D)."""
    embeddings = embeddings.to(torch.float32).cpu()
    similarity = embeddings @ gallery.embeddings.T  # (B, M)
    rows = np.asarray(photo_rows, dtype=np.int64)
    same = gallery.identities[None, :] == gallery.identities[rows][:, None]
    self_column = np.zeros_like(same)
    self_column[np.arange(len(rows)), rows] = True
    others = torch.as_tensor(same & ~self_column)
    matched = (similarity > gallery.threshold) & others
    n_others = others.sum(dim=1)
    if bool((n_others == 0).any()):
        raise LeamError(f"{gallery.name}: a protected photo has no other photo of its person to verify against")
    ranked = similarity.masked_fill(torch.as_tensor(self_column), float("-inf"))
    nearest = ranked.argmax(dim=1).numpy()
    cosine = torch.nn.functional.cosine_similarity(embeddings, references.to(torch.float32).cpu(), dim=1)
    return pd.DataFrame({"cosine": cosine.numpy().astype(np.float64),
                         "verified": (matched.sum(dim=1) / n_others).numpy().astype(np.float64),
                         "identified": gallery.identities[nearest] == gallery.identities[rows]})


def visibility(clean: np.ndarray, protected: np.ndarray) -> pd.DataFrame:
    """PSNR (dB; inf when unchanged), SSIM, changed pixels and L-infinity of uint8 frames (N, S, S, 3)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    clean, protected = np.asarray(clean), np.asarray(protected)
    if clean.shape != protected.shape or clean.dtype != np.uint8 or protected.dtype != np.uint8:
        raise LeamError(f"visibility needs two uint8 frame stacks of one shape, got {clean.shape} {clean.dtype} "
                        f"and {protected.shape} {protected.dtype}")
    difference = np.abs(clean.astype(np.int16) - protected.astype(np.int16))
    rows = []
    for before, after, diff in zip(clean, protected, difference):
        unchanged = not diff.any()
        rows.append({"psnr": float("inf") if unchanged else float(peak_signal_noise_ratio(before, after, data_range=255)),
                     "ssim": float(structural_similarity(before, after, channel_axis=2, data_range=255)),
                     "changed_pixels": int(diff.any(axis=2).sum()), "linf": int(diff.max())})
    return pd.DataFrame(rows, columns=["psnr", "ssim", "changed_pixels", "linf"])
