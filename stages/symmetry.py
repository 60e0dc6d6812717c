"""Stage `symmetry`: are LEAM maps of aligned faces left/right balanced, under each placement?

For a seeded subset of photos (``symmetry.max_images`` per model) this stage computes the LEAM maps of
every layer (and the overall map) once per ``leam.placement`` (``effective_field``, ``receptive_field``
and ``centred``), on the photo and on its mirror image, and measures (``leam.metrics.symmetry``): the L/R
mass ratio of the top-``threshold`` pixels for eyes, brows, mouth halves and face halves, and the flip
bias (horizontal shift of the map against the mirrored face's map mirrored back, frame pixels). Maps are
compared in the analysis frame at full resolution with the parse stage's labels. It is the evidence for
the default ``leam.placement`` (README, Regions page).

Reads  data/aligned/, data/parsing/, data/models/
Writes data/symmetry/per_image.csv   one row per model/placement/layer/image
       data/symmetry/summary.csv     ratios and flip bias with 95% CIs
       metrics/symmetry.json

Examples:
  python -m stages.symmetry
  python -m stages.symmetry --out /tmp/symmetry --metrics /tmp/symmetry.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from leam import core
from leam.cli import run_stage, stage_parser
from leam.config import Config, load_config
from leam.errors import LeamError
from leam.io import read_aligned, read_parsing, write_csv_atomic, write_json_atomic
from leam.metrics.symmetry import (
    PAIRS,
    horizontal_centroid,
    mirror_faces,
    region_sides,
    side_shares,
    summarise_symmetry,
)
from leam.models.registry import get_spec, register_zoo, resolve_layers
from leam.placement import PLACEMENTS
from leam.topt import top_fraction_mask

log = logging.getLogger("leam.symmetry")


def model_symmetry(name: str, config: Config, frames, landmarks, labels, index: pd.DataFrame,
                   weights: Path, probe: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """Per-image symmetry rows of one model for every placement (see the module docstring)."""
    spec = get_spec(name)
    model = spec.load(weights)
    layers = resolve_layers(spec, model, config.leam.layers.get(name))
    plan, _ = core.select_references(index, config.leam.reference, config.leam.baseline_index)
    rng = np.random.default_rng(config.seed)
    plan = plan.iloc[np.sort(rng.permutation(len(plan))[:config.symmetry.max_images])].reset_index(drop=True)
    padding, batch = config.align.padding, config.leam.batch_size
    needed = np.unique(np.concatenate([plan.row.to_numpy(), *map(np.asarray, plan.reference_rows)]))
    embeddings = torch.zeros((len(frames), spec.embedding_dim))  # only the rows the subset needs are filled
    embeddings[needed] = core.embed_frames(model, spec, frames[needed], landmarks[needed], padding, batch)
    references = core.reference_embeddings(plan, embeddings)
    rows = plan.row.to_numpy()
    names = [*layers, "overall"]
    geometries = {placement: core.frame_geometries(model, spec, layers, placement, *probe, padding)
                  for placement in PLACEMENTS}  # measured once per model, as the leam stage does

    def maps_of(images, points, refs, placement) -> torch.Tensor:
        """Layer maps plus the overall map (N, L + 1, S, S) under one placement."""
        result = core.frame_leam_maps(model, spec, images, points, refs, layers, padding, config.leam.sign,
                                      config.leam.negative_activations, geometries[placement])
        return torch.cat([result.maps, core.overall_map(result.maps, config.leam.overall)[:, None]], dim=1)

    out = []
    for start in tqdm(range(0, len(rows), batch), desc=f"symmetry {name}", unit="batch"):
        chunk, refs = rows[start:start + batch], references[start:start + batch]
        sides = region_sides(labels[chunk], landmarks[chunk])
        mirrored, mirrored_points = mirror_faces(frames[chunk], landmarks[chunk])
        for placement in PLACEMENTS:
            maps = maps_of(frames[chunk], landmarks[chunk], refs, placement)
            flipped_back = maps_of(mirrored, mirrored_points, refs, placement).flip(-1)
            bias = ((horizontal_centroid(maps) - horizontal_centroid(flipped_back)) / 2).numpy()
            n, count, size = maps.shape[0], maps.shape[1], maps.shape[-1]
            top = top_fraction_mask(maps.reshape(n * count, size, size), config.threshold).reshape(maps.shape)
            shares = side_shares(top.to(torch.float32), sides)
            for i, row in enumerate(chunk):
                for j, layer in enumerate(names):
                    record = {"model": name, "placement": placement, "layer": layer, "image_id": index.image_id[row],
                              "flip_bias_px": float(bias[i, j])}
                    for pair in PAIRS:
                        record[f"{pair}_left"], record[f"{pair}_right"] = shares[pair][i, j]
                    out.append(record)
    frame = pd.DataFrame(out)
    grids = {layer: geometry.grid[0] for layer, geometry in geometries["receptive_field"].items()}
    frame.insert(3, "grid", frame.layer.map(grids).fillna(0).astype(int))
    return frame


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    register_zoo(config.model_zoo)
    index, frames, landmarks = read_aligned(args.aligned, config.align.frame_size)
    labels, parsed, _ = read_parsing(args.parsing_dir)
    label_row = dict(zip(parsed.image_id[parsed.parsed.astype(bool)], parsed.row[parsed.parsed.astype(bool)]))
    aligned_count = len(index)
    first = index.row.to_numpy()[:config.leam.probe_images]  # the leam stage's probe photos
    probe = (frames[first], landmarks[first])
    index = index[index.image_id.isin(label_row)].reset_index(drop=True)
    if index.empty:
        raise LeamError(f"no aligned photo has parser labels in {args.parsing_dir}; rerun `dvc repro parse`")
    rows = index.row.to_numpy()
    frames, landmarks = frames[rows], landmarks[rows]
    labels = np.asarray(labels[index.image_id.map(label_row).to_numpy()])
    log.info("%d aligned photos have parser labels (%d without are left out)", len(index), aligned_count - len(index))
    per_image = pd.concat([model_symmetry(name, config, frames, landmarks, labels, index, Path(args.weights), probe)
                           for name in config.models], ignore_index=True)
    summary = summarise_symmetry(per_image, config.symmetry.bootstrap, config.seed)
    out = Path(args.out)
    write_csv_atomic(out / "per_image.csv", per_image)
    write_csv_atomic(out / "summary.csv", summary)
    write_json_atomic(args.metrics, symmetry_metrics(summary, config.threshold))
    log.info("symmetry of %d models x %d placements -> %s", len(config.models), len(PLACEMENTS), out)


def symmetry_metrics(summary: pd.DataFrame, threshold: float) -> dict:
    """metrics/symmetry.json: per model, placement and layer the L/R ratios and the flip bias (rounded)."""
    document: dict = {"threshold": threshold, "models": {}}
    for row in summary.itertuples(index=False):
        entry = {"grid": row.grid, "images": row.images, "flip_bias_px": round(row.flip_bias_px, 3)}
        for pair in PAIRS:
            entry[f"{pair}_lr"] = round(float(getattr(row, f"{pair}_lr")), 3)
        document["models"].setdefault(row.model, {}).setdefault(row.placement, {})[row.layer] = entry
    return document


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("symmetry", __doc__)
    parser.add_argument("--aligned", default="data/aligned", help="aligned-data folder (default: data/aligned)")
    parser.add_argument("--parsing-dir", default="data/parsing", help="parser outputs (default: data/parsing)")
    parser.add_argument("--weights", default="data/models", help="weights folder (default: data/models)")
    parser.add_argument("--out", default="data/symmetry", help="output folder (default: data/symmetry)")
    parser.add_argument("--metrics", default="metrics/symmetry.json", help="metrics file (default: metrics/symmetry.json)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_stage("symmetry", main, build_parser()))
