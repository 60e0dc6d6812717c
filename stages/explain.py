"""Stage `explain`: which attribution method ranks face pixels best? Deletion and insertion curves, LEAM against the others.

Reads   data/aligned/{frames.npy, landmarks.npy, index.csv}, data/leam/<source>/{maps.npy, layers.json, meta.csv}
        (the photos, their references, layers and cell placement of each source's leam run) and the weights in
        data/models/ of every source and target network; with face_region=parsing also data/parsing/labels.npy.
Writes  data/explain/curves.csv          mean cosine with 95% CI per (source, target, method, curve, fraction)
        data/explain/auc.csv             mean normalised AUC with 95% CI and rank per (source, target, method, curve)
        data/explain/auc_per_image.csv   one AUC per photo (what the tests pair)
        data/explain/tests.csv           paired Wilcoxon of every method vs leam:overall per (source, target, curve)
        data/explain/signs.csv           supports_match vs opposes_match maps: does the curve tell them apart?
        data/explain/plots/<curve>/<model>.csv  source = target mean curves, one column per method (dvc plots)
        data/explain/timing.json         seconds per method (maps) and per target (curves), the stage's seconds
        metrics/explain.json             winners, LEAM's rank, AUCs with CIs, sign separation

Every method explains s = cos(f(x), r) of the same photo and LEAM reference (leam.attribution.methods); the
curves delete (or, from a fully filled face, insert) the most relevant face pixels (top-level `face_region`)
in steps of explain.fractions and re-embed with the target network (leam.attribution.curves).
Params: seed, models, model_zoo, face_region, align.padding, leam.reference, explain.*.
Cost: per photo and target about 2 x len(fractions) x maps forwards (+ the occlusion method's patches on
the source); the default scope (20 photos, dlib_resnet and mobileface, both ways) runs in ~1.5 min on 2 CPU
cores; explain.max_identities: 0 and explain.max_images_per_identity: 0 run every photo (a GPU run).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from leam import attribution as at
from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.core import pass_bytes
from leam.device import resolve_batch_size, resolve_device
from leam.io import read_aligned, read_face_labels, read_leam_outputs, write_csv_atomic, write_json_atomic
from leam.models.registry import get_spec, register_zoo
from leam.occlusion import Target

log = logging.getLogger("leam.explain")

ALIGNED = Path("data/aligned")
LEAM = Path("data/leam")
PARSING = Path("data/parsing")
WEIGHTS = Path("data/models")
OUT = Path("data/explain")
METRICS = Path("metrics/explain.json")


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    config = load_config(args.params)  # the whole file is validated before any work
    register_zoo(config.model_zoo)
    cfg, seed, padding = config.explain, config.seed, config.align.padding
    at.check_scope(cfg.sources, cfg.targets, config.models)
    device = resolve_device(cfg.device, "explain.device")

    index, frames, landmarks = read_aligned(ALIGNED)
    batch_size = resolve_batch_size(cfg.batch_size, device, lambda: len(cfg.methods) * max(
        pass_bytes(spec.load(WEIGHTS), spec, spec.layers, frames.shape[1])
        for spec in map(get_spec, dict.fromkeys([*cfg.sources, *cfg.targets]))), "explain.batch_size")
    design = at.Design(tuple(cfg.methods), tuple(cfg.maps), tuple(cfg.fractions), cfg.fill, cfg.patch, cfg.stride,
                       seed, batch_size)  # checked before heavy work
    labels = read_face_labels(PARSING, ALIGNED, index.image_id) if config.face_region == "parsing" else None
    outputs = {model: read_leam_outputs(LEAM, model) for model in cfg.sources}
    experiment = at.plan(index, frames, landmarks, outputs, cfg.max_identities, cfg.max_images_per_identity, seed,
                         config.leam.reference, config.face_region, labels)
    specs = {model: get_spec(model) for model in dict.fromkeys([*cfg.sources, *cfg.targets])}
    modules = {model: spec.load(WEIGHTS) for model, spec in specs.items()}
    targets = {model: Target.from_spec(spec, modules[model], experiment.landmarks, experiment.frame_size, padding)
               for model, spec in specs.items()}
    sources = [at.Source(specs[model], modules[model], outputs[model][1]) for model in cfg.sources]
    curves, timing = at.run(experiment, sources, targets, design, cfg.targets, padding, device)
    tables = at.explain_tables(curves, cfg.bootstrap, seed)

    for name, table in tables.items():
        write_csv_atomic(OUT / f"{name}.csv", table)
    for name, table in at.plot_tables(tables["curves"]).items():
        write_csv_atomic(OUT / "plots" / f"{name}.csv", table)
    metrics = at.metrics_document(tables, float(experiment.face_region.mean()),
                                  {"fractions": sorted(cfg.fractions), "fill": cfg.fill,
                                   "face_region": config.face_region, "left_out": experiment.left_out})
    write_json_atomic(METRICS, metrics)
    seconds = round(time.perf_counter() - started, 1)
    write_json_atomic(OUT / "timing.json", {"maps_s": {k: round(v, 2) for k, v in timing.maps.items()},
                                            "curves_s": {k: round(v, 2) for k, v in timing.curves.items()},
                                            "seconds": seconds, "device": device.type})
    for model, entry in metrics["models"].items():
        log.info("explain %s: deletion winner %s, insertion winner %s; leam:overall ranks %s / %s of %d", model,
                 entry["deletion"]["winner"], entry["insertion"]["winner"], entry["deletion"]["leam_rank"],
                 entry["insertion"]["leam_rank"], entry["deletion"]["methods"])
    log.info("explain: %d photos, %d sources, %.0f s", metrics["n_images"], len(sources), seconds)


def build_parser() -> argparse.ArgumentParser:
    return stage_parser("explain", __doc__)


if __name__ == "__main__":
    raise SystemExit(run_stage("explain", main, build_parser()))
