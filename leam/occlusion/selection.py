"""Which images an occlusion experiment uses, and the frames whose clean embeddings form each reference.

The occluded images are those every source model has a LEAM map for (so LEAM and random drops pair on
the same images for every source and target), with a reference in the analysis frame, optionally
subsampled per identity (seeded). References are those of the leam stages (``leam.reference``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leam.errors import LeamError

__all__ = ["select_images"]


def select_images(aligned_index: pd.DataFrame, metas: dict[str, pd.DataFrame], max_per_identity: int = 0,
                  seed: int = 0, reference_policy: str = "baseline") -> tuple[pd.DataFrame, dict[str, int]]:
    """Images to occlude: those every source model has a LEAM map for, optionally subsampled per identity.

    aligned_index: ``data/aligned/index.csv`` (``row, image_id, identity, gender``); metas: per source model
    its ``meta.csv`` (``row, image_id, identity, gender, reference_image_id, cosine``).
    Returns (selection, counts). ``selection`` has ``image_id, identity, gender, frame_row,
    reference_rows`` (list of frame rows whose clean embeddings form the reference: one for
    baseline/pairs, the identity's other images for ``mean_others``) and ``map_row_<source>`` per source.
    ``counts`` names the images left out and why (``no_map_for_all_sources``, ``no_reference``, ``subsampled``).
    """
    if not metas:
        raise LeamError("no source model: the top-level `models` list is empty")
    frame_row = dict(zip(aligned_index.image_id, aligned_index.row))
    common = None
    for meta in metas.values():
        ids = set(meta.image_id)
        common = ids if common is None else common & ids
    first_source, first = next(iter(metas.items()))
    selection = first[first.image_id.isin(common)][["image_id", "identity", "gender", "reference_image_id"]].copy()
    counts = {"no_map_for_all_sources": int(len(set().union(*[set(m.image_id) for m in metas.values()])) - len(common))}
    for source, meta in metas.items():
        refs = dict(zip(meta.image_id, meta.reference_image_id.astype(str)))
        if source != first_source and any(refs[i] != str(r) for i, r in zip(selection.image_id, selection.reference_image_id)):
            raise LeamError(f"LEAM references of {source!r} differ from those of {first_source!r}; rerun the leam stages "
                            "with the same leam.reference")
        selection[f"map_row_{source}"] = selection.image_id.map(dict(zip(meta.image_id, meta.row))).astype(int)
    missing = ~selection.image_id.isin(frame_row)
    if missing.any():
        raise LeamError(f"{int(missing.sum())} LEAM images are not in data/aligned/index.csv (e.g. "
                        f"{selection.image_id[missing].iloc[0]!r}); rerun the leam stages after align")
    selection["frame_row"] = selection.image_id.map(frame_row).astype(int)
    by_identity = aligned_index.groupby("identity").row.apply(list).to_dict()
    reference_rows = []
    for image_id, identity, ref in zip(selection.image_id, selection.identity, selection.reference_image_id.astype(str)):
        if ref in frame_row and ref != image_id:
            reference_rows.append([int(frame_row[ref])])
        elif reference_policy == "mean_others":
            others = [int(r) for r in by_identity.get(identity, []) if r != frame_row[image_id]]
            reference_rows.append(others)
        else:
            reference_rows.append([])
    selection["reference_rows"] = reference_rows
    has_ref = selection.reference_rows.map(len) > 0
    counts["no_reference"] = int((~has_ref).sum())
    selection = selection[has_ref]
    if max_per_identity and max_per_identity > 0:
        rng = np.random.default_rng(seed)
        keep = []
        for _, group in selection.groupby("identity", sort=True):
            idx = group.index.to_numpy()
            if len(idx) > max_per_identity:
                idx = np.sort(rng.choice(idx, size=max_per_identity, replace=False))
            keep.extend(idx.tolist())
        counts["subsampled"] = int(len(selection) - len(keep))
        selection = selection.loc[sorted(keep)]
    else:
        counts["subsampled"] = 0
    selection = selection.drop(columns="reference_image_id").reset_index(drop=True)
    return selection, counts
