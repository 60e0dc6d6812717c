"""Stage `protect`: LEAM-guided privacy protection, and measurements that answer the paper's three open questions.

Reads   data/aligned/{frames.npy, landmarks.npy, index.csv}, data/leam/<source>/{maps.npy, layers.json, meta.csv},
        data/embeddings/<model>.npy and data/models_eval/pairs.csv (each network's clean gallery and its
        threshold at protect.far), the weights in data/models/; with face_region=parsing data/parsing/labels.npy.
Writes  data/protect/images/<condition>/<image>.png  every protected photo, lossless 8-bit (re-embed them anywhere)
        data/protect/photos.csv         the protected photos: image_id, identity, gender, reference_image_ids (';'-joined)
        data/protect/conditions.csv     one row per condition: fill, location, budget, epsilon, questions
        data/protect/results.csv        one row per (condition, photo, network): cosines, verified, identified
        data/protect/visibility.csv     PSNR, SSIM, changed pixels, L-infinity per (condition, photo)
        data/protect/summary.csv        mean + 95% CI per (condition, network or pooled role, measure)
        data/protect/leave_one_out.csv  protect.leave_one_out: the own-map headline protection optimised on every
                                        model but one (images/<condition>-without-<model>/), scored on that one
        data/protect/leave_one_out_summary.csv  its mean + 95% CI per left-out network and pooled (left_out)
        data/protect/tests.csv          paired Wilcoxon: the photo's own LEAM map vs every other where/what/person condition
        data/protect/plots/{budget,epsilon}.csv  verification success against budget / epsilon (dvc plots)
        data/protect/examples/*.png     clean | mask | protected | amplified perturbation
        data/protect/timing.json        seconds of the fills, the PGD and the scoring
        metrics/protect.json            scope, thresholds, the clean baseline and each question's conditions

Questions (leam.protect): (1) where: the own LEAM map vs random face pixels, a random disc and the top-k
clean-gradient pixels anywhere, at one pixel budget; (2) what: black, noise, blur vs the optimised
perturbation in the same mask; (3) one map per person (mean of the person's other photos' maps) vs the
photo's own. PGD lowers the mean cosine to the LEAM reference over protect.sources through each network's
own warp; protect.held_out networks are only scored. protect.leave_one_out rotates the ensemble: each model
is once the network the optimiser never saw (the headline own-map protection only).
Params: seed, models, model_zoo, face_region, align.padding, leam.reference, protect.*.
Cost: about (conditions x photos) x steps forward+backward passes of every source; the default scope (12
photos, 10 steps, dlib_resnet + mobileface) takes about 2 min on 2 CPU cores; protect.max_identities: 0
and protect.max_images_per_identity: 0 protect every photo (a GPU run).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from leam import protect as pr
from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.device import resolve_device
from leam.examples import write_examples
from leam.io import (
    example_name,
    load_npy,
    read_aligned,
    read_csv_checked,
    read_face_labels,
    read_leam_outputs,
    write_csv_atomic,
    write_json_atomic,
    write_png_atomic,
)
from leam.models.registry import get_spec, register_zoo
from leam.occlusion import Target

log = logging.getLogger("leam.protect")

ALIGNED, LEAM, PARSING, WEIGHTS = Path("data/aligned"), Path("data/leam"), Path("data/parsing"), Path("data/models")
EMBEDDINGS, PAIRS = Path("data/embeddings"), Path("data/models_eval/pairs.csv")
OUT, METRICS = Path("data/protect"), Path("metrics/protect.json")


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    config = load_config(args.params)  # the whole file is validated before any work (held_out vs sources included)
    register_zoo(config.model_zoo)
    cfg, seed, padding = config.protect, config.seed, config.align.padding
    design = pr.Design(tuple(cfg.maps), cfg.budget, tuple(cfg.budgets), cfg.epsilon, tuple(cfg.epsilons),
                       tuple(cfg.fills), tuple(cfg.random), cfg.sparse, cfg.person, cfg.steps)
    conditions = design.conditions()
    sources, held_out = pr.networks(cfg.sources, cfg.held_out, config.models)
    own = next(c for c, q in conditions.items() if "what" in q and c.fill == "optimised")  # own map, headline
    device = resolve_device(cfg.device, "protect.device")

    index, frames, landmarks = read_aligned(ALIGNED)
    labels = read_face_labels(PARSING, ALIGNED, index.image_id) if config.face_region == "parsing" else None
    plan = pr.plan(index, frames, landmarks, {s: read_leam_outputs(LEAM, s) for s in sources}, cfg.maps,
                   cfg.max_identities, cfg.max_images_per_identity, seed, config.leam.reference, config.face_region,
                   labels, cfg.person)
    networks = [*sources, *held_out]
    pairs = read_csv_checked(PAIRS, ("same", *(f"cosine_{m}" for m in networks)), stage="models")
    different = pairs[~pairs.same.astype(bool)]
    galleries = {m: pr.Gallery.from_embeddings(m, load_npy(EMBEDDINGS / f"{m}.npy", stage="models"), index.identity,
                                               pr.far_threshold(different[f"cosine_{m}"].to_numpy(), cfg.far))
                 for m in networks}
    specs = {m: get_spec(m) for m in networks}
    targets = {m: Target.from_spec(specs[m], specs[m].load(WEIGHTS).to(device), plan.landmarks, plan.frames.shape[1],
                                   padding) for m in networks}
    protected = pr.protect_photos(plan, list(conditions), design, [targets[s] for s in sources], galleries, seed,
                                  cfg.batch_size, device)
    scoring = time.perf_counter()
    roles = [(targets[m], galleries[m], "sources" if m in sources else "held_out") for m in networks]
    results = pr.score_photos(plan, protected, roles, cfg.batch_size, device)
    scoring = time.perf_counter() - scoring
    rotation = None
    if cfg.leave_one_out:
        outputs = {m: read_leam_outputs(LEAM, m) for m in networks}
        rotation = pr.leave_one_out(
            lambda others: pr.plan(index, frames, landmarks, {s: outputs[s] for s in others}, cfg.maps[:1],
                                   cfg.max_identities, cfg.max_images_per_identity, seed, config.leam.reference,
                                   config.face_region, labels, person=False),
            plan.photos, own, design, targets, galleries, seed, cfg.batch_size, device)
    long = pr.long_results(results)
    summary = pr.summary_table(long, cfg.bootstrap, seed)

    for c, condition in enumerate(protected.conditions):
        for image_id, frame in zip(plan.photos.image_id, protected.frames[c]):
            write_png_atomic(OUT / "images" / condition.name / example_name(image_id), frame)
    ids = index.image_id.to_numpy()
    write_csv_atomic(OUT / "photos.csv", plan.photos[["image_id", "identity", "gender"]].assign(
        reference_image_ids=[";".join(ids[r] for r in rows) for rows in plan.photos.reference_rows]))
    write_csv_atomic(OUT / "conditions.csv", pd.DataFrame(
        [{"condition": c.name, "fill": c.fill, "location": c.location, "budget": c.budget, "epsilon": c.epsilon,
          "questions": " ".join(q)} for c, q in conditions.items()]))
    for name, table in {"results": results, "visibility": protected.visibility, "summary": summary,
                        "tests": pr.comparisons(long, conditions, own)}.items():
        write_csv_atomic(OUT / f"{name}.csv", table)
    for name, table in pr.plot_tables(summary, conditions).items():
        write_csv_atomic(OUT / "plots" / f"{name}.csv", table)
    c_own = protected.conditions.index(own)
    write_examples(OUT / "examples", ((plan.photos.image_id[i], pr.example_strip(plan.frames[i], protected.frames[c_own, i],
                                                                                  cfg.epsilon))
                                      for i in range(min(cfg.examples, len(plan.frames)))))
    scope = {"n_photos": len(plan.photos), "sources": sources, "held_out": held_out,
             "budget": cfg.budget, "epsilon": cfg.epsilon, "steps": cfg.steps, "far": cfg.far,
             "thresholds": {m: g.threshold for m, g in galleries.items()}, "face_region": config.face_region,
             "person_photos_mean": float(plan.person_photos.mean()), "left_out": plan.left_out, "device": device.type}
    metrics = pr.metrics_document(summary, protected.visibility, conditions, scope)
    if rotation is not None:
        rotated, rotated_frames, rotated_seen, rotated_seconds = rotation
        for left, frames_left in rotated_frames.items():
            for image_id, frame in zip(plan.photos.image_id, frames_left):
                write_png_atomic(OUT / "images" / pr.without_name(own, left) / example_name(image_id), frame)
        rotated_summary = pr.leave_one_out_summary(rotated, own, cfg.bootstrap, seed)
        write_csv_atomic(OUT / "leave_one_out.csv", rotated)
        write_csv_atomic(OUT / "leave_one_out_summary.csv", rotated_summary)
        metrics["leave_one_out"] = {**pr.leave_one_out_document(rotated_summary, own),
                                    "visibility": {k: float(v) for k, v in pr.visibility_summary(rotated_seen.assign(condition=own.name))
                                                   .drop(columns="condition").iloc[0].items()}}
        protected.seconds["leave_one_out"] = sum(rotated_seconds.values())
    write_json_atomic(METRICS, metrics)
    seconds = {**{k: round(v, 2) for k, v in protected.seconds.items()},
               "scoring": round(scoring, 2), "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(OUT / "timing.json", seconds)
    entry = metrics["where"][own.name]
    log.info("protect: %d photos x %d conditions, %.0f s; own map at %g of the face, eps %g: verification success "
             "%.2f on sources, %.2f held out", len(plan.photos), len(conditions), seconds["seconds"], cfg.budget,
             cfg.epsilon, entry["sources"]["verification_success"]["mean"],
             entry["held_out"]["verification_success"]["mean"])


def build_parser() -> argparse.ArgumentParser:
    return stage_parser("protect", __doc__)


if __name__ == "__main__":
    raise SystemExit(run_stage("protect", main, build_parser()))
