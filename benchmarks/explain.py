"""Cost of each attribution method per photo, relative to one forward + backward pass, measured in one run.

For one model (default dlib_resnet) on the first ``--batch`` real aligned photos (references: the photos
rolled by one), best-of-``repeats`` milliseconds per photo of
  - the baseline: one plain forward + backward of the summed pair cosines to the input (no parameter grads);
  - each registered method of ``leam.attribution`` alone, on a fresh batch (so each gradient method pays
    for its own forward + backward), with the layers and cell placement of ``data/leam/<model>/layers.json``;
  - every gradient method together (they share one forward + backward: ``SourceBatch.gradients``);
  - the deletion + insertion curves of one map (2 x len(explain.fractions) forwards of the target);
and each one's ratio to the baseline. The runs are interleaved round by round (``benchmarks.leam.best_ms_per_image``).

    python -m benchmarks.explain [--model dlib_resnet] [--batch 8] [--repeats 3] [--patch 32 --stride 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.leam import best_ms_per_image
from leam.attribution import (
    METHODS,
    SourceBatch,
    build_methods,
    curve_steps,
    image_curves,
    tie_order,
)
from leam.config import load_config
from leam.embedding import frames_to_tensor, to_model_input
from leam.face_region import face_region
from leam.io import read_aligned, read_leam_outputs
from leam.models.registry import get_spec
from leam.occlusion import Target
from leam.placement import geometries_from_cells

GRADIENT_METHODS = ("leam", "leam_opposes", "layercam_fusion", "layercam_fusion_opposes", "gradcam", "saliency",
                    "gradient_x_input")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dlib_resnet")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patch", type=int, default=None, help="occlusion patch (default: explain.patch)")
    parser.add_argument("--stride", type=int, default=None, help="occlusion stride (default: explain.stride)")
    args = parser.parse_args()
    config = load_config()
    cfg, padding = config.explain, config.align.padding
    spec = get_spec(args.model)
    model = spec.load(Path("data/models"))
    _, record, _ = read_leam_outputs("data/leam", args.model)
    layers = tuple(name for name in record["layers"] if name != "overall")
    geometries = geometries_from_cells(record.get("cells"), spec.input_size)
    _, frames, landmarks = read_aligned("data/aligned")
    frames, landmarks = np.asarray(frames[:args.batch]), landmarks[:args.batch]
    n, size = len(frames), frames.shape[1]
    target = Target.from_spec(spec, model, landmarks, size, padding)
    rows = np.arange(n)
    with torch.no_grad():
        references = F.normalize(target.embed(frames_to_tensor(frames), rows), dim=1).roll(1, dims=0)
    region = face_region(config.face_region, size, landmarks=landmarks)
    ids = [f"bench/{i}" for i in range(n)]
    options = {"maps": list(cfg.maps), "patch": args.patch or cfg.patch, "stride": args.stride or cfg.stride}

    def batch() -> SourceBatch:
        return SourceBatch(model=model, spec=spec, target=target, frames=frames, landmarks=landmarks, rows=rows,
                           references=references, region=region, image_ids=ids, layers=layers, geometries=geometries,
                           negative_activations=record.get("negative_activations", "keep"), padding=padding,
                           seed=config.seed, fill=cfg.fill, batch_size=cfg.batch_size)

    inputs, _ = to_model_input(spec, frames, landmarks, padding)

    def plain():
        x = inputs.clone().requires_grad_(True)
        return torch.autograd.grad(F.cosine_similarity(model(x), references, dim=1).sum(), x)

    runs = {"forward+backward": plain}
    for method in build_methods(list(METHODS), **options):
        runs[method.name] = lambda m=method: m(batch())
    shared = build_methods(GRADIENT_METHODS, **options)

    def all_gradient_methods():
        one = batch()  # one forward + backward for all of them
        return [method(one) for method in shared]

    runs["all gradient methods"] = all_gradient_methods
    one_map = {"leam:overall": build_methods(["leam"], maps=["overall"])[0](batch())["leam:overall"]}
    steps, order = curve_steps(cfg.fractions), tie_order(ids, size, config.seed)
    x, face = frames_to_tensor(frames), torch.as_tensor(region)
    runs["curves of one map"] = lambda: image_curves(target.embed, x, rows, references, face, one_map, steps, cfg.fill,
                                                     order, cfg.batch_size)
    ms = best_ms_per_image(runs, n, args.repeats)
    base = ms["forward+backward"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.model}, {len(layers)} layers, "
          f"batch {n}, occlusion patch {options['patch']} stride {options['stride']}, {len(steps) - 1} curve steps")
    print(f"{'run':26s} {'ms/photo':>10s} {'x fwd+bwd':>10s}")
    for name, value in ms.items():
        print(f"{name:26s} {value:10.1f} {value / base:10.2f}")


if __name__ == "__main__":
    main()
