"""Occlusion validation of LEAM maps: hide the most relevant pixels and measure the similarity drop.

The test behind the paper's claim "the map shows what the network uses": for an image and its LEAM
reference, occlude the top-t fraction of the analysis frame ranked by a LEAM map, embed the occluded
image with a *target* model and compare its cosine similarity to the reference with the clean one.
``drop = clean - occluded``. A map that points at what matters gives a larger drop than random masks
with the same pixel count, drawn uniformly over the frame or uniformly over the face region. Using a
map of one model to occlude the input of another (source != target) measures how well relevance
transfers between networks.

Everything spatial is in the analysis frame (S x S pixels, ``leam.frame``). Masks are boolean
(N, S, S); a model sees an occluded frame through its own ``frame -> input`` warp only at embedding
time, so one mask serves every target model.

Conventions
-----------
- Ranking: the stored maps live on a G x G grid over the frame (``leam.store_size``). They are
  upsampled to S x S with bilinear interpolation (``align_corners=False``: grid cell i covers frame
  pixels [i*S/G, (i+1)*S/G), the same pixel-area convention as the warps) *before* ranking, so the
  mask has pixel resolution and exactly ``top_count(t, S * S)`` pixels (``leam.topt``: round half up of
  t * S * S, at least 1; 502 pixels at t = 0.01 and S = 224). Higher map value = more relevant (for
  ``leam.sign = supports_match`` occluding them should lower similarity). NaN ranks last.
- Ties are broken deterministically as in ``leam.topt``: among equal values the lower flat pixel index
  (row-major) wins, so a constant map occludes the first rows of the frame.
- Random masks rank i.i.d. uniform scores drawn from a generator seeded by (seed, image id, kind,
  repeat), so an image gets the same random mask whatever batch or subset it is in; thresholds of one
  draw are nested, like the LEAM masks.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from leam.errors import LeamError, check_choice
from leam.frame import frame_to_input
from leam.metrics.stats import paired_test, summarize
from leam.topt import check_fraction, pixel_ranks, top_count

log = logging.getLogger(__name__)

FILLS = ("black", "mean", "blur")
RANDOM_KINDS = ("uniform", "face", "blob")
"""Random baselines: ``uniform`` i.i.d. pixels over the frame, ``face`` i.i.d. pixels inside the face region,
``blob`` a disc of the same pixel count centred on a random face pixel. LEAM masks are compact blobs, and
scattered pixels disturb a CNN far more per pixel than one blob (measured on dlib: at 1%, scattered face
pixels drop the similarity ~5x more than a disc), so ``blob`` is the shape-matched control."""
BLUR_SIGMA_FRACTION = 1.0 / 28.0
"""Gaussian sigma of the ``blur`` fill as a fraction of the frame side (8 px at S = 224): strong enough
to remove identity detail of eyes and mouth, weak enough to keep the local colour."""
_KIND_CODE = {"uniform": 1, "face": 2, "blob": 3}


# --------------------------------------------------------------------------------------------- masks

def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Raw maps (N, G, G) on the stored grid -> (N, S, S) float32 in frame pixels (bilinear, area convention)."""
    maps = maps.to(torch.float32)
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    return F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def random_scores(image_ids: Sequence[str], size: int, seed: int, kind: str, repeat: int) -> torch.Tensor:
    """I.i.d. uniform scores (N, S, S) float32, one generator per (seed, image id, kind, repeat).

    Seeding per image keeps an image's random mask independent of batching and of which images are kept.
    """
    check_choice("occlusion.random", kind, RANDOM_KINDS)
    rows = []
    for image_id in image_ids:
        rng = np.random.default_rng([int(seed), zlib.crc32(str(image_id).encode("utf-8")), _KIND_CODE[kind], int(repeat)])
        rows.append(rng.random((size, size), dtype=np.float32))
    return torch.from_numpy(np.stack(rows)) if rows else torch.empty((0, size, size))


