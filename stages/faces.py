"""faces stage: put the face subset into data/faces (images, index.csv, discards.csv, summary.json).

Sources (params.yaml, data.source):
  sample     the committed manifest (data.manifest, default manifests/sample.csv): 854 photos of 45 public
             figures with their sha256 and public raw.githubusercontent.com URLs (manifests/SOURCES.md).
             With a mirror - data.mirror, else the environment variable LEAM_FACES_MIRROR - every file is
             copied from <mirror>/<file>; without one it is downloaded (data.download_workers threads,
             data.retries retries with exponential backoff, data.timeout_s seconds of silence per read,
             data.deadline_s seconds per file in all).
  imdb_face  the official IMDb-Face CSV (data.imdb_csv, path or URL): images are downloaded and cropped
             around the annotated face box (data.crop_margin of the box added on each side); gender from
             data.labels_csv (identity,gender) or unknown.
  folder     <data.folder_root>/<identity>/*.jpg|jpeg|png, genders from an optional
             <data.folder_root>/labels.csv (identity,gender). Everything else under the root is a discard:
             unsupported_type (another file type), nested_folder, no_identity_folder (a file directly under
             the root), unreadable_folder, duplicate_id (a.jpg and a.png of one identity); hidden entries are
             not inputs.
A labels file that gives one identity two genders is an error naming both lines.

Identities with fewer than data.min_images_per_identity photos (any source) are discards, reason
too_few_images (no reference photo for LEAM, no same-identity pair). Caps: data.max_identities and
data.max_images_per_identity (0 = all) pick a seeded subset (top-level seed): identities in a seeded shuffle
of their sorted names, images in a per-identity seeded shuffle; a larger cap only adds images. What the caps
leave out is counted in summary.json (not_selected), so inputs = images + discarded + not_selected.

Every file is verified (sha256 where known) and written atomically; files already present with the right
hash are kept. Downloads (and IMDb-Face crops, keyed by URL, box and crop margin) are kept in a cache outside
the outputs, .cache/downloads (--download-cache), since `dvc repro` deletes data/faces/images before this
stage runs: a rerun after an interrupted or failed run downloads only what is missing. A missing file, dead
link (404, redirect loop, empty body, a page instead of an image), a body cut short, a host too slow for
data.deadline_s, a checksum mismatch or an undecodable image is not an error: it is logged and counted in
data/faces/discards.csv (image_id, path, reason) and summary.json.

Example:
  LEAM_FACES_MIRROR=/work/shared/faces python -m stages.faces
"""

from __future__ import annotations

import argparse
import logging
import sys

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.data import collect_faces, write_outputs

log = logging.getLogger("leam.faces")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    # collect_faces takes the params mapping; the validated dump carries every key (schema defaults filled in)
    result = collect_faces(config.model_dump(), out_dir=args.out, progress=not args.no_progress,
                           cache_dir=args.download_cache)
    write_outputs(result, args.out)
    summary = result.summary
    log.info("faces (%s): %d images of %d identities (%s), %d discarded%s; %d downloaded, %d reused (in place or "
             "cached), %d stale files removed -> %s",
             summary["source"], summary["images"], summary["identities"],
             ", ".join(f"{k} {v}" for k, v in summary["images_by_gender"].items() if v),
             summary["discarded"], f" {summary['discarded_by_reason']}" if summary["discarded"] else "",
             result.downloaded, result.reused, result.pruned, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("faces", __doc__)
    parser.add_argument("--out", default="data/faces", help="output folder (default: data/faces)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--download-cache", default=".cache/downloads",
                        help="download cache, outside the stage outputs (default: .cache/downloads)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("faces", main, build_parser()))
