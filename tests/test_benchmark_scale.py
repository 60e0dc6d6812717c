"""benchmarks/scale.py in CI size: every stage measured on real faces, a projection table of the right shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import scale
from leam.config import load_config
from tests.conftest import REPO_ROOT

STAGES = ["align", "parse", "models", "leam", "correlate", "similarity", "emd", "occlusion", "symmetry", "explain"]


@pytest.fixture(scope="module")
def costs(real_faces, small_slice, weights_dir):
    data = scale.Slice(real_faces["frames"], real_faces["landmarks"], real_faces["index"].identity.to_numpy(),
                       list(small_slice.abspath[:1]))
    return scale.measure(data, ["dlib_resnet"], load_config(REPO_ROOT / "params.yaml"), weights_dir,
                         torch.device("cpu"))


def test_every_stage_is_measured_and_positive(costs):
    assert list(costs.stage) == ["align", "parse", "models", "leam", "correlate", "similarity", "distributions", "emd", "occlusion"]
    assert (costs.seconds > 0).all() and np.isfinite(costs.seconds).all()
    assert costs.set_index("stage").loc["leam", "layers"] == 10  # dlib_resnet's 9 default layers + overall


def test_projection_table(costs):
    config = load_config(REPO_ROOT / "params.yaml")
    table = scale.project(costs, config, identities=1000, per_identity=20, networks=9, frame_size=224)
    assert list(table.stage) == STAGES
    assert list(table.columns) == ["stage", "unit", "seconds_per_unit", "units", "hours", "disk_gb"]
    assert (table.hours > 0).all() and (table.disk_gb > 0).all()
    assert table.set_index("stage").loc["leam", "units"] == 20_000 * 9
    # BC scores every pair, EMD only the similarity.emd_max_pairs per network that the stage gives it
    pairs = 1000 * 190 * (1 + config.similarity.different_per_same)
    assert table.set_index("stage").loc["similarity", "units"] == pairs * 9
    assert table.set_index("stage").loc["emd", "units"] == min(pairs, config.similarity.emd_max_pairs) * 9
    # every network is an occlusion source: forwards per photo and target grow with the network count
    six = scale.project(costs, config, identities=1000, per_identity=20, networks=6, frame_size=224)
    ratio = table.set_index("stage").loc["occlusion", "units"] / six.set_index("stage").loc["occlusion", "units"]
    assert ratio > 9 / 6
