"""The protect experiment: choose photos, build every condition's protected photo, score it on every network.

:func:`plan` picks a seeded subset of photos that every source network has LEAM maps for (with their LEAM
references, :func:`leam.occlusion.select_images`), of persons with at least one other photo, and gathers
their frames, face regions and guide maps (own and leave-one-out person maps, :mod:`leam.protect.locations`).
:func:`protect_photos` builds every condition's 8-bit protected frames, optimising only against the
``sources``; :func:`leave_one_out` rotates the optimiser's ensemble so that every network is once the one it
never saw; :func:`score_photos` embeds clean and protected frames with every evaluated network (sources
and held-out networks alike) and scores them (:mod:`leam.protect.evaluation`). Nothing here reads files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from leam.embedding import frames_to_tensor, reference_embeddings
from leam.errors import LeamError
from leam.face_region import face_region
from leam.occlusion import Target, select_images
from leam.protect.design import Condition, Design
from leam.protect.evaluation import Gallery, identity_scores, visibility
from leam.protect.fills import filled
from leam.protect.locations import budget_counts, guide_maps, location_masks, person_maps
from leam.protect.pgd import optimise

__all__ = ["RESULT_COLUMNS", "Plan", "Protected", "leave_one_out", "plan", "protect_photos", "score_photos",
           "without_name"]

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["condition", "image_id", "identity", "gender", "network", "role", "cosine_clean", "cosine", "drop",
                  "verified_clean", "verified", "identified_clean", "identified"]
"""Columns of ``data/protect/results.csv``: one row per (condition, photo, evaluated network)."""


@dataclass
class Plan:
    """The protected photos and what their protection needs; rows of every array follow ``photos``."""

    photos: pd.DataFrame
    """``image_id, identity, gender, frame_row, reference_rows`` (aligned rows), one row per protected photo."""
    frames: np.ndarray
    """uint8 (N, S, S, 3) clean analysis frames."""
    landmarks: np.ndarray
    """(N, 68, 2) frame landmarks (each network's input warp)."""
    face_region: np.ndarray
    """bool (N, S, S): where a mask may lie (top-level ``face_region``); the budget is a fraction of it."""
    guides: dict[str, np.ndarray]
    """``leam:<map>`` and ``person:<map>`` -> (N, G, G) guide scores."""
    person_photos: np.ndarray
    """(N,) how many other photos built each person map."""
    left_out: dict[str, int] = field(default_factory=dict)


def plan(index: pd.DataFrame, frames: np.ndarray, landmarks: np.ndarray,
         leam_outputs: Mapping[str, tuple[np.ndarray, dict, pd.DataFrame]], maps: Sequence[str], max_identities: int,
         max_images_per_identity: int, seed: int, reference_policy: str, face_region_policy: str,
         labels: np.ndarray | None = None, person: bool = True) -> Plan:
    """The photos to protect (module docstring) from the aligned data and each source's leam outputs
    (``leam.io.read_leam_outputs``); ``labels`` (M, S, S) only for ``face_region_policy = parsing``."""
    metas = {source: meta for source, (_, _, meta) in leam_outputs.items()}
    selection, left_out = select_images(index, metas, 0, seed=seed, reference_policy=reference_policy)
    per_identity = index.groupby("identity").size()
    lonely = selection.identity.map(per_identity).fillna(0).to_numpy() < 2
    left_out["no_other_photo"] = int(lonely.sum())
    selection = selection[~lonely]
    rng = np.random.default_rng(seed)
    identities = np.array(sorted(selection.identity.unique()))
    if max_identities and len(identities) > max_identities:
        identities = np.sort(rng.choice(identities, size=max_identities, replace=False))
    chosen = []
    for identity in identities:
        rows = selection.index[selection.identity == identity].to_numpy()
        if max_images_per_identity and len(rows) > max_images_per_identity:
            rows = np.sort(rng.choice(rows, size=max_images_per_identity, replace=False))
        chosen.extend(rows.tolist())
    left_out["subsampled"] = int(len(selection) - len(chosen))
    photos = selection.loc[chosen].reset_index(drop=True)
    if photos.empty:
        raise LeamError("no photo to protect: every LEAM photo lacks a reference, a map or another photo of its person")
    guides: dict[str, np.ndarray] = {}
    counts = np.zeros(len(photos), dtype=np.int64)
    for name in maps:
        layer_of = {s: info["layers"].index(name) for s, (_, info, _) in leam_outputs.items() if name in info["layers"]}
        if not layer_of:
            raise LeamError(f"protect.maps has {name!r}, computed for no source network; maps of "
                            f"{next(iter(leam_outputs))!r}: {', '.join(next(iter(leam_outputs.values()))[1]['layers'])}")
        own = {s: leam_outputs[s][0][photos[f"map_row_{s}"].to_numpy(), layer] for s, layer in layer_of.items()}
        guides[f"leam:{name}"] = guide_maps(own)
        if person and name == maps[0]:
            # every mapped photo of the chosen persons, so each person map can leave its own photo out
            pool = selection[selection.identity.isin(photos.identity)].reset_index(drop=True)
            pooled = guide_maps({s: leam_outputs[s][0][pool[f"map_row_{s}"].to_numpy(), layer]
                                 for s, layer in layer_of.items()})
            position = dict(zip(pool.image_id, range(len(pool))))
            guides[f"person:{name}"], counts = person_maps(pooled, pool.identity.to_numpy(),
                                                           [position[i] for i in photos.image_id])
    rows = photos.frame_row.to_numpy()
    region = face_region(face_region_policy, frames.shape[1], landmarks=np.asarray(landmarks[rows]),
                         labels=None if labels is None else np.asarray(labels[rows]))
    keep = ["image_id", "identity", "gender", "frame_row", "reference_rows"]
    return Plan(photos[keep], np.asarray(frames[rows]), np.asarray(landmarks[rows]), region, guides, counts, left_out)


@dataclass
class Protected:
    """Every condition's protected 8-bit frames (C, N, S, S, 3), its visibility table and timing."""

    conditions: list[Condition]
    frames: np.ndarray
    visibility: pd.DataFrame
    seconds: dict[str, float]


def protect_photos(the_plan: Plan, conditions: Sequence[Condition], design: Design, sources: Sequence[Target],
                   source_galleries: Mapping[str, Gallery], seed: int, batch_size: int = 32,
                   device: torch.device | str = "cpu") -> Protected:
    """Every condition's protected frames; PGD runs on batches of (condition, photo) jobs against ``sources``
    only (their warps must index the plan's photos); ``source_galleries`` give each source's references."""
    clean = frames_to_tensor(the_plan.frames, device)
    ids = the_plan.photos.image_id.tolist()
    references = {s.name: reference_embeddings(source_galleries[s.name].embeddings, the_plan.photos.reference_rows).to(device)
                  for s in sources}
    n = len(clean)
    out = np.empty((len(conditions), *the_plan.frames.shape), dtype=np.uint8)
    jobs: list[tuple[int, np.ndarray, np.ndarray]] = []  # (condition index, masks (N, S, S), sparse counts (N,))
    started = time.perf_counter()
    for c, condition in enumerate(conditions):
        masks = location_masks(condition.location, condition.budget, the_plan.face_region, ids, seed, the_plan.guides)
        if condition.fill == "optimised":
            counts = budget_counts(the_plan.face_region, condition.budget) if condition.location == "sparse" else np.zeros(n, np.int64)
            jobs.append((c, masks, counts))
        else:
            done = filled(clean, torch.as_tensor(masks, device=clean.device), condition.fill, condition.epsilon, ids, seed)
            out[c] = done.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
    seconds = {"fills": time.perf_counter() - started}
    started = time.perf_counter()
    flat = [(c, i) for c, _, _ in jobs for i in range(n)]
    mask_of = {c: (m, k) for c, m, k in jobs}
    for start in tqdm(range(0, len(flat), batch_size), desc="protect PGD", unit="batch", disable=not flat):
        batch = flat[start:start + batch_size]
        photo = np.array([i for _, i in batch])
        masks = torch.as_tensor(np.stack([mask_of[c][0][i] for c, i in batch]), device=clean.device)
        counts = torch.as_tensor(np.array([mask_of[c][1][i] for c, i in batch]), device=clean.device)
        epsilon = torch.tensor([conditions[c].epsilon for c, _ in batch], dtype=torch.float32, device=clean.device)
        delta, _ = optimise(clean[photo], photo, sources, {k: v[photo] for k, v in references.items()}, masks,
                            epsilon, design.steps, counts)
        protected = (clean[photo] + delta).permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
        for (c, i), frame in zip(batch, protected):
            out[c, i] = frame
    seconds["pgd"] = time.perf_counter() - started
    seconds["pgd_jobs"] = float(len(flat))
    vis = pd.concat([visibility(the_plan.frames, out[c]).assign(condition=condition.name, image_id=ids)
                     for c, condition in enumerate(conditions)], ignore_index=True)
    return Protected(list(conditions), out, vis[["condition", "image_id", "psnr", "ssim", "changed_pixels", "linf"]],
                     seconds)


def score_photos(the_plan: Plan, protected: Protected, networks: Sequence[tuple[Target, Gallery, str]],
                 batch_size: int = 32, device: torch.device | str = "cpu") -> pd.DataFrame:
    """``RESULT_COLUMNS`` rows for every (condition, photo, network); ``networks`` are (target, gallery, role)."""
    rows = the_plan.photos.frame_row.to_numpy()
    n, c = len(rows), len(protected.conditions)
    # clean photos first, then every condition's: one stack, embedded in full batches per network
    stack = np.concatenate([the_plan.frames[None], protected.frames]).reshape(-1, *the_plan.frames.shape[1:])
    photo_index = np.tile(np.arange(n), c + 1)
    parts = []
    for target, gallery, role in networks:
        references = reference_embeddings(gallery.embeddings, the_plan.photos.reference_rows)
        embedded = torch.cat([target.embed(frames_to_tensor(stack[s:s + batch_size], device), photo_index[s:s + batch_size])
                              for s in range(0, len(stack), batch_size)]).cpu()
        clean = identity_scores(gallery, embedded[:n], rows, references)
        for k, condition in enumerate(protected.conditions, start=1):
            scores = identity_scores(gallery, embedded[k * n:(k + 1) * n], rows, references)
            parts.append(pd.DataFrame({
                "condition": condition.name, "image_id": the_plan.photos.image_id, "identity": the_plan.photos.identity,
                "gender": the_plan.photos.gender, "network": target.name, "role": role,
                "cosine_clean": clean.cosine, "cosine": scores.cosine, "drop": clean.cosine - scores.cosine,
                "verified_clean": clean.verified, "verified": scores.verified,
                "identified_clean": clean.identified, "identified": scores.identified}))
    return pd.concat(parts, ignore_index=True)[RESULT_COLUMNS]


def without_name(condition: Condition, left_out: str) -> str:
    """The PNG folder and ``condition`` value of ``condition`` optimised without ``left_out``."""
    return f"{condition.name}-without-{left_out}"


def leave_one_out(plan_for: Callable[[Sequence[str]], Plan], photos: pd.DataFrame, condition: Condition,
                  design: Design, targets: Mapping[str, Target], galleries: Mapping[str, Gallery], seed: int,
                  batch_size: int = 32, device: torch.device | str = "cpu") -> tuple[pd.DataFrame, dict[str, np.ndarray],
                                                                                   pd.DataFrame, dict[str, float]]:
    """Every network once left out: ``condition`` optimised against all the other ``targets`` (its guide map
    from their LEAM maps, ``plan_for(others)``) and scored on the left-out network alone (role ``left_out``).

    ``photos`` are the main plan's photos, which every rotation must protect (the targets' warps index them);
    returns ``RESULT_COLUMNS`` rows (``condition`` = :func:`without_name`), the protected frames (N, S, S, 3)
    per left-out network, their visibility rows and the seconds per rotation.
    """
    names = list(targets)
    if len(names) < 2:
        raise LeamError("leave-one-out needs at least two networks (models)")
    rows, frames, seen, seconds = [], {}, [], {}
    for left in names:
        started = time.perf_counter()
        others = [n for n in names if n != left]
        the_plan = plan_for(others)
        if the_plan.photos.image_id.tolist() != photos.image_id.tolist():
            raise LeamError(f"leave-one-out without {left}: the other networks' LEAM maps cover other photos than the "
                            f"protected ones; run every leam@<model> on the same photos")
        done = protect_photos(the_plan, [condition], design, [targets[n] for n in others], galleries, seed,
                              batch_size, device)
        name = without_name(condition, left)
        scored = score_photos(the_plan, done, [(targets[left], galleries[left], "left_out")], batch_size, device)
        rows.append(scored.assign(condition=name))
        frames[left] = done.frames[0]
        seen.append(done.visibility.assign(condition=name))
        seconds[left] = time.perf_counter() - started
        log.info("leave-one-out: optimised on %s, scored on %s (%.0f s)", ", ".join(others), left, seconds[left])
    return (pd.concat(rows, ignore_index=True)[RESULT_COLUMNS], frames, pd.concat(seen, ignore_index=True),
            seconds)
