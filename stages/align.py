"""Stage `align`: one canonical analysis frame per face photo.

Reads data/faces/index.csv (image_id, identity, gender, path, sha256, source; paths relative to the
repository root or absolute), detects the face with dlib (HOG or CNN), finds its 68 landmarks and
warps the photo into dlib's face chip of align.frame_size pixels with align.padding: eyes level,
face vertically symmetric and centred.

Writes (see docs/ARCHITECTURE.md):
  data/aligned/frames.npy       uint8 (N, S, S, 3) RGB
  data/aligned/landmarks.npy    float32 (N, 68, 2) x, y in frame pixels
  data/aligned/transforms.npy   float64 (N, 2, 3) original pixels -> frame pixels
  data/aligned/index.csv        kept rows of the faces index + `row`
  data/aligned/discards.csv     image_id, path, reason (this stage's and the faces stage's discards)
  data/aligned/examples/*.png   first aligned image of the first few identities
  metrics/data.json             identities, images, kept, discarded (by reason, by gender)

Every input image is either kept or listed in discards.csv with a reason: missing, not_an_image,
too_large, unreadable, no_face, multiple_faces, too_few_images (the other images of an identity left with
fewer than data.min_images_per_identity aligned photos: no reference photo for LEAM, no same-identity
pair), and the faces stage's own reasons. metrics/data.json counts every step: faces inputs = kept +
discarded + not_selected (caps), align inputs (= faces kept) = kept + discarded.

Params: align.frame_size, align.padding, align.detector (hog|cnn), align.upsample, align.max_side,
align.max_pixels, align.multiple_faces (discard|largest|largest_if_dominant), align.dominance_ratio,
align.workers; data.min_images_per_identity.

Example: python -m stages.align --examples 6
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from leam import io
from leam.align import align_images
from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.data import accounting
from leam.examples import first_per_identity, write_examples

log = logging.getLogger("leam.align")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    align_params = config.align.model_dump()  # frame_size, padding, detector, ..., workers: align_images' keywords
    index = accounting.read_faces_index(args.index)
    paths = [str(Path.cwd() / path) for path in index.path]  # relative to the repository root; absolute ones stay
    started = time.perf_counter()
    result = align_images(paths, progress=sys.stderr.isatty(), **align_params)
    seconds = time.perf_counter() - started
    upstream = accounting.read_faces_discards(args.faces_dir)
    kept, keep, discards = accounting.account_alignment(index, result.kept, result.discards, upstream,
                                                        config.data.min_images_per_identity)

    out = Path(args.out)
    frames = result.frames[keep]
    io.save_npy_atomic(out / "frames.npy", frames)
    io.save_npy_atomic(out / "landmarks.npy", result.landmarks[keep])
    io.save_npy_atomic(out / "transforms.npy", result.transforms[keep])
    io.write_csv_atomic(out / "index.csv", kept)
    io.write_csv_atomic(out / "discards.csv", discards)
    write_examples(out / "examples", ((row.image_id, frames[row.row])
                                      for row in first_per_identity(kept, args.examples).itertuples()))
    metrics = accounting.data_metrics(index, kept, discards, accounting.read_faces_summary(args.faces_dir))
    io.write_json_atomic(args.metrics, metrics)
    log.info("aligned %d of %d images of %d identities in %.1f s; discarded %s", len(kept), len(index),
             index.identity.nunique(), seconds, metrics["discarded_by_reason"] or "none")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("align", __doc__)
    parser.add_argument("--index", default="data/faces/index.csv", help="faces index (default: %(default)s)")
    parser.add_argument("--faces-dir", default="data/faces",
                        help="faces stage folder with optional discards.csv, summary.json (default: %(default)s)")
    parser.add_argument("--out", default="data/aligned", help="output folder (default: %(default)s)")
    parser.add_argument("--metrics", default="metrics/data.json", help="metrics file (default: %(default)s)")
    parser.add_argument("--examples", type=int, default=6, help="identities with an example PNG (default: 6)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("align", main, build_parser()))
