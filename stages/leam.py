"""Stage `leam@<model>`: LEAM maps of every aligned face against its identity's reference, per model.

For each kept image x with reference embedding r, LEAM explains s = cos(f(x), r): per selected layer,
ReLU(sum_c ReLU(+-ds/dA_c) * A_c), all layers from one forward and one backward pass (leam.core).
The reference is the identity's baseline photo (leam.reference=baseline; the baseline photo itself uses
the next photo of its identity), the mean of its other photos (mean_others), or explicit pairs (pairs).
Identities with a single kept photo have no reference: they are dropped, counted in layers.json and
listed in discards.csv (the align stage already drops identities below data.min_images_per_identity).

Reads  data/aligned/{frames.npy, landmarks.npy, index.csv} and the model weights in data/models/.
Writes data/leam/<model>/maps.npy     float16 (N, L+1, G, G) raw maps in the analysis frame, G = leam.store_size,
                                      layers in layers.json order, the last one `overall`
       data/leam/<model>/layers.json  model, layers, grid, frame_size, sign, negative_activations, reference
       data/leam/<model>/meta.csv     row, image_id, identity, gender, reference_image_id, cosine
       data/leam/<model>/discards.csv image_id, identity, reason: aligned images without a reference

Params: leam.* (reference, baseline_index, pairs_file, sign, negative_activations, layers.<model>, overall,
store_size, batch_size), align.padding, model_zoo (user IResNet checkpoints).

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

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from leam import core
from leam.cli import run_stage, stage_parser
from leam.config import Config, load_config
from leam.errors import LeamError
from leam.io import read_aligned as io_read_aligned
from leam.io import read_csv_checked, save_npy_atomic, write_csv_atomic, write_json_atomic
from leam.models.registry import available_models, get_spec, register_zoo, resolve_layers

log = logging.getLogger("leam.leam")

FLOAT16_TINY = float(np.finfo(np.float16).tiny)  # 6.1e-05: smaller values are subnormal


def read_aligned(folder: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The aligned index, frames and landmarks (leam.io.read_aligned) plus the columns this stage needs."""
    index, frames, landmarks = io_read_aligned(folder)
    needed = {"row", "image_id", "identity", "gender"} - set(index.columns)
    if needed:
        raise LeamError(f"{folder / 'index.csv'} lacks column(s) {', '.join(sorted(needed))}")
    if len(index) and (index["row"].min() < 0 or index["row"].max() >= len(frames)):
        raise LeamError(f"{folder / 'index.csv'} has rows outside 0..{len(frames) - 1}")
    return index, frames, landmarks


