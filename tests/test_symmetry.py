"""Left/right symmetry of LEAM maps: mirrors, side shares and centroids on known numbers, one network end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from leam.config import LeamParams
from leam.metrics.symmetry import (
    PAIRS,
    WEIGHTS,
    horizontal_centroid,
    mirror_faces,
    mirror_symmetrised,
    model_symmetry,
    placement_geometries,
    region_sides,
    side_shares,
    summarise_control,
    summarise_symmetry,
    symmetry_control,
    symmetry_metrics,
)
from leam.models.compile import LopsidedConv2d
from leam.models.graph import Linear as GraphLinear
from leam.parsing.classes import CLASS_ID
from leam.placement import PLACEMENTS, cell_table
from tests.test_core import FRAME_PADDING, load_registered


def test_mirroring_twice_gives_the_face_back(real_faces):
    frames, landmarks = real_faces["frames"], real_faces["landmarks"]
    mirrored, points = mirror_faces(frames, landmarks)
    assert np.array_equal(mirrored[:, :, ::-1], frames)
    # subject's left eye (points 42..47) lands where the right eye (36..41) was, mirrored
    assert np.allclose(points[:, 36:42].mean(axis=1)[:, 0], 223 - landmarks[:, 42:48].mean(axis=1)[:, 0])
    again, back = mirror_faces(mirrored, points)
    assert np.array_equal(again, frames) and np.allclose(back, landmarks)


def test_side_shares_and_centroid_on_known_maps():
    labels = np.full((1, 8, 8), CLASS_ID["skin"], np.uint8)
    labels[0, 2, 5], labels[0, 2, 2] = CLASS_ID["left_eye"], CLASS_ID["right_eye"]
    landmarks = np.zeros((1, 68, 2))
    landmarks[0, 27:31, 0] = 3.5  # midline between columns 3 and 4
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 2, 5], maps[0, 0, 4, 1] = 3.0, 1.0  # subject's left eye, and skin on the subject's right
    shares = side_shares(maps, region_sides(labels, landmarks))
    assert shares["eyes"][0, 0].tolist() == [0.75, 0.0] and shares["face"][0, 0].tolist() == [0.75, 0.25]
    assert horizontal_centroid(maps)[0, 0].item() == pytest.approx((3 * 5 + 1 * 1) / 4)
    assert torch.isnan(horizontal_centroid(torch.zeros(1, 1, 8, 8))).all()


def test_model_symmetry_rows_summary_and_metrics(real_faces, weights_dir):
    spec, model = load_registered("dlib_resnet", weights_dir)
    frames, landmarks, index = real_faces["frames"], real_faces["landmarks"], real_faces["index"]
    index = index.assign(row=np.arange(len(index))).reset_index(drop=True)
    labels = np.full((len(index), 224, 224), CLASS_ID["skin"], np.uint8)
    layers = list(spec.layers[-2:])
    cfg = LeamParams(batch_size=2, placement="receptive_field")
    geometries = placement_geometries(model, spec, layers, (frames[:2], landmarks[:2]), FRAME_PADDING)
    rows = model_symmetry(model, spec, layers, frames, landmarks, labels, index, geometries, cfg,
                          padding=FRAME_PADDING, threshold=0.05, seed=0, max_images=2)
    assert len(rows) == 2 * len(PLACEMENTS) * (len(layers) + 1) and rows.image_id.nunique() == 2
    assert list(rows.columns[:5]) == ["model", "placement", "layer", "grid", "image_id"]
    assert set(rows.placement) == set(PLACEMENTS) and (rows.loc[rows.layer == "overall", "grid"] == 0).all()
    left, right = rows[[f"{p}_left" for p in PAIRS]].to_numpy(), rows[[f"{p}_right" for p in PAIRS]].to_numpy()
    assert ((left >= 0) & (right >= 0) & (left + right <= 1 + 1e-6)).all()
    assert np.allclose(rows.face_left + rows.face_right, 1.0, atol=0.02)  # all skin: only the midline column is out
    assert rows.flip_bias_px.abs().lt(224).all()
    summary = summarise_symmetry(rows, n_boot=20, seed=0)
    assert len(summary) == len(PLACEMENTS) * (len(layers) + 1) and (summary.images == 2).all()
    doc = symmetry_metrics(summary, 0.05)
    entry = doc["models"]["dlib_resnet"]["centred"]["overall"]
    assert doc["threshold"] == 0.05 and set(entry) == {"grid", "images", "flip_bias_px", *(f"{p}_lr" for p in PAIRS)}
    first = summary[(summary.placement == "centred") & (summary.layer == "overall")].iloc[0]
    assert entry["flip_bias_px"] == round(first.flip_bias_px, 3) and entry["grid"] == 0 and entry["images"] == 2
    assert np.isnan(first.face_lr) == np.isnan(entry["face_lr"])  # a side without mass: NaN ratio, kept NaN


class _Toy(nn.Module):
    """Conv (symmetric padding) -> ReLU -> flatten -> dense: NCHW flattening into ``nn.Linear``, or TF's
    NHWC flattening into the executor's ``Linear`` (weight (in, out)), as mobileface's head does."""

    def __init__(self, nhwc: bool):
        super().__init__()
        torch.manual_seed(0)
        self.nhwc = nhwc
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        features = 4 * 6 * 6
        self.dense = GraphLinear(np.random.default_rng(0).normal(size=(features, 5)).astype(np.float32), None) \
            if nhwc else nn.Linear(features, 5)

    def forward(self, x):
        grid = self.act(self.conv(x))
        if self.nhwc:
            grid = grid.permute(0, 2, 3, 1)
        return self.dense(grid.reshape(len(x), -1))


@pytest.mark.parametrize("nhwc", [False, True], ids=["nchw_linear", "nhwc_graph_linear"])
def test_mirror_symmetrised_network_embeds_a_face_and_its_mirror_alike(nhwc):
    model = _Toy(nhwc).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    x = torch.rand(3, 3, 6, 6) * 255
    mirrored = mirror_symmetrised(model, x)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-3)  # trained weights have a side
        assert torch.allclose(mirrored(x), mirrored(x.flip(-1)), rtol=1e-5, atol=1e-4)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())  # a copy


def test_mirror_symmetrised_lopsided_conv_keeps_its_zero_taps():
    torch.manual_seed(0)
    conv = LopsidedConv2d(torch.randn(2, 3, 3, 3), None, (2, 2), (0, 1, 0, 1), (1, 1), 1)  # TF SAME, stride 2
    mirrored = mirror_symmetrised(nn.Sequential(conv), torch.rand(1, 3, 8, 8))[0]
    kernel = mirrored.weight.detach()
    assert kernel.shape[-1] == 4 and torch.equal(kernel[..., 0], torch.zeros_like(kernel[..., 0]))  # grown zero column
    assert torch.allclose(kernel[..., 1:], kernel[..., 1:].flip(-1))
    assert torch.allclose(kernel[..., 1:].sum(-1), conv.weight.detach()[..., 1:].sum(-1), atol=1e-6)  # mass per row kept


def test_symmetry_control_rows_summary_and_metrics(real_faces, weights_dir):
    spec, model = load_registered("dlib_resnet", weights_dir)
    frames, landmarks, index = real_faces["frames"], real_faces["landmarks"], real_faces["index"]
    index = index.assign(row=np.arange(len(index))).reset_index(drop=True)
    layers = [spec.layers[0], spec.layers[-2]]
    cfg = LeamParams(batch_size=4, placement="receptive_field")
    geometries = placement_geometries(model, spec, layers, (frames[:2], landmarks[:2]), FRAME_PADDING)
    rows = symmetry_control(model, spec, layers, frames, landmarks, index, geometries, cfg,
                            padding=FRAME_PADDING, threshold=0.05, seed=0, max_images=3)
    assert set(rows.placement) == {"receptive_field", "centred"}  # the run's placement and LayerCAM's
    assert len(rows) == len(WEIGHTS) * 2 * (len(layers) + 1) * 3 and rows.image_id.nunique() == 3
    assert list(rows.columns[:6]) == ["model", "weights", "placement", "layer", "grid", "image_id"]
    assert np.allclose(rows.half_left + rows.half_right, 1.0)  # the halves split the input (even size)
    invariance = rows.groupby("weights").invariance.mean()
    assert invariance["mirror_symmetrised"] > invariance["trained"] and invariance["mirror_symmetrised"] > 0.99
    # the same cells under the same placement on the same input: the maps differ only by the kernels
    trained, mirrored = (rows[rows.weights == w].set_index(["placement", "layer", "image_id"]) for w in WEIGHTS)
    assert (trained.grid == mirrored.grid).all() and not np.allclose(trained.centre_offset_px, mirrored.centre_offset_px)
    assert rows.centre_offset_px.abs().lt(spec.input_size / 2).all()
    summary = summarise_control(rows, n_boot=20, seed=0)
    assert len(summary) == len(WEIGHTS) * 2 * (len(layers) + 1) and (summary.images == 3).all()
    doc = symmetry_metrics(pd.DataFrame(), 0.05, summary)
    entry = doc["control"]["dlib_resnet"]["mirror_symmetrised"]["centred"][layers[0]]
    first = summary[(summary.weights == "mirror_symmetrised") & (summary.placement == "centred")
                    & (summary.layer == layers[0])].iloc[0]
    assert entry["centre_offset_px"] == round(first.centre_offset_px, 3) and entry["grid"] == first.grid
    assert set(entry) == {"grid", "images", "invariance", "centre_offset_px", "half_left", "half_right", "half_lr"}


def test_placement_geometries_reuse_the_cells_the_leam_stage_recorded(real_faces, weights_dir):
    spec, model = load_registered("dlib_resnet", weights_dir)
    probe = (real_faces["frames"][:2], real_faces["landmarks"][:2])
    layers = list(spec.layers[-2:])
    measured = placement_geometries(model, spec, layers, probe, FRAME_PADDING)
    assert set(measured) == set(PLACEMENTS) and measured["centred"] is None
    cells = cell_table(measured["effective_field"])
    for layer in cells:  # a recorded table moved by one pixel: reused, it shows; measured again, it would not
        cells[layer]["centre_0"] = [value + 1.0 for value in cells[layer]["centre_0"]]
    record = {"layers": [*layers, "overall"], "placement": "effective_field", "cells": cells}
    reused = placement_geometries(model, spec, layers, probe, FRAME_PADDING, record)
    for layer, geometry in reused["effective_field"].items():
        assert geometry.y.centre(0) == pytest.approx(measured["effective_field"][layer].y.centre(0) + 1.0, abs=1e-4)
        assert geometry.x.jump == measured["effective_field"][layer].x.jump
    assert reused["receptive_field"] == measured["receptive_field"]  # the other placements are still traced
    other_layers = placement_geometries(model, spec, layers, probe, FRAME_PADDING, {**record, "layers": [layers[0], "overall"]})
    assert other_layers["effective_field"] == measured["effective_field"]  # a record of other layers is ignored
