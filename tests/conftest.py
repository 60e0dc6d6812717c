"""Shared fixtures: a small, seeded slice of the real face sample (from the mirror) for fast tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mirror_dir() -> Path:
    configured = os.environ.get("LEAM_FACES_MIRROR") or str(REPO_ROOT.parent / "shared" / "faces")
    return Path(configured)


@pytest.fixture(scope="session")
def faces_mirror() -> Path:
    """The local mirror of the face sample (``LEAM_FACES_MIRROR`` or ``../shared/faces``)."""
    mirror = _mirror_dir()
    if not (mirror / "manifest.csv").is_file():
        pytest.fail(f"face mirror not found at {mirror}: set LEAM_FACES_MIRROR to the sample's folder")
    return mirror


@pytest.fixture(scope="session")
def mirror_manifest(faces_mirror: Path) -> pd.DataFrame:
    return pd.read_csv(faces_mirror / "manifest.csv")


@pytest.fixture(scope="session")
def small_slice(mirror_manifest: pd.DataFrame, faces_mirror: Path) -> pd.DataFrame:
    """8 identities (4 women, 4 men) x 3 images, seeded; columns of the manifest plus absolute ``abspath``."""
    rng = np.random.default_rng(0)
    picked = []
    for gender in ("female", "male"):
        names = sorted(mirror_manifest.loc[mirror_manifest.gender == gender, "identity"].unique())
        picked += list(rng.choice(names, size=4, replace=False))
    rows = (mirror_manifest[mirror_manifest.identity.isin(picked)]
            .sort_values(["identity", "file"]).groupby("identity").head(3).reset_index(drop=True))
    rows["abspath"] = [str(faces_mirror / f) for f in rows.file]
    return rows


@pytest.fixture(scope="session")
def aligned_small(small_slice: pd.DataFrame):
    """``small_slice`` aligned with the repository's ``align`` params (in one process).

    Returns ``(result, rows)``: the ``leam.align.AlignmentResult`` and the kept rows of ``small_slice``
    (reset index; row i belongs to ``result.frames[i]``).
    """
    from leam.align import align_images
    from leam.io import load_params

    align_params = dict(load_params(REPO_ROOT / "params.yaml")["align"], workers=1)
    result = align_images(list(small_slice.abspath), progress=False, **align_params)
    rows = small_slice.iloc[result.kept].reset_index(drop=True)
    return result, rows
