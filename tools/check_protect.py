"""Re-embed every saved protected photo and compare with the cosines the protect stage reported.

The protect stage scores the 8-bit photos it writes to ``data/protect/images/<condition>/`` (lossless PNG);
this reads them back from disk, embeds them with each network of ``data/protect/results.csv`` (and of
``leave_one_out.csv``: the rotation's photos, each scored on the network it left out) (through the
network's warp of the photo's aligned landmarks, as every stage does), computes the cosine to the photo's
reference (``photos.csv``: the clean reference photos' embeddings in ``data/embeddings``) and prints the
largest difference per network. Exit status 1 when any difference exceeds ``--tolerance``.

Usage:  python -m tools.check_protect [--root .] [--tolerance 1e-4]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from leam.config import load_config
from leam.embedding import frames_to_tensor, reference_embeddings
from leam.io import example_name, load_npy, read_aligned, read_csv_checked
from leam.models.registry import get_spec, register_zoo
from leam.occlusion import Target

log = logging.getLogger("leam.check_protect")


def largest_differences(root: Path) -> dict[str, float]:
    """{network: max |re-embedded cosine - reported cosine|} over every saved photo of every condition."""
    config = load_config(root / "params.yaml")
    register_zoo(config.model_zoo)
    index, frames, landmarks = read_aligned(root / "data/aligned")
    row_of = dict(zip(index.image_id, index.row))
    photos = read_csv_checked(root / "data/protect/photos.csv", ("image_id", "reference_image_ids"), stage="protect")
    results = read_csv_checked(root / "data/protect/results.csv", ("condition", "image_id", "network", "cosine"),
                               stage="protect")
    rotated = root / "data/protect/leave_one_out.csv"   # protect.leave_one_out: images/<condition>-without-<model>/
    if rotated.is_file():
        results = pd.concat([results, read_csv_checked(rotated, ("condition", "image_id", "network", "cosine"),
                                                       stage="protect")], ignore_index=True)
    rows = np.array([row_of[i] for i in photos.image_id])
    references = [[row_of[r] for r in str(ids).split(";")] for ids in photos.reference_image_ids]
    out = {}
    for network, part in results.groupby("network", sort=False):
        spec = get_spec(network)
        target = Target.from_spec(spec, spec.load(root / "data/models"), landmarks[rows], frames.shape[1],
                                  config.align.padding)
        unit = F.normalize(torch.as_tensor(np.asarray(load_npy(root / f"data/embeddings/{network}.npy"),
                                                      dtype=np.float32)), dim=1)
        reference = reference_embeddings(unit, references)
        worst = 0.0
        for condition, scored in part.groupby("condition", sort=False):
            frames = np.stack([cv2.cvtColor(cv2.imread(str(root / "data/protect/images" / condition / example_name(i))),
                                            cv2.COLOR_BGR2RGB) for i in photos.image_id])
            embedded = target.embed(frames_to_tensor(frames), np.arange(len(frames)))
            cosine = F.cosine_similarity(embedded, reference, dim=1).numpy()
            reported = scored.set_index("image_id").loc[photos.image_id, "cosine"].to_numpy()
            worst = max(worst, float(np.abs(cosine - reported).max()))
        out[network] = worst
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root holding data/ and params.yaml")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed cosine difference")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    differences = largest_differences(args.root)
    for network, worst in differences.items():
        log.info("%-16s max |cosine(re-embedded PNG) - reported| = %.2e", network, worst)
    return 1 if any(v > args.tolerance for v in differences.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