def list_models(config: Config) -> None:
    """Print each registered model with its default LEAM layers (and their shapes when weights load)."""
    for name in available_models():
        spec = get_spec(name)
        print(f"{name}: {spec.description}\n  input {spec.input_size}px, {spec.embedding_dim}-d")
        shapes: dict[str, tuple] = {}
        try:
            model = spec.load(Path("data/models"))
            hooks = [model.get_submodule(layer).register_forward_hook(
                lambda m, i, o, layer=layer: shapes.__setitem__(layer, tuple(o.shape[1:]))) for layer in spec.layers]
            with torch.no_grad():
                model(torch.zeros(1, 3, spec.input_size, spec.input_size))
            for hook in hooks:
                hook.remove()
        except LeamError as exc:
            print(f"  (weights not available: {exc})")
        for layer in spec.layers:
            print(f"  {layer:<20} {'x'.join(map(str, shapes[layer])) if layer in shapes else ''}")
    del config


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    register_zoo(config.model_zoo)
    if args.list:
        list_models(config)
        return
    if not args.model:
        raise LeamError("--model is required; registered models: " + ", ".join(available_models()))
    started = time.perf_counter()
    cfg = config.leam  # choices and ranges are checked by the schema (leam.config)
    reference_mode = cfg.reference
    sign = cfg.sign
    negative = cfg.negative_activations
    overall_policy = cfg.overall
    grid = cfg.store_size
    batch_size = cfg.batch_size
    frame_padding = config.align.padding

    spec = get_spec(args.model)
    index, frames, landmarks = read_aligned(Path(args.aligned))
    if grid > frames.shape[1]:
        raise LeamError(f"leam.store_size={grid} exceeds the frame size {frames.shape[1]}")
    pairs = None
    if reference_mode == "pairs":
        pairs_file = Path(cfg.pairs_file)
        if not pairs_file.is_file():
            raise LeamError(f"leam.reference=pairs needs leam.pairs_file, got {str(pairs_file)!r} (not a file)")
        pairs = read_csv_checked(pairs_file, ("image_id", "reference_image_id"), dtype=str,
                                 hint="fix leam.pairs_file (CSV with columns image_id, reference_image_id)")
    plan, dropped = core.select_references(index, reference_mode, cfg.baseline_index, pairs)
    if plan.empty:
        raise LeamError(f"no image has a reference (dropped: {dropped or 'none'}); "
                        "every identity needs at least two aligned photos")

    model = spec.load(Path(args.weights))
    layers = resolve_layers(spec, model, cfg.layers.get(args.model))
    torch.manual_seed(config.seed)

    array_rows = index["row"].to_numpy()
    embeddings = core.embed_frames(model, spec, frames[array_rows], landmarks[array_rows], frame_padding, batch_size)
    references = core.reference_embeddings(plan, embeddings)
    image_rows = array_rows[plan.row.to_numpy()]
    probe = array_rows[:cfg.probe_images]  # effective_field: cell positions measured on the first aligned photos
    geometries = core.frame_geometries(model, spec, layers, cfg.placement, frames[probe], landmarks[probe],
                                       frame_padding)
    maps = np.zeros((len(plan), len(layers) + 1, grid, grid), dtype=np.float32)
    cosines = np.zeros(len(plan), dtype=np.float64)
    faint = 0  # layer maps whose peak lies below float16's normal range (fewer significant bits)
    for start in tqdm(range(0, len(plan), batch_size), desc=f"leam {args.model}", unit="batch"):
        rows = image_rows[start:start + batch_size]
        result = core.frame_leam_maps(model, spec, frames[rows], landmarks[rows], references[start:start + batch_size],
                                      layers, frame_padding, sign, negative, geometries)
        stored = core.area_downsample(result.maps, grid)
        stored = torch.cat([stored, core.overall_map(stored, overall_policy)[:, None]], dim=1)
        maps[start:start + len(rows)] = stored.numpy()
        cosines[start:start + len(rows)] = result.cosine.numpy()

    # Raw map magnitudes differ by orders of magnitude between models (mobilefacenet peaks near 1e-6, below
    # float16's normal range), so each layer is stored divided by one constant, its peak over all images:
    # raw = stored * scale[layer]. Every consumer (top-t ranks, shares, normalised distributions, CVs) is
    # invariant to a per-layer constant, and float16 keeps ~3 significant digits relative to the peak.
    peaks = maps.max(axis=(0, 2, 3)).astype(np.float64)
    scale = np.where(peaks > 0, peaks, 1.0)
    stored_maps = (maps / scale[None, :, None, None].astype(np.float32)).astype(np.float16)
    faint = int(((stored_maps[:, :-1].max(axis=(-2, -1)) > 0) &
                 (stored_maps[:, :-1].max(axis=(-2, -1)) < FLOAT16_TINY)).sum())
    if faint:
        log.warning("%d of %d layer maps peak below %.1e of their layer's peak and keep fewer significant bits",
                    faint, len(plan) * len(layers), FLOAT16_TINY)
    maps = stored_maps
    kept = index.iloc[plan.row.to_numpy()].reset_index(drop=True)
    meta = pd.DataFrame({"row": np.arange(len(plan)), "image_id": kept.image_id, "identity": kept.identity,
                         "gender": kept.gender, "reference_image_id": plan.reference_image_id.to_numpy(),
                         "cosine": cosines})
    out = Path(args.out) / args.model
    save_npy_atomic(out / "maps.npy", maps)
    write_json_atomic(out / "layers.json", {
        "model": args.model, "layers": [*layers, "overall"], "grid": grid, "frame_size": int(frames.shape[1]),
        "sign": sign, "negative_activations": negative, "reference": reference_mode,
        "placement": cfg.placement, "cells": cell_table(geometries),
        "scale": [float(v) for v in scale], "scale_note": "raw map = stored value * scale[layer]",
        "images_in": int(len(index)), "dropped": {k: int(v) for k, v in sorted(dropped.items())}})
    write_csv_atomic(out / "meta.csv", meta)
    # every aligned image is in meta.csv or here; the reason is exact when one reason dropped them all
    unplanned = np.ones(len(index), dtype=bool)
    unplanned[plan.row.to_numpy()] = False
    reason = next(iter(dropped)) if len(dropped) == 1 else "no_reference"
    write_csv_atomic(out / "discards.csv", pd.DataFrame(
        {"image_id": index.image_id[unplanned], "identity": index.identity[unplanned], "reason": reason},
        columns=["image_id", "identity", "reason"]))
    log.info("%s: %d images, %d dropped (%s), %d layers, mean cosine %.3f, %.1f s -> %s", args.model, len(plan),
             sum(dropped.values()), ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) or "none",
             len(layers), float(cosines.mean()), time.perf_counter() - started, out)


def cell_table(geometries) -> dict | None:
    """Where each layer's cell (0, 0) sits and the cell spacing, in model-input pixels (None = centred)."""
    if geometries is None:
        return None
    return {name: {"grid": list(g.grid), "centre_0": [round(g.y.centre(0), 4), round(g.x.centre(0), 4)],
                   "jump": [g.y.jump, g.x.jump]} for name, g in geometries.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("leam", __doc__)
    parser.add_argument("--model", help="registered model name (see --list)")
    parser.add_argument("--list", action="store_true", help="list registered models and their default layers")
    parser.add_argument("--aligned", default="data/aligned", help="aligned-data folder (default: data/aligned)")
    parser.add_argument("--weights", default="data/models", help="weights folder (default: data/models)")
    parser.add_argument("--out", default="data/leam", help="output root; maps go to <out>/<model>/ (default: data/leam)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_stage("leam", main, build_parser()))
