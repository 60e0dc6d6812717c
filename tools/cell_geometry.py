"""Print where each default layer's central cells look, three ways, for every registered network.

For the central cells (the middle one or the middle 2 x 2) of each default layer: the exact receptive-field
centre from the traced conv/pool chain (``leam.placement.trace_cell_geometry``), the centre LayerCAM's
``centred`` upsampling draws them at, and the effective centre (centroid of |d cell / d input|) on real
aligned faces. Columns are horizontal offsets in model-input pixels, relative to the receptive-field centre.
This is the evidence behind the default ``leam.placement`` (README, Assumptions).

Usage:  python -m tools.cell_geometry [--faces 8] [--models dlib_resnet mobileface]
Needs data/models (``dvc repro weights``) and data/aligned (``dvc repro align``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from leam import core
from leam.config import load_config
from leam.io import read_aligned
from leam.models.registry import available_models, get_spec
from leam.placement import central_cells, centred_geometry, gradient_centroid, trace_cell_geometry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=8, help="aligned faces the effective centre averages over")
    parser.add_argument("--models", nargs="*", default=None, help="models (default: every registered one)")
    parser.add_argument("--aligned", default="data/aligned")
    parser.add_argument("--weights", default="data/models")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    padding = load_config(args.params).align.padding
    _, frames, landmarks = read_aligned(args.aligned)
    print(f"{'model':14s} {'layer':16s} {'grid':>5s} {'jump':>5s} {'centred - rf':>13s} {'faces - rf':>11s}")
    for name in args.models or available_models():
        spec = get_spec(name)
        model = spec.load(Path(args.weights))
        inputs, _ = core.to_model_input(spec, frames[:args.faces], landmarks[:args.faces], padding)
        for layer, geometry in trace_cell_geometry(model, spec.layers, spec.input_size).items():
            cells = central_cells(geometry.grid)
            exact = np.array([geometry.x.centre(c) for _, c in cells])
            drawn = np.array([centred_geometry(geometry.grid, spec.input_size).x.centre(c) for _, c in cells])
            measured = gradient_centroid(model, layer, cells, spec.input_size, images=inputs)[:, 1].numpy()
            print(f"{name:14s} {layer:16s} {geometry.grid[0]:5d} {geometry.x.jump:5.0f} "
                  f"{(drawn - exact).mean():+13.1f} {(measured - exact).mean():+11.1f}")


if __name__ == "__main__":
    main()
