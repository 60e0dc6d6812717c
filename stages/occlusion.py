"""Stage `occlusion`: validate LEAM maps by occluding their top pixels, against random masks, across models.

Reads   data/aligned/{frames.npy, landmarks.npy, index.csv}, data/leam/<model>/{maps.npy, layers.json, meta.csv}
        and the weights in data/models/ for every model of the top-level `models` list.
Writes  data/occlusion/drops.csv      one row per (source, target, map, threshold, kind, repeat, image)
        data/occlusion/summary.csv    mean drop with 95% bootstrap CI per (source, target, map, threshold, kind)
        data/occlusion/by_gender.csv  the same split by gender
        data/occlusion/tests.csv      paired Wilcoxon LEAM vs each random baseline (all and per gender)
        data/occlusion/examples/*.png clean | LEAM top-t | random, for 3 images (report figures)
        data/occlusion/timing.json    ms per image-forward per target model and the stage's seconds
        metrics/occlusion.json        headline at the top-level `threshold`, source = target, + transfer means

drop = cos(clean image, reference) - cos(occluded image, reference) under the TARGET model, with the same
reference as LEAM. Random rows (kind random_uniform / random_face / random_blob: i.i.d. pixels over the frame,
i.i.d. pixels in the landmark face hull, a disc centred on a random face pixel) do not depend on a source model; their
source and map are `none`.

Params: threshold, seed, models, align.padding, leam.reference, occlusion.* (thresholds, maps, fill, random,
random_repeats, max_images_per_identity, batch_size, transfer, device).
Transfer (occlusion.transfer: true): maps of every source occlude every target; source = target uses every map
of occlusion.maps, source != target only the first one (normally `overall`). A layer a model lacks is skipped
for it (layer names differ between models).
Cost: image-forwards per image and target = 1 + thresholds x (maps + (sources - 1) + random kinds x repeats);
the stage logs and writes ms per image-forward for each model so the grid can be sized (see params.yaml).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leam import occlusion as occ
from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.device import resolve_device
from leam.errors import LeamError
from leam.io import example_name, read_aligned, read_leam_outputs, write_csv_atomic, write_json_atomic, write_png_atomic
from leam.models.registry import get_spec, register_zoo
from leam.topt import effective_thresholds

log = logging.getLogger("leam.occlusion")

ALIGNED = Path("data/aligned")
LEAM = Path("data/leam")
WEIGHTS = Path("data/models")
OUT = Path("data/occlusion")
METRICS = Path("metrics/occlusion.json")
EXAMPLES = 3
DROP_COLUMNS = ["source", "target", "map", "threshold", "kind", "repeat", "image_id", "identity", "gender",
                "clean", "occluded", "drop"]


def _read_source(model: str, map_names: list[str]) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """meta.csv, the memory-mapped maps and {map name: index} for the requested maps this model has.

    Layer names differ between models, so a requested layer a model lacks is skipped for that model
    (logged and counted); the first map (the transfer map, normally ``overall``) is required.
    """
    maps, layer_info, meta = read_leam_outputs(LEAM, model)
    layers = list(layer_info["layers"])
    if map_names[0] not in layers:
        raise LeamError(f"occlusion.maps[0]={map_names[0]!r} (the transfer map) is not computed for {model!r}; "
                        f"choose from: {', '.join(layers)}")
    return meta, maps, {name: layers.index(name) for name in map_names if name in layers}


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    config = load_config(args.params)  # the whole file is validated before any work
    register_zoo(config.model_zoo)
    cfg = config.occlusion
    models = list(config.models)
    threshold = config.threshold
    thresholds = effective_thresholds(cfg.thresholds, threshold, "occlusion.thresholds")
    map_names = list(cfg.maps)
    random_kinds = list(cfg.random)
    design_args = dict(thresholds=thresholds, fill=cfg.fill, random_kinds=random_kinds,
                       random_repeats=cfg.random_repeats, seed=config.seed)
    occ.Design(**design_args)  # validate params before any heavy work
    transfer = cfg.transfer
    device = resolve_device(cfg.device, "occlusion.device")
    batch_size = cfg.batch_size

    index, frames, landmarks = read_aligned(ALIGNED)
    size = frames.shape[1]

    if not map_names:
        raise LeamError("occlusion.maps is empty; name at least one map, e.g. [overall]")
    sources = {model: _read_source(model, map_names) for model in models}
    skipped = {model: [n for n in map_names if n not in s[2]] for model, s in sources.items()}
    unknown = [n for n in map_names if all(n in names for names in skipped.values())]
    if unknown:
        raise LeamError(f"occlusion.maps has {', '.join(map(repr, unknown))}, computed for no model; "
                        f"maps of {models[0]!r}: {', '.join(sources[models[0]][2])} (see data/leam/*/layers.json)")
    for model, names in skipped.items():
        if names:
            log.warning("source %s has no map %s: skipped for it", model, ", ".join(names))
    selection, dropped = occ.select_images(
        index, {m: s[0] for m, s in sources.items()}, cfg.max_images_per_identity,
        seed=design_args["seed"], reference_policy=config.leam.reference)
    if selection.empty:
        raise LeamError("no image to occlude: every LEAM image lacks a reference or a map")
    frame_rows = selection.frame_row.to_numpy()
    guides = {model: {name: np.asarray(maps[selection[f"map_row_{model}"].to_numpy(), layer], dtype=np.float32)
                      for name, layer in layer_ids.items()}
              for model, (_, maps, layer_ids) in sources.items()}
    needs_region = bool({"face", "blob"} & set(random_kinds))
    face_region = occ.face_region_from_landmarks(landmarks[frame_rows], size) if needs_region else None
    # Frames of the selected images and of their references only, so the memory map is read once.
    needed = np.unique(np.concatenate([frame_rows, np.concatenate(selection.reference_rows.map(np.asarray).to_list())]))
    local = {int(row): i for i, row in enumerate(needed)}
    frames_local = np.asarray(frames[needed])
    padding = config.align.padding

    timings: dict[str, occ.Timing] = {}
    parts = []
    for model in models:
        spec = get_spec(model)
        target = occ.Target(model, spec.load(WEIGHTS), spec.input_size,
                            np.asarray(spec.input_warp(landmarks[needed], size, padding)))
        # Source = target: every map; source != target (transfer): the first map only, to bound the cost.
        chosen = {source: (maps if source == model else {map_names[0]: maps[map_names[0]]})
                  for source, maps in guides.items() if transfer or source == model}
        design = occ.Design(**design_args, guides=chosen)
        parts.append(occ.occlusion_drops(
            frames_local, np.array([local[int(r)] for r in frame_rows]), selection.image_id.tolist(),
            [[local[int(r)] for r in rows] for rows in selection.reference_rows], face_region, [target], design,
            batch_size=batch_size, device=device, timings=timings))
        log.info("target %s: %.1f ms per image-forward (%d images in %d forwards)", model,
                 timings[model].ms_per_image, timings[model].images, timings[model].forwards)
    drops = pd.concat(parts, ignore_index=True)
    drops = drops.join(selection[["image_id", "identity", "gender"]], on="image")[DROP_COLUMNS]

    per_image = occ.per_image_drops(drops)
    summary = occ.summarize_drops(per_image, seed=design_args["seed"])
    by_gender = occ.summarize_drops(per_image, by=["gender"], seed=design_args["seed"])
    tests = pd.concat([occ.leam_vs_random(per_image).assign(gender="all"),
                       occ.leam_vs_random(per_image, by=["gender"])], ignore_index=True)

    write_csv_atomic(OUT / "drops.csv", drops)
    write_csv_atomic(OUT / "summary.csv", summary)
    write_csv_atomic(OUT / "by_gender.csv", by_gender)
    write_csv_atomic(OUT / "tests.csv", tests)
    _write_examples(frames_local, selection, frame_rows, local, guides, models[0], map_names[0], threshold,
                    design_args["seed"], design_args["fill"])
    metrics = occ.headline(summary, tests, threshold, map_names[0])
    metrics.update({"n_images": int(len(selection)), "left_out": dropped,
                    "maps_skipped": {m: n for m, n in skipped.items() if n},
                    "discarded_random_face": int(drops[drops.kind == "random_face"].occluded.isna().sum()),
                    "device": device.type})
    write_json_atomic(METRICS, metrics)
    # Timings vary run to run: they go beside the tables, not into the metrics that `dvc metrics diff` compares.
    seconds = round(time.perf_counter() - started, 1)
    write_json_atomic(OUT / "timing.json", {
        "ms_per_image_forward": {m: round(t.ms_per_image, 3) for m, t in timings.items()}, "seconds": seconds})
    head = metrics["models"].get(models[0], {})
    log.info("occlusion: %d images, %d targets, thresholds %s, %.0f s; %s @%g: leam %.4f vs random %s",
             len(selection), len(models), thresholds, seconds, models[0], threshold,
             head.get("leam_drop", float("nan")),
             ", ".join(f"{k[7:-5]} {v:.4f}" for k, v in head.items() if k.startswith("random_") and k.endswith("_drop")))


def _write_examples(frames_local, selection, frame_rows, local, guides, source, map_name, threshold, seed, fill) -> None:
    """Three example rows (first image of distinct identities first), clean | LEAM | random."""
    firsts = selection.drop_duplicates("identity").index.tolist()
    picks = (firsts + [i for i in selection.index if i not in set(firsts)])[:EXAMPLES]
    for position in picks:
        image_id = selection.image_id[position]
        panel = occ.example_panel(frames_local[local[int(frame_rows[position])]], guides[source][map_name][position],
                                  image_id, threshold, seed, fill)
        write_png_atomic(OUT / "examples" / example_name(image_id), panel)


def build_parser() -> argparse.ArgumentParser:
    return stage_parser("occlusion", __doc__)


if __name__ == "__main__":
    raise SystemExit(run_stage("occlusion", main, build_parser()))
