"""Cost of placing coarse cells where they look, against LayerCAM's own upsampling, same run.

For each model, best-of-``repeats`` milliseconds per image of ``leam.core.leam_maps`` with every default
layer on real aligned faces under ``centred`` (``F.interpolate``, the baseline), ``receptive_field`` and
``effective_field`` (geometries measured once beforehand, as the leam stage does), and the ratios against
``centred`` (target <= 1.1: placement is a resampling, not another pass). The one-off cost of measuring
the geometries (tracing; input gradients on the probe faces) is printed separately.

    python -m benchmarks.placement [--models dlib_resnet mobileface] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.leam import best_ms_per_image
from leam import core
from leam.config import load_config
from leam.io import read_aligned
from leam.models.registry import get_spec
from leam.placement import PLACEMENTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["dlib_resnet", "mobileface", "expo_mfn"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--aligned", default="data/aligned")
    parser.add_argument("--weights", default="data/models")
    args = parser.parse_args()
    config = load_config()
    padding, probe = config.align.padding, config.leam.probe_images
    _, frames, landmarks = read_aligned(args.aligned)
    print(f"{'model':14s} " + " ".join(f"{name:>16s}" for name in PLACEMENTS) + "   ratio vs centred   set-up s")
    for name in args.models:
        spec = get_spec(name)
        model = spec.load(Path(args.weights))
        inputs, _ = core.to_model_input(spec, frames[:args.batch], landmarks[:args.batch], padding)
        with torch.no_grad():
            references = model(torch.roll(inputs, 1, dims=0))
        setup, geometries = {}, {}
        for placement in PLACEMENTS:
            started = time.perf_counter()
            geometries[placement] = core.frame_geometries(model, spec, spec.layers, placement, frames[:probe],
                                                          landmarks[:probe], padding)
            setup[placement] = time.perf_counter() - started
        runs = {placement: (lambda g=geometries[placement]: core.leam_maps(model, inputs, references, spec.layers,
                                                                           geometries=g))
                for placement in PLACEMENTS}
        ms = best_ms_per_image(runs, args.batch, args.repeats)
        ratios = " ".join(f"{ms[p] / ms['centred']:.2f}" for p in PLACEMENTS if p != "centred")
        print(f"{name:14s} " + " ".join(f"{ms[p]:13.1f} ms" for p in PLACEMENTS) + f"   {ratios:>16s}   "
              + " / ".join(f"{setup[p]:.1f}" for p in PLACEMENTS if p != "centred"))


if __name__ == "__main__":
    main()
