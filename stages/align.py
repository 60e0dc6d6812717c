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

import numpy as np
import pandas as pd

from leam import io
from leam.align import align_images
from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.errors import LeamError

log = logging.getLogger("leam.align")

INDEX_COLUMNS = ("image_id", "identity", "gender", "path", "sha256", "source")
DISCARD_COLUMNS = ["image_id", "path", "reason"]
TOO_FEW_IMAGES = "too_few_images"  # the faces stage gives the same reason for the same rule


def read_faces_index(path: Path) -> pd.DataFrame:
    """The faces stage's index; a missing file or missing columns is a one-line error."""
    if not path.is_file():
        raise LeamError(f"faces index not found: {path} (run `dvc repro faces` first)")
    index = io.read_csv_checked(path, INDEX_COLUMNS, stage="faces", dtype=str, keep_default_na=False)
    if index.image_id.duplicated().any():
        raise LeamError(f"{path} has duplicate image_id {index.image_id[index.image_id.duplicated()].iloc[0]!r}")
    return index.reset_index(drop=True)


def resolve(path: str, root: Path) -> str:
    """Absolute paths stay; relative ones are taken from the repository root."""
    candidate = Path(path)
    return str(candidate if candidate.is_absolute() else root / candidate)


def read_upstream_discards(faces_dir: Path) -> pd.DataFrame:
    """Download/checksum discards recorded by the faces stage (empty when it recorded none)."""
    path = faces_dir / "discards.csv"
    if not path.is_file():
        return pd.DataFrame(columns=DISCARD_COLUMNS)
    upstream = io.read_csv_checked(path, DISCARD_COLUMNS, allow_empty=True, stage="faces", dtype=str,
                                   keep_default_na=False)
    return upstream[DISCARD_COLUMNS]


def data_metrics(index: pd.DataFrame, kept: pd.DataFrame, discards: pd.DataFrame,
                 faces_summary: dict | None) -> dict:
    """Counts for metrics/data.json: totals, discards by reason, and per gender."""
    identity_gender = dict(zip(index.identity, index.gender))
    # <identity>/<stem>; ids without a slash (an IMDb-Face row without a usable name, a file outside any
    # identity folder) belong to no known identity
    discard_identity = discards.image_id.where(discards.image_id.str.contains("/"), "").str.split("/").str[0]
    discard_gender = discard_identity.map(identity_gender).fillna("unknown")
    identities = pd.concat([index.identity, discard_identity[discard_identity != ""]])
    metrics = {
        "identities": int(identities.nunique()),
        "images": int(len(kept) + len(discards)),
        "kept": int(len(kept)),
        "kept_identities": int(kept.identity.nunique()),
        "discarded": int(len(discards)),
        "discarded_by_reason": {k: int(v) for k, v in discards.reason.value_counts().sort_index().items()},
        "by_gender": {},
    }
    for gender in sorted(set(index.gender) | set(discard_gender)):
        kept_g = kept[kept.gender == gender]
        discarded_g = int((discard_gender == gender).sum())
        metrics["by_gender"][gender] = {
            "identities": int(kept_g.identity.nunique()),
            "images": int(len(kept_g) + discarded_g),
            "kept": int(len(kept_g)),
            "discarded": discarded_g,
        }
    if faces_summary:
        metrics["faces"] = {k: v for k, v in faces_summary.items() if isinstance(v, (int, float, str, bool))}
    upstream = int(discards.stage.eq("faces").sum()) if "stage" in discards else 0
    not_selected = int((faces_summary or {}).get("not_selected", 0))
    metrics["not_selected"] = not_selected
    metrics["inputs"] = metrics["images"] + not_selected
    # every step: inputs = kept + discarded (+ not_selected for the faces stage's caps)
    metrics["steps"] = {
        "faces": {"inputs": int(len(index) + upstream + not_selected), "kept": int(len(index)), "discarded": upstream,
                  "not_selected": not_selected},
        "align": {"inputs": int(len(index)), "kept": int(len(kept)), "discarded": int(len(discards) - upstream)},
    }
    return metrics


def drop_small_identities(kept: pd.DataFrame, min_images: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows of identities left with fewer than ``min_images`` aligned photos: ``(keep mask, discards)``.

    Such an identity has no reference photo for LEAM and no same-identity pair for the similarity tests;
    it leaves here, with reason ``too_few_images``, rather than unnoticed in a later stage.
    """
    sizes = kept.groupby("identity")["image_id"].transform("size").to_numpy() if len(kept) else np.zeros(0, int)
    keep = sizes >= max(int(min_images), 1)
    dropped = kept[~keep]
    return keep, pd.DataFrame({"image_id": dropped.image_id, "path": dropped.path, "reason": TOO_FEW_IMAGES},
                              columns=DISCARD_COLUMNS)


def write_examples(folder: Path, kept: pd.DataFrame, frames, count: int) -> list[Path]:
    """First aligned image of the first ``count`` identities as PNG (for the report)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    written = []
    for _, row in kept.groupby("identity", sort=True).head(1).head(count).iterrows():
        written.append(io.write_png_atomic(folder / io.example_name(row.image_id), frames[int(row.row)]))
    return written


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    align_params = config.align.model_dump()  # frame_size, padding, detector, ..., workers: align_images' keywords
    index = read_faces_index(Path(args.index))
    root = Path.cwd()
    started = time.perf_counter()
    result = align_images([resolve(p_, root) for p_ in index.path], progress=sys.stderr.isatty(), **align_params)
    seconds = time.perf_counter() - started

    kept = index.iloc[result.kept].reset_index(drop=True)
    keep, too_few = drop_small_identities(kept, config.data.min_images_per_identity)
    frames, landmarks, transforms = result.frames[keep], result.landmarks[keep], result.transforms[keep]
    kept = kept[keep].reset_index(drop=True)
    kept.insert(0, "row", range(len(kept)))
    ours = pd.DataFrame([(index.image_id[i], index.path[i], reason) for i, reason in result.discards],
                        columns=DISCARD_COLUMNS)
    upstream = read_upstream_discards(Path(args.faces_dir)).assign(stage="faces")
    discards = pd.concat([upstream, ours.assign(stage="align"), too_few.assign(stage="align")], ignore_index=True)
    summary_path = Path(args.faces_dir) / "summary.json"
    faces_summary = io.read_json_checked(summary_path, stage="faces") if summary_path.is_file() else None

    out = Path(args.out)
    io.save_npy_atomic(out / "frames.npy", frames)
    io.save_npy_atomic(out / "landmarks.npy", landmarks)
    io.save_npy_atomic(out / "transforms.npy", transforms)
    io.write_csv_atomic(out / "index.csv", kept[["row", *INDEX_COLUMNS]])
    io.write_csv_atomic(out / "discards.csv", discards)
    write_examples(out / "examples", kept, frames, args.examples)
    metrics = data_metrics(index, kept, discards, faces_summary)
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
