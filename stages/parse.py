"""Stage `parse`: face-parsing labels for every aligned frame, in the canonical class table.

Backends (``parsing.backend``):
  landmarks  default, offline: polygons from the 68 dlib landmarks (brows, eyes, nose, lips, inner mouth,
             skin up to ``parsing.forehead_fraction`` of the face height above the brows, neck band of
             ``parsing.neck_fraction``). Hair, ears, hat, cloth, eyeglasses, jewellery and background are
             NOT available: such pixels are 255 (not labelled), never guessed.
  farl       facer's FaRL farl/celebm/448 network (optional: pip install -r requirements-farl.txt; weights
             from ``parsing.farl_model_path`` or ``parsing.farl_url`` + ``parsing.farl_sha256``).

Faces whose landmarks are unusable (NaN, far outside the frame, degenerate, mirrored) are counted
discards: their label rows stay all-255 and ``index.csv`` marks them ``parsed=False``.

Reads  data/aligned/{frames.npy,landmarks.npy,index.csv}
Writes data/parsing/labels.npy     uint8 (N, S, S) canonical ids, rows = data/aligned/index.csv rows
       data/parsing/classes.json   class table, regions, which classes this backend produces
       data/parsing/index.csv      row, image_id, identity, gender, parsed, labelled_fraction, per-region areas
       data/parsing/discards.csv   image_id, reason
       data/parsing/examples/*.png label overlays of a few faces (for the report)

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
import pandas as pd

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.errors import LeamError
from leam.io import example_name, read_aligned, save_npy_atomic, write_csv_atomic, write_json_atomic, write_png_atomic
from leam.parsing import class_table, label_overlay, parse_frames
from leam.parsing.classes import CLASS_ID, REGIONS

log = logging.getLogger("leam.parse")


def load_aligned(aligned_dir: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    index, frames, landmarks = read_aligned(aligned_dir)
    if "row" not in index:
        index["row"] = np.arange(len(index))
    return frames, landmarks, index


def region_areas(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Fraction of each frame in every region, (N,) per region, from one bincount per image."""
    counts = np.stack([np.bincount(row.reshape(-1), minlength=256) for row in labels]) / labels[0].size
    return {f"area_{region}": counts[:, [CLASS_ID[name] for name in members]].sum(1)
            for region, members in REGIONS.items()}


def write_examples(out: Path, frames: np.ndarray, labels: np.ndarray, index: pd.DataFrame, kept: np.ndarray,
                   count: int) -> int:
    """Overlay PNGs of the first kept image of the first ``count`` identities (deterministic)."""
    folder = out / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    chosen = index[kept].groupby("identity", sort=True).head(1).head(count)
    for _, row in chosen.iterrows():
        image = label_overlay(np.asarray(frames[row["row"]]), labels[row["row"]])
        write_png_atomic(folder / example_name(row["image_id"]),
                         np.concatenate([np.asarray(frames[row["row"]]), image], axis=1))
    return len(chosen)


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    settings = config.parsing.model_dump()  # every parsing.* key, schema defaults filled in
    backend = config.parsing.backend
    frames, landmarks, index = load_aligned(Path(args.aligned_dir))
    frame_size = config.align.frame_size
    if frames.shape[1:] != (frame_size, frame_size, 3):
        raise LeamError(f"frames have shape {frames.shape[1:]}, expected ({frame_size}, {frame_size}, 3) "
                        f"from align.frame_size")
    result = parse_frames(backend, np.asarray(frames), landmarks, settings, cache_dir=Path(args.cache_dir))

    out = Path(args.out)
    table = index[["row", "image_id", "identity", "gender"]].copy()
    table["parsed"] = result.kept
    table["labelled_fraction"] = (result.labels != 255).mean(axis=(1, 2)).round(6)
    for name, values in region_areas(result.labels).items():
        table[name] = values.round(6)
    discards = pd.DataFrame({"image_id": index["image_id"], "reason": result.reasons})
    discards = discards[discards.reason != ""]
    document = class_table(result.available, backend)
    document["discards"] = {str(k): int(v) for k, v in discards.reason.value_counts().items()}
    if backend == "landmarks":
        document["landmark_parser"] = {key: settings[key] for key in
                                       ("forehead_fraction", "neck_fraction", "brow_thickness", "nose_width")}

    save_npy_atomic(out / "labels.npy", result.labels)
    write_json_atomic(out / "classes.json", document)
    write_csv_atomic(out / "index.csv", table)
    write_csv_atomic(out / "discards.csv", discards)
    examples = write_examples(out, frames, result.labels, index, result.kept, config.parsing.examples)
    kept = table[table.parsed]
    log.info("parse (%s): %d/%d faces labelled, %d discarded, %d examples; labelled %.1f%% of the frame, "
             "skin %.1f%%, eyes %.2f%%, nose %.2f%%, mouth %.2f%%", backend, int(result.kept.sum()), len(table),
             len(discards), examples, 100 * kept.labelled_fraction.mean(), 100 * kept.area_skin.mean(),
             100 * kept.area_eyes.mean(), 100 * kept.area_nose.mean(), 100 * kept.area_mouth.mean())


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("parse", __doc__)
    parser.add_argument("--aligned-dir", default="data/aligned", help="aligned frames (default: data/aligned)")
    parser.add_argument("--out", default="data/parsing", help="output folder (default: data/parsing)")
    parser.add_argument("--cache-dir", default="data/models/farl",
                        help="where a downloaded FaRL model is kept (default: data/models/farl)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("parse", main, build_parser()))
