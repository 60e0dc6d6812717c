"""Occlusion stage: seconds per photo of the shared-mask path against the path it replaced, in one run.

On the first ``--identities`` identities x ``--per-identity`` photos of ``data/aligned`` (maps from
``data/leam/<model>`` where they exist, else seeded smooth maps of the same shape), with every model of
``params.yaml`` (``--models`` to choose) as source and target, the stage's thresholds, maps and random
baselines, this times
  - ``before``: the occlusion path as it was (kept here only, :func:`unshared_drops`): per target, every
    mask ranked again (one full sort per image and mask), random scores drawn again, the warp's sampling
    grid rebuilt on every forward, one forward per (mask, threshold) of a batch of photos;
  - ``after``: ``leam.occlusion.run_experiment``: each mask ranked once for every target
    (``TopPixels``), one warp grid per batch and target, occluded versions queued across masks and
    thresholds into forwards of ``batch_size`` frames;
interleaved round by round (best of ``--repeats``), wall and CPU seconds per photo, the forward passes'
share, and checks that both give the same drops table (every value, bit for bit).

    python -m benchmarks.occlusion [--identities 4] [--per-identity 2] [--models dlib_resnet mobileface]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from leam import occlusion as occ
from leam.config import load_config
from leam.embedding import frames_to_tensor, reference_embeddings
from leam.io import read_aligned, read_leam_outputs
from leam.models.registry import get_spec, register_zoo
from leam.occlusion.fills import fill_values, occlude
from leam.occlusion.masks import random_blob_scores, random_scores, upsample_maps
from leam.occlusion.targets import cosine
from leam.topt import effective_thresholds, pixel_ranks, top_count

COLUMNS = ["source", "target", "map", "threshold", "kind", "repeat", "image", "clean", "occluded", "drop"]


def unshared_drops(frames: np.ndarray, image_rows: np.ndarray, image_ids: Sequence[str], reference_rows,
                   face_region: np.ndarray, target: occ.Target, design: occ.Design, batch_size: int,
                   timing: occ.Timing) -> pd.DataFrame:
    """``leam.occlusion.occlusion_drops`` of one target as it was before masks were shared (the baseline)."""
    size = frames.shape[1]
    counts = {t: top_count(t, size * size) for t in design.thresholds}
    region_pixels = np.asarray(face_region).reshape(len(image_rows), -1).sum(axis=1)
    records = []

    def forward(batch: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        start = time.perf_counter()
        out = target.embed(batch, rows)
        timing.seconds += time.perf_counter() - start
        timing.forwards += 1
        timing.images += batch.shape[0]
        return out

    needed = sorted({int(r) for rows in reference_rows for r in rows})
    chunks = [forward(frames_to_tensor(frames[needed[s:s + batch_size]]), np.asarray(needed[s:s + batch_size]))
              for s in range(0, len(needed), batch_size)]
    position = {row: i for i, row in enumerate(needed)}
    references = reference_embeddings(torch.cat(chunks), [[position[int(r)] for r in rows] for rows in reference_rows])
    for start in range(0, len(image_rows), batch_size):
        stop = min(start + batch_size, len(image_rows))
        rows, ids = image_rows[start:stop], list(image_ids[start:stop])
        batch = frames_to_tensor(frames[rows])
        ref = references[start:stop]
        clean = cosine(forward(batch, rows), ref)
        fills = fill_values(batch, design.fill)
        base = {"target": target.name, "image": np.arange(start, stop)}

        def score(ranks, source, map_name, kind, repeat, valid=None) -> None:
            for threshold, count in counts.items():
                occluded = cosine(forward(occlude(batch, ranks < count, fills), rows), ref)
                clean_np, occluded_np = clean.numpy(), occluded.numpy()
                if valid is not None:
                    occluded_np = np.where(valid < count, np.nan, occluded_np)
                records.append(pd.DataFrame({**base, "source": source, "map": map_name, "threshold": threshold,
                                             "kind": kind, "repeat": repeat, "clean": clean_np,
                                             "occluded": occluded_np, "drop": clean_np - occluded_np}))

        for source, maps in design.guides.items():
            for map_name, grid_maps in maps.items():
                guide = torch.as_tensor(np.asarray(grid_maps[start:stop], dtype=np.float32))
                score(pixel_ranks(upsample_maps(guide, size)), source, map_name, "leam", 0)
        for kind in design.random_kinds:
            for repeat in range(design.random_repeats):
                valid, inside = None, None
                if kind == "blob":
                    scores = random_blob_scores(ids, torch.as_tensor(np.asarray(face_region[start:stop])),
                                                design.seed, repeat)
                else:
                    scores = random_scores(ids, size, design.seed, kind, repeat)
                if kind == "face":
                    inside = torch.as_tensor(np.asarray(face_region[start:stop]))
                    valid = region_pixels[start:stop]
                score(pixel_ranks(scores, valid=inside), "none", "none", f"random_{kind}", repeat, valid)
    return pd.concat(records, ignore_index=True)[COLUMNS]


def unshared_experiment(experiment: occ.Experiment, targets: list[occ.Target], design: occ.Design,
                        batch_size: int) -> tuple[pd.DataFrame, dict[str, occ.Timing]]:
    """``run_experiment`` over :func:`unshared_drops` (transfer on, as in the stage's default)."""
    first, timings, parts = experiment.map_names[0], {}, []
    for target in targets:
        chosen = {source: (maps if source == target.name else {first: maps[first]})
                  for source, maps in experiment.guides.items()}
        timings[target.name] = occ.Timing()
        parts.append(unshared_drops(experiment.frames, experiment.image_rows, experiment.selection.image_id.tolist(),
                                    experiment.reference_rows, experiment.face_region, target,
                                    replace(design, guides=chosen), batch_size, timings[target.name]))
    drops = pd.concat(parts, ignore_index=True)
    return drops.join(experiment.selection[["image_id", "identity", "gender"]], on="image")[occ.DROP_COLUMNS], timings


def leam_outputs(index: pd.DataFrame, models: list[str], leam_dir: Path) -> dict:
    """Each model's leam outputs, or (without ``data/leam/<model>``) seeded smooth maps with a stem and an
    overall layer and baseline references (the identity's first photo; the first photo uses the second)."""
    outputs, rng = {}, np.random.default_rng(0)
    for model in models:
        if (leam_dir / model / "maps.npy").is_file():
            outputs[model] = read_leam_outputs(leam_dir, model)
            continue
        meta = index[["image_id", "identity", "gender"]].reset_index(drop=True)
        first = meta.groupby("identity").image_id.transform("first")
        second = meta.groupby("identity").image_id.transform(lambda ids: ids.iloc[min(1, len(ids) - 1)])
        meta["reference_image_id"] = np.where(meta.image_id == first, second, first)
        meta["row"], meta["cosine"] = np.arange(len(meta)), 0.5
        noise = torch.from_numpy(rng.random((len(meta) * 2, 1, 14, 14), dtype=np.float32))
        maps = F.interpolate(noise, size=(112, 112), mode="bicubic", align_corners=False).reshape(len(meta), 2, 112, 112)
        outputs[model] = (maps.numpy().astype(np.float16), {"layers": ["stem", "overall"]}, meta)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=4, help="first identities of data/aligned (default 4)")
    parser.add_argument("--per-identity", type=int, default=2, help="photos per identity (default 2)")
    parser.add_argument("--models", nargs="+", help="sources and targets (default: params.yaml models)")
    parser.add_argument("--batch", type=int, help="batch size (default: occlusion.batch_size)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    config = load_config()
    register_zoo(config.model_zoo)
    cfg, models = config.occlusion, args.models or list(config.models)
    batch_size = args.batch or cfg.batch_size
    index, frames, landmarks = read_aligned("data/aligned")
    index = index[index.identity.isin(sorted(index.identity.unique())[:args.identities])]
    outputs = leam_outputs(index, models, Path("data/leam"))
    experiment = occ.plan_experiment(index, frames, landmarks, outputs, cfg.maps, args.per_identity, config.seed,
                                     config.leam.reference, "landmarks")
    design = occ.Design(effective_thresholds(cfg.thresholds, config.threshold), cfg.fill, list(cfg.random),
                        cfg.random_repeats, config.seed)
    targets = [occ.Target.from_spec(spec, spec.load(Path("data/models")), experiment.landmarks,
                                    experiment.frame_size, config.align.padding) for spec in map(get_spec, models)]
    photos = len(experiment.selection)
    runs = {"before": lambda: unshared_experiment(experiment, targets, design, batch_size),
            "after": lambda: occ.run_experiment(experiment, targets, design, True, batch_size, "cpu")}
    best = {key: (np.inf, np.inf) for key in runs}
    results = {}
    for _ in range(args.repeats):
        for key, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[key] = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
    print(f"occlusion, {photos} photos, {len(models)} sources = targets, thresholds {design.thresholds}, maps "
          f"{cfg.maps}, random {list(cfg.random)}, batch {batch_size}, {torch.get_num_threads()} thread(s)")
    for key, (wall, cpu) in best.items():
        timings = results[key][1]
        forwards = sum(t.seconds for t in timings.values())
        print(f"  {key:>6}: {wall / photos:6.3f} s/photo wall, {cpu / photos:6.3f} s/photo CPU; forward passes "
              f"{sum(t.forwards for t in timings.values())} ({forwards / photos:.3f} s/photo, "
              f"{100 * forwards / wall:.0f}% of wall)")
    before, after = results["before"][0], results["after"][0]
    pd.testing.assert_frame_equal(before.drop(columns=["clean", "occluded", "drop"]),
                                  after.drop(columns=["clean", "occluded", "drop"]), check_exact=True)
    differ = (before["drop"].to_numpy() != after["drop"].to_numpy()) & ~(before["drop"].isna() & after["drop"].isna())
    if differ.any():  # only where a forward pass holds fewer frames than before (a photo batch not full)
        gap = (before["drop"] - after["drop"]).abs().groupby(after.target).max()
        same = f"drops equal to float32 tolerance: max |before - after| per target {gap.round(9).to_dict()}"
    else:
        same = "drops tables identical, every value bit for bit"
    print(f"  after / before: wall x{best['after'][0] / best['before'][0]:.2f}, CPU x{best['after'][1] / best['before'][1]:.2f}; "
          f"{same} ({len(after)} rows)")


if __name__ == "__main__":
    main()
