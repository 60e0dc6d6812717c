"""Stage `occlusion`: validate LEAM maps by occluding their top pixels, against random masks, across models.

Reads   data/aligned/{frames.npy, landmarks.npy, index.csv}, data/leam/<model>/{maps.npy, layers.json, meta.csv}
        and the weights in data/models/ for every model of the top-level `models` list; with
        face_region=parsing also data/parsing/labels.npy.
Writes  data/occlusion/drops.csv      one row per (source, target, map, threshold, kind, repeat, image)
        data/occlusion/summary.csv    mean drop with 95% bootstrap CI per (source, target, map, threshold, kind)
        data/occlusion/by_gender.csv  the same split by gender
        data/occlusion/tests.csv      paired Wilcoxon LEAM vs each random baseline (all and per gender)
        data/occlusion/examples/*.png clean | LEAM top-t | random, for 3 images (report figures)
        data/occlusion/timing.json    ms per image-forward per target model and the stage's seconds
        metrics/occlusion.json        headline at the top-level `threshold`, source = target, + transfer means

drop = cos(clean image, reference) - cos(occluded image, reference) under the TARGET model, with the same
reference as LEAM. Random rows (kind random_uniform / random_face / random_blob: i.i.d. pixels over the frame,
i.i.d. pixels in the face region (top-level `face_region`, default the landmark hull; leam.face_region), a
disc centred on a random face pixel) do not depend on a source model; their
source and map are `none`.

Params: threshold, seed, models, face_region, align.padding, leam.reference, occlusion.* (thresholds, maps, fill, random,
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

from leam import occlusion as occ
from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.device import forward_bytes, resolve_batch_size, resolve_device
from leam.examples import write_examples
from leam.io import read_aligned, read_face_labels, read_leam_outputs, write_csv_atomic, write_json_atomic
from leam.models.registry import get_spec, register_zoo
from leam.topt import effective_thresholds

log = logging.getLogger("leam.occlusion")

ALIGNED = Path("data/aligned")
LEAM = Path("data/leam")
PARSING = Path("data/parsing")
WEIGHTS = Path("data/models")
OUT = Path("data/occlusion")
METRICS = Path("metrics/occlusion.json")
EXAMPLES = 3


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    config = load_config(args.params)  # the whole file is validated before any work
    register_zoo(config.model_zoo)
    cfg, models, threshold, seed = config.occlusion, list(config.models), config.threshold, config.seed
    thresholds = effective_thresholds(cfg.thresholds, threshold, "occlusion.thresholds")
    design = occ.Design(thresholds, cfg.fill, list(cfg.random), cfg.random_repeats, seed)  # checked before heavy work
    device = resolve_device(cfg.device, "occlusion.device")

    index, frames, landmarks = read_aligned(ALIGNED)
    batch_size = resolve_batch_size(cfg.batch_size, device, lambda: max(  # layer outputs + frame copies, per photo
        forward_bytes(spec.load(WEIGHTS), spec.input_size) for spec in map(get_spec, models)) + 8 * frames[0].size * 4,
        "occlusion.batch_size")
    labels = read_face_labels(PARSING, ALIGNED, index.image_id) if config.face_region == "parsing" else None
    experiment = occ.plan_experiment(index, frames, landmarks, {m: read_leam_outputs(LEAM, m) for m in models},
                                     cfg.maps, cfg.max_images_per_identity, seed, config.leam.reference,
                                     config.face_region, labels)
    targets = (occ.Target.from_spec(spec, spec.load(WEIGHTS), experiment.landmarks, experiment.frame_size,
                                    config.align.padding) for spec in map(get_spec, models))
    drops, timings = occ.run_experiment(experiment, targets, design, cfg.transfer, batch_size, device)
    tables = occ.drop_tables(drops, seed)

    for name, table in tables.items():
        write_csv_atomic(OUT / f"{name}.csv", table)
    write_examples(OUT / "examples", occ.example_panels(experiment, models[0], threshold, seed, cfg.fill, EXAMPLES))
    metrics = occ.metrics_document(experiment, tables, threshold, device)
    write_json_atomic(METRICS, metrics)
    # Timings vary run to run: they go beside the tables, not into the metrics that `dvc metrics diff` compares.
    seconds = round(time.perf_counter() - started, 1)
    write_json_atomic(OUT / "timing.json", {
        "ms_per_image_forward": {m: round(t.ms_per_image, 3) for m, t in timings.items()}, "seconds": seconds})
    head = metrics["models"].get(models[0], {})
    log.info("occlusion: %d images, %d targets, thresholds %s, %.0f s; %s @%g: leam %.4f vs random %s",
             len(experiment.selection), len(models), thresholds, seconds, models[0], threshold,
             head.get("leam_drop", float("nan")),
             ", ".join(f"{k[7:-5]} {v:.4f}" for k, v in head.items() if k.startswith("random_") and k.endswith("_drop")))


def build_parser() -> argparse.ArgumentParser:
    return stage_parser("occlusion", __doc__)


if __name__ == "__main__":
    raise SystemExit(run_stage("occlusion", main, build_parser()))