def random_blob_scores(image_ids: Sequence[str], region: torch.Tensor, seed: int, repeat: int) -> torch.Tensor:
    """Scores (N, S, S) = minus the squared distance to one random pixel of each image's ``region`` (N, S, S).

    Their top-k pixels form a disc of exactly k pixels (ties by pixel index) centred inside the face; the
    centre comes from a generator seeded by (seed, image id, ``blob``, repeat). An empty region centres
    the disc at the frame centre.
    """
    size = region.shape[-1]
    centres = []
    for image_id, mask in zip(image_ids, region.cpu().numpy()):
        rng = np.random.default_rng([int(seed), zlib.crc32(str(image_id).encode("utf-8")), _KIND_CODE["blob"], int(repeat)])
        candidates = np.flatnonzero(mask)
        flat = int(candidates[rng.integers(len(candidates))]) if len(candidates) else (size // 2) * size + size // 2
        centres.append(divmod(flat, size))
    centre = torch.tensor(centres, dtype=torch.float32, device=region.device)  # (N, 2) as (y, x)
    coords = torch.arange(size, dtype=torch.float32, device=region.device)
    dy = (coords[None, :] - centre[:, :1]) ** 2  # (N, S)
    dx = (coords[None, :] - centre[:, 1:]) ** 2
    return -(dy[:, :, None] + dx[:, None, :])


def face_region_from_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Face region (N, S, S) bool: the filled convex hull of the 68 frame landmarks (N, 68, 2), in pixels."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    regions = np.zeros((landmarks.shape[0], size, size), dtype=np.uint8)
    for index, points in enumerate(landmarks):  # one polygon fill per image, not per pixel
        hull = cv2.convexHull(np.round(points).astype(np.int32))
        cv2.fillConvexPoly(regions[index], hull, 1)
    return regions.astype(bool)


def face_region_from_labels(labels: np.ndarray, background_ids: Iterable[int]) -> np.ndarray:
    """Face region (N, S, S) bool from parser labels: labelled (not 255) and not a background class."""
    labels = np.asarray(labels)
    return (labels != 255) & ~np.isin(labels, list(background_ids))


# ---------------------------------------------------------------------------------------------- fill

def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, S, S) with reflect padding; sigma in pixels."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=frames.dtype, device=frames.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = frames.shape[1]
    padded = F.pad(frames, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def fill_values(frames: torch.Tensor, fill: str) -> torch.Tensor:
    """What occluded pixels become, (N, 3, S, S) in 0..255: black, the image's mean colour, or a blur."""
    check_choice("occlusion.fill", fill, FILLS)
    if fill == "black":
        return torch.zeros_like(frames)
    if fill == "mean":
        return frames.mean(dim=(2, 3), keepdim=True).expand_as(frames)
    return gaussian_blur(frames, sigma=BLUR_SIGMA_FRACTION * frames.shape[-1])


def occlude(frames: torch.Tensor, masks: torch.Tensor, fills: torch.Tensor) -> torch.Tensor:
    """Frames (N, 3, S, S) with the pixels of ``masks`` (N, S, S) replaced by ``fills`` (N, 3, S, S)."""
    return torch.where(masks[:, None], fills, frames)


# ----------------------------------------------------------------------------------------- embedding

@dataclass
class Target:
    """A model that scores occluded frames: its module, input size and per-image frame -> input matrices."""

    name: str
    module: nn.Module
    input_size: int
    frame_to_input: np.ndarray
    """(N, 2, 3) frame pixels -> input pixels, rows aligned with the frames given to ``occlusion_drops``."""


@torch.inference_mode()
def embed_frames(target: Target, frames: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """Unit-norm embeddings (B, D) of analysis frames (B, 3, S, S) in 0..255 under ``target``.

    ``rows`` index ``target.frame_to_input`` for the images of the batch.
    """
    inputs = frame_to_input(frames, target.frame_to_input[rows], target.input_size)
    return F.normalize(target.module(inputs).to(torch.float32), dim=1)


def reference_embeddings(clean: torch.Tensor, reference_rows: Sequence[int | Sequence[int]]) -> torch.Tensor:
    """Reference embedding (N, D) per image: one clean embedding, or the mean of several (``mean_others``).

    ``clean`` holds clean unit embeddings (M, D); entry i of ``reference_rows`` is a row of ``clean`` or a
    list of rows to average. Cosine is scale-free, so the mean need not be renormalised.
    """
    out = []
    for rows in reference_rows:
        rows = [rows] if np.isscalar(rows) else list(rows)
        out.append(clean[rows].mean(dim=0))
    return torch.stack(out)


# ---------------------------------------------------------------------------------------- experiment

@dataclass
class Design:
    """What to occlude: thresholds, fill, random baselines, and the guide maps per source model.

    ``guides[source][map_name]`` is a (N, G, G) array of raw LEAM maps aligned with the frames.
    """

    thresholds: list[float]
    fill: str
    random_kinds: list[str]
    random_repeats: int
    seed: int
    guides: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("occlusion.fill", self.fill, FILLS)
        for kind in self.random_kinds:
            check_choice("occlusion.random", kind, RANDOM_KINDS)
        if self.random_repeats < 0:
            raise LeamError(f"occlusion.random_repeats={self.random_repeats!r} must be >= 0")
        for t in self.thresholds:
            check_fraction(t, "occlusion.thresholds")


@dataclass
class Timing:
    """Forward-pass cost of one target model: number of forwards, images embedded, seconds spent."""

    forwards: int = 0
    images: int = 0
    seconds: float = 0.0

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / self.images if self.images else float("nan")


def occlusion_drops(frames: np.ndarray, image_rows: np.ndarray, image_ids: Sequence[str],
                    reference_rows: Sequence[int | Sequence[int]], face_region: np.ndarray | None,
                    targets: Sequence[Target], design: Design, batch_size: int = 32,
                    device: torch.device | str = "cpu",
                    timings: dict[str, Timing] | None = None) -> pd.DataFrame:
    """Similarity drops of every (target, source, map, threshold) LEAM mask and every random baseline.

    frames: uint8 (M, S, S, 3) analysis frames (all images, including references).
    image_rows: (N,) rows of ``frames`` to occlude; guide maps and ``face_region`` (N, S, S) follow this order.
    reference_rows: per occluded image, the frame row(s) of its LEAM reference (see ``reference_embeddings``).
    Returns one row per (target, source, map, threshold, kind, repeat, image) with columns
    ``source, target, map, threshold, kind, repeat, image, clean, occluded, drop`` (``image`` = position in
    ``image_rows``). Random rows have source and map ``none``: they do not depend on a source model.
    Each batch of occluded images is one forward pass per target.
    """
    device = torch.device(device)
    size = frames.shape[1]
    image_rows = np.asarray(image_rows, dtype=np.int64)
    if any(kind in ("face", "blob") for kind in design.random_kinds) and design.random_repeats and face_region is None:
        raise LeamError("random face and blob baselines need a face region")
    counts = {t: top_count(t, size * size) for t in design.thresholds}
    if face_region is not None:
        region_pixels = np.asarray(face_region).reshape(len(image_rows), -1).sum(axis=1)
    records: list[pd.DataFrame] = []
    for target in targets:
        target.module.to(device)
        timing = timings.setdefault(target.name, Timing()) if timings is not None else Timing()

        def forward(batch: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            start = time.perf_counter()
            out = embed_frames(target, batch, rows)
            timing.seconds += time.perf_counter() - start
            timing.forwards += 1
            timing.images += batch.shape[0]
            return out

        # Reference embeddings: clean frames of every row any reference needs.
        needed = sorted({int(r) for rows in reference_rows for r in ([rows] if np.isscalar(rows) else rows)})
        ref_clean = torch.zeros((0,))
        chunks = []
        for start in range(0, len(needed), batch_size):
            rows = np.asarray(needed[start:start + batch_size])
            chunks.append(forward(_frames_tensor(frames, rows, device), rows))
        if chunks:
            ref_clean = torch.cat(chunks)
        position = {row: i for i, row in enumerate(needed)}
        references = reference_embeddings(
            ref_clean, [[position[int(r)] for r in ([rows] if np.isscalar(rows) else rows)] for rows in reference_rows])

        for start in tqdm(range(0, len(image_rows), batch_size), desc=f"occlusion {target.name}", leave=False):
            stop = min(start + batch_size, len(image_rows))
            rows = image_rows[start:stop]
            ids = list(image_ids[start:stop])
            batch = _frames_tensor(frames, rows, device)
            ref = references[start:stop].to(device)
            clean = _cosine(forward(batch, rows), ref)
            fills = fill_values(batch, design.fill)
            base = {"target": target.name, "image": np.arange(start, stop)}

            def score(ranks: torch.Tensor, source: str, map_name: str, kind: str, repeat: int,
                      valid: np.ndarray | None = None) -> None:
                for threshold, count in counts.items():
                    occluded = _cosine(forward(occlude(batch, ranks < count, fills), rows), ref)
                    clean_np, occluded_np = clean.cpu().numpy(), occluded.cpu().numpy()
                    if valid is not None:
                        bad = valid < count
                        occluded_np = np.where(bad, np.nan, occluded_np)
                    records.append(pd.DataFrame({
                        **base, "source": source, "map": map_name, "threshold": threshold, "kind": kind,
                        "repeat": repeat, "clean": clean_np, "occluded": occluded_np,
                        "drop": clean_np - occluded_np}))

            for source, maps in design.guides.items():
                for map_name, grid_maps in maps.items():
                    guide = torch.as_tensor(np.asarray(grid_maps[start:stop], dtype=np.float32), device=device)
                    score(pixel_ranks(upsample_maps(guide, size)), source, map_name, "leam", 0)
            for kind in design.random_kinds:
                for repeat in range(design.random_repeats):
                    valid, inside = None, None
                    if kind == "blob":
                        region = torch.as_tensor(np.asarray(face_region[start:stop]), device=device)
                        scores = random_blob_scores(ids, region, design.seed, repeat)
                    else:
                        scores = random_scores(ids, size, design.seed, kind, repeat).to(device)
                    if kind == "face":  # face pixels rank first; too small a face gives NaN (see score)
                        inside = torch.as_tensor(np.asarray(face_region[start:stop]), device=device)
                        valid = region_pixels[start:stop]
                    score(pixel_ranks(scores, valid=inside), "none", "none", f"random_{kind}", repeat, valid)
    if not records:
        return pd.DataFrame(columns=["source", "target", "map", "threshold", "kind", "repeat", "image",
                                     "clean", "occluded", "drop"])
    out = pd.concat(records, ignore_index=True)
    return out[["source", "target", "map", "threshold", "kind", "repeat", "image", "clean", "occluded", "drop"]]


def _frames_tensor(frames: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (M, S, S, 3) frames, selected rows -> float32 (B, 3, S, S) in 0..255 on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(frames[rows])).to(device).permute(0, 3, 1, 2).to(torch.float32)


def _cosine(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(embeddings, references.to(embeddings.dtype), dim=1)


# ---------------------------------------------------------------------------------------- statistics

def per_image_drops(drops: pd.DataFrame) -> pd.DataFrame:
    """Average random repeats per image: one row per (source, target, map, threshold, kind, image...)."""
    keys = [c for c in drops.columns if c not in ("repeat", "clean", "occluded", "drop")]
    return drops.groupby(keys, sort=True, dropna=False)[["clean", "occluded", "drop"]].mean().reset_index()


def leam_vs_random(per_image: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Paired Wilcoxon test of LEAM-guided vs each random baseline, per (source, target, map, threshold).

    Pairs are the same images (``image_id``, else ``image``) under the same target; ``difference`` = mean(LEAM drop - random drop).
    """
    by = list(by)
    key = "image_id" if "image_id" in per_image.columns else "image"
    leam = per_image[per_image.kind == "leam"]
    rows = []
    for kind in sorted(k for k in per_image.kind.unique() if k != "leam"):
        rand = per_image[per_image.kind == kind][["target", "threshold", key, *by, "drop"]]
        merged = leam.merge(rand, on=["target", "threshold", key, *by], suffixes=("", "_random"))
        for keys, group in merged.groupby(["source", "target", "map", "threshold", *by], sort=True):
            test = paired_test(group["drop"], group["drop_random"])
            diff = (group["drop"] - group["drop_random"]).to_numpy(dtype=np.float64)
            rows.append({**dict(zip(["source", "target", "map", "threshold", *by], keys)), "random": kind,
                         "leam_mean": float(np.nanmean(group["drop"])),
                         "random_mean": float(np.nanmean(group["drop_random"])),
                         "difference": float(np.nanmean(diff)) if np.isfinite(diff).any() else float("nan"),
                         **test})
    return pd.DataFrame(rows)


def summarize_drops(per_image: pd.DataFrame, by: Sequence[str] = (), n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean drop with 95% bootstrap CI per (source, target, map, threshold, kind, *by)."""
    return summarize(per_image, ["source", "target", "map", "threshold", "kind", *by], "drop", n_boot=n_boot, seed=seed)


def headline(summary: pd.DataFrame, tests: pd.DataFrame, threshold: float, map_name: str) -> dict:
    """Flat metrics at ``threshold`` for source = target: LEAM and random mean drops with CIs and p-values,
    plus the transfer matrix of mean LEAM drops (``<source>__<target>``)."""
    out: dict = {"threshold": threshold, "map": map_name, "models": {}, "transfer": {}}
    at = summary[np.isclose(summary.threshold, threshold)]
    leam = at[(at.kind == "leam") & (at["map"] == map_name)]
    for _, row in leam.iterrows():
        if row.source == row.target:
            model = {"n": int(row.n), "leam_drop": row["mean"], "leam_ci": [row.ci_low, row.ci_high]}
            for _, rnd in at[(at.kind != "leam") & (at.target == row.target)].iterrows():
                model[f"{rnd.kind}_drop"] = rnd["mean"]
                model[f"{rnd.kind}_ci"] = [rnd.ci_low, rnd.ci_high]
            sel = tests[(tests.source == row.source) & (tests.target == row.target) & (tests["map"] == map_name)
                        & np.isclose(tests.threshold, threshold)] if len(tests) else tests
            if "gender" in sel.columns:  # the headline pools genders
                sel = sel[sel.gender == "all"]
            for _, test in sel.iterrows():
                model[f"p_vs_{test.random}"] = test.p_value
            out["models"][row.source] = model
        out["transfer"][f"{row.source}__{row.target}"] = row["mean"]
    return out



# ------------------------------------------------------------------------------------------ examples

def example_panel(frame: np.ndarray, guide: np.ndarray, image_id: str, threshold: float, seed: int,
                  fill: str = "black") -> np.ndarray:
    """One report figure row, uint8 RGB (S, 3 S, 3): clean | LEAM top-t occluded | uniform random occluded.

    frame: uint8 (S, S, 3) analysis frame; guide: raw map (G, G) of the same image.
    """
    size = frame.shape[0]
    batch = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].to(torch.float32)
    fills = fill_values(batch, fill)
    count = top_count(threshold, size * size)
    leam_mask = pixel_ranks(upsample_maps(torch.as_tensor(np.asarray(guide, dtype=np.float32))[None], size)) < count
    random_mask = pixel_ranks(random_scores([image_id], size, seed, "uniform", 0)) < count
    panels = [batch, occlude(batch, leam_mask, fills), occlude(batch, random_mask, fills)]
    row = torch.cat(panels, dim=3)[0].permute(1, 2, 0)
    return row.round().clamp(0, 255).to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------ selection

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
