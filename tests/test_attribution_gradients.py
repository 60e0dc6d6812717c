"""The shared forward + backward pass, and the cell geometries rebuilt from a leam run's layers.json."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from leam import core
from leam.attribution import pair_gradients
from leam.embedding import to_model_input
from leam.placement import cached_geometries, cell_table, geometries_from_cells, place_on_input
from tests.attribution_nets import FRAME, LAYERS, PADDING, SmallNet, small_spec, smooth_frames


def test_layer_gradients_are_those_of_the_truncated_leam_pass():
    spec, model = small_spec(), SmallNet(0)
    frames = smooth_frames(3, seed=2)
    inputs, matrices = to_model_input(spec, frames, np.zeros((3, 68, 2)), PADDING)
    with torch.no_grad():
        references = model(inputs.flip(0))
    ours = pair_gradients(model, inputs, references, LAYERS, matrices, FRAME)
    fast = core.leam_maps(model, inputs, references, LAYERS)  # backward stops at the first layer there
    for i, layer in enumerate(LAYERS):
        mine = core.layer_map(ours.activations[layer], ours.gradients[layer])
        mine = F.interpolate(mine[:, None], size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        assert torch.allclose(mine, fast.maps[:, i], rtol=1e-5, atol=1e-6 * float(fast.maps[:, i].max()))
    assert torch.allclose(ours.cosine, fast.cosine)
    assert ours.input_gradient.shape == inputs.shape and float(ours.input_gradient.abs().max()) > 0
    assert torch.equal(ours.inputs, inputs)  # the caller's inputs are not modified or kept with a graph


def test_geometries_from_a_layers_json_place_maps_as_the_traced_ones():
    spec, model = small_spec(), SmallNet(0)
    traced = cached_geometries(model, LAYERS, spec.input_size, "receptive_field")
    cells = json.loads(json.dumps(cell_table(traced)))  # as the leam stage writes and reads it
    rebuilt = geometries_from_cells(cells, spec.input_size)
    maps = torch.rand((2, *traced["conv3"].grid))
    assert torch.allclose(place_on_input(maps, rebuilt["conv3"]), place_on_input(maps, traced["conv3"]), atol=1e-4)
    assert geometries_from_cells(None, spec.input_size) is None  # a centred run
