"""Stage `models`: embed every aligned frame with each model and measure face verification.

Reads data/aligned/{frames.npy, landmarks.npy, index.csv} and the converted weights in data/models/, and
writes, for every model in the top-level `models` list:
  data/embeddings/<model>.npy   float32 (N, embedding_dim), rows of data/aligned/index.csv
  metrics/models.json           per model: AUC (cosine, Euclidean), mean same/different cosine, accuracy at
                                the published Euclidean threshold (dlib: 0.6), the same per gender, and
                                `verifies` (AUC >= verification.min_auc; a warning names models below it)
  data/models_eval/pairs.csv    the evaluated pairs with each model's cosine and Euclidean distance

Pairs: every same-identity pair and all different-identity pairs, or a seeded sample of
`verification.max_different_pairs` of them (0 = all).

`engine: ray` embeds on Ray actors that each hold one network (leam.engine, `ray.*`); on the same device the
embeddings are the local engine's bit for bit, so switching reruns this stage and leaves what follows up to date.

Examples:
  python -m stages.models            # run the stage
  python -m stages.models --list     # registered models, input/embedding sizes and default LEAM layer shapes
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
import torch

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.device import forward_bytes, resolve_batch_size, resolve_device
from leam.embedding import embed_frames
from leam.io import read_aligned, save_npy_atomic, write_csv_atomic, write_json_atomic
from leam.models.registry import describe_models, get_spec, register_zoo
from leam.models.verification import evaluate, pair_scores, sample_pairs

log = logging.getLogger("leam.models")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    register_zoo(config.model_zoo)
    weights_dir = Path(args.weights)
    if args.list:
        print("\n".join(describe_models(weights_dir)))
        return
    names = config.models
    frame_size, padding = config.align.frame_size, config.align.padding
    batch_size = config.verification.batch_size
    max_different = config.verification.max_different_pairs
    seed = config.seed
    torch.manual_seed(seed)
    device = resolve_device(config.verification.device, "verification.device")

    index, frames, landmarks = read_aligned(Path(args.aligned), frame_size)
    pairs = sample_pairs(index.identity.to_numpy(), seed=seed, max_different=max_different)
    table = pd.DataFrame({"image_id_a": index.image_id.to_numpy()[pairs.a],
                          "image_id_b": index.image_id.to_numpy()[pairs.b], "same": pairs.same,
                          "gender_a": index.gender.to_numpy()[pairs.a], "gender_b": index.gender.to_numpy()[pairs.b]})
    metrics = {}
    for name in names:
        spec = get_spec(name)
        model = spec.load(weights_dir)  # embed_frames moves it to the device
        batch = resolve_batch_size(batch_size, device, lambda: forward_bytes(model, spec.input_size) + frames[0].size * 8,
                                   "verification.batch_size")  # layer outputs + the frame as float32 and warped
        embeddings = embed_frames(model, spec, frames, landmarks, padding, batch, device, progress=True,
                                  engine=config.engine, ray=config.ray).numpy()
        save_npy_atomic(Path(args.embeddings) / f"{name}.npy", embeddings)
        metrics[name] = {"images": len(index), **evaluate(embeddings, pairs, index.gender.to_numpy(),
                                                            spec.verification_threshold)}
        metrics[name]["min_auc"] = config.verification.min_auc
        metrics[name]["verifies"] = bool(metrics[name]["auc_cosine"] >= config.verification.min_auc)
        if not metrics[name]["verifies"]:
            log.warning("%s: AUC %.3f is below verification.min_auc=%.2f: it barely tells people apart on this data, "
                        "so its maps and occlusion drops say little (flagged in metrics/models.json)",
                        name, metrics[name]["auc_cosine"], config.verification.min_auc)
        table[f"cosine_{name}"], table[f"euclidean_{name}"] = pair_scores(embeddings, pairs.a.to_numpy(),
                                                                          pairs.b.to_numpy())
        log.info("%s: %d images, AUC cosine %.4f, %s", name, len(index), metrics[name]["auc_cosine"],
                 f"accuracy@{spec.verification_threshold} {metrics[name]['accuracy']:.4f}"
                 if spec.verification_threshold is not None else "no published threshold")
    write_csv_atomic(Path(args.pairs), table)
    write_json_atomic(Path(args.metrics), metrics)
    log.info("wrote embeddings of %d model(s), %d pairs (%d same) to %s", len(names), len(pairs),
             int(pairs.same.sum()), args.metrics)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("models", __doc__)
    parser.add_argument("--list", action="store_true", help="list registered models and their LEAM layers, then exit")
    parser.add_argument("--weights", default="data/models", help="converted weights folder (default: data/models)")
    parser.add_argument("--aligned", default="data/aligned", help="aligned data folder (default: data/aligned)")
    parser.add_argument("--embeddings", default="data/embeddings", help="output folder of <model>.npy")
    parser.add_argument("--metrics", default="metrics/models.json", help="metrics output")
    parser.add_argument("--pairs", default="data/models_eval/pairs.csv", help="pairs table output")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_stage("models", main, build_parser()))
