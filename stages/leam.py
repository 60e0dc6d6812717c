"""Stage `leam@<model>`: LEAM maps of every aligned face against its identity's reference, per model.

For each kept image x with reference embedding r, LEAM explains s = cos(f(x), r): per selected layer,
ReLU(sum_c ReLU(+-ds/dA_c) * A_c), all layers from one forward and one backward pass (leam.core).
The reference is the identity's baseline photo (leam.reference=baseline; the baseline photo itself uses
the next photo of its identity), the mean of its other photos (mean_others), or explicit pairs (pairs).
Identities with a single kept photo have no reference: they are dropped, counted in layers.json and
listed in discards.csv (the align stage already drops identities below data.min_images_per_identity).

Reads  data/aligned/{frames.npy, landmarks.npy, index.csv}, the model weights in data/models/ and
       data/embeddings/<model>.npy (the models stage's embeddings of the frames: the references are built from them).
Writes data/leam/<model>/maps.npy     float16 (N, L+1, G, G) raw maps in the analysis frame, G = leam.store_size,
                                      layers in layers.json order, the last one `overall`
       data/leam/<model>/layers.json  model, layers, grid, frame_size, sign, negative_activations, reference
       data/leam/<model>/meta.csv     row, image_id, identity, gender, reference_image_id, cosine
       data/leam/<model>/discards.csv image_id, identity, reason: aligned images without a reference

Params: leam.* (reference, baseline_index, pairs_file, sign, negative_activations, layers.<model>, overall,
store_size, batch_size), align.padding, model_zoo (user IResNet checkpoints), engine and ray.* (where the
batches run: here or on Ray actors, leam.engine; the same maps bit for bit, so switching reruns this stage
and leaves what follows up to date).

Examples:
  python -m stages.leam --model dlib_resnet
  python -m stages.leam --list                       # registered models and their default LEAM layers
  dvc exp run -S leam.sign=opposes_match             # what pulls each photo away from its reference
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.dataset_maps import dataset_maps
from leam.device import resolve_device
from leam.errors import LeamError
from leam.io import FLOAT16_TINY, load_npy, read_aligned, read_csv_checked, write_leam_outputs
from leam.models.registry import available_models, describe_models, get_spec, register_zoo, resolve_layers

log = logging.getLogger("leam.leam")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    register_zoo(config.model_zoo)
    if args.list:
        print("\n".join(describe_models(Path(args.weights))))
        return
    if not args.model:
        raise LeamError("--model is required; registered models: " + ", ".join(available_models()))
    started = time.perf_counter()
    cfg = config.leam  # choices and ranges are checked by the schema (leam.config)
    device = resolve_device(cfg.device, "leam.device")
    spec = get_spec(args.model)
    index, frames, landmarks = read_aligned(args.aligned, columns=("row", "gender"))
    pairs = None
    if cfg.reference == "pairs":
        pairs_file = Path(cfg.pairs_file)
        if not pairs_file.is_file():
            raise LeamError(f"leam.reference=pairs needs leam.pairs_file, got {str(pairs_file)!r} (not a file)")
        pairs = read_csv_checked(pairs_file, ("image_id", "reference_image_id"), dtype=str,
                                 hint="fix leam.pairs_file (CSV with columns image_id, reference_image_id)")
    embeddings = load_npy(Path(args.embeddings) / f"{args.model}.npy", mmap_mode="r", hint="rebuild it with "
                          f"`dvc repro models` (it embeds the params.yaml `models`; {args.model} must be one)")
    model = spec.load(Path(args.weights))
    layers = resolve_layers(spec, model, cfg.layers.get(args.model))
    torch.manual_seed(config.seed)
    result = dataset_maps(model, spec, layers, index, frames, landmarks, cfg, config.align.padding, pairs,
                          embeddings, config.engine, config.ray, device)

    out = Path(args.out) / args.model
    faint = write_leam_outputs(out, result.maps, result.record, result.meta, result.discards)
    if faint:
        log.warning("%d of %d layer maps peak below %.1e of their layer's peak and keep fewer significant bits",
                    faint, len(result.meta) * len(layers), FLOAT16_TINY)
    dropped = result.dropped
    log.info("%s: %d images, %d dropped (%s), %d layers, mean cosine %.3f, %.1f s -> %s", args.model,
             len(result.meta), sum(dropped.values()), ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()))
             or "none", len(layers), float(result.meta.cosine.mean()), time.perf_counter() - started, out)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("leam", __doc__)
    parser.add_argument("--model", help="registered model name (see --list)")
    parser.add_argument("--list", action="store_true", help="list registered models and their default layers")
    parser.add_argument("--aligned", default="data/aligned", help="aligned-data folder (default: data/aligned)")
    parser.add_argument("--weights", default="data/models", help="weights folder (default: data/models)")
    parser.add_argument("--embeddings", default="data/embeddings",
                        help="the models stage's <model>.npy embeddings folder (default: data/embeddings)")
    parser.add_argument("--out", default="data/leam", help="output root; maps go to <out>/<model>/ (default: data/leam)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_stage("leam", main, build_parser()))
