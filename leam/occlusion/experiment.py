"""One occlusion experiment over the pipeline's models: its images and guide maps, every target's drops, the metrics.

The occlusion stage reads the aligned data and each source model's LEAM outputs and hands them here.
:func:`plan_experiment` checks the requested maps against each source's layers, chooses the images
(:func:`leam.occlusion.select_images`) and gathers their guide maps; :func:`run_experiment` occludes them
under each target model; :func:`metrics_document` is the stage's small JSON for DVC.

Transfer: maps of every source occlude every target. Source = target uses every requested map,
source != target only the first one (``maps[0]``, normally ``overall``), to bound the cost. Layer names
differ between models, so a requested layer a source lacks is skipped for it (counted in
``maps_skipped``); the first map is required of every source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from leam.errors import LeamError
from leam.face_region import face_region
from leam.occlusion.drops import Design, Timing, occlusion_drops
from leam.occlusion.masks import TopPixels
from leam.occlusion.selection import select_images
from leam.occlusion.stats import headline
from leam.occlusion.targets import Target
from leam.topt import top_count

__all__ = ["DROP_COLUMNS", "Experiment", "guide_layers", "metrics_document", "plan_experiment", "run_experiment"]

log = logging.getLogger(__name__)

DROP_COLUMNS = ["source", "target", "map", "threshold", "kind", "repeat", "image_id", "identity", "gender",
                "clean", "occluded", "drop"]
"""Columns of ``data/occlusion/drops.csv``: one row per (source, target, map, threshold, kind, repeat, image)."""


@dataclass
class Experiment:
    """The occluded images, the frames they and their references need, and the guide maps per source.

    Frames are kept only for the selected images and their references, so a memory-mapped frames file
    is read once; ``image_rows`` and ``reference_rows`` index these local frames.
    """

    selection: pd.DataFrame
    """One row per occluded image (``image_id, identity, gender, frame_row, reference_rows, map_row_<source>``,
    see ``select_images``; ``frame_row`` and ``reference_rows`` index the full aligned frames)."""
    frames: np.ndarray
    """uint8 (K, S, S, 3): the analysis frames of the occluded images and of their references."""
    landmarks: np.ndarray
    """(K, 68, 2) frame landmarks of the same K frames (for each target's input warp)."""
    image_rows: np.ndarray
    """(N,) row of ``frames`` per occluded image."""
    reference_rows: list[list[int]]
    """Per occluded image, the rows of ``frames`` whose clean embeddings form its reference."""
    guides: dict[str, dict[str, np.ndarray]]
    """source -> map name -> raw LEAM maps float32 (N, G, G) of the occluded images."""
    face_region: np.ndarray
    """bool (N, S, S): the face region of each occluded image (``leam.face_region``; the ``face`` and ``blob``
    baselines occlude inside it)."""
    map_names: list[str]
    """The requested maps; ``map_names[0]`` guides the transfer and the examples."""
    maps_skipped: dict[str, list[str]]
    """Per source, the requested maps it lacks."""
    left_out: dict[str, int]
    """Images left out and why (see ``select_images``)."""

    @property
    def frame_size(self) -> int:
        return int(self.frames.shape[1])


def guide_layers(layers: Sequence[str], map_names: Sequence[str], model: str) -> dict[str, int]:
    """{map name: index in ``layers``} for the requested maps a source model has (its ``layers.json`` order).

    The first map (the transfer map, normally ``overall``) is required.
    """
    layers = list(layers)
    if map_names[0] not in layers:
        raise LeamError(f"occlusion.maps[0]={map_names[0]!r} (the transfer map) is not computed for {model!r}; "
                        f"choose from: {', '.join(layers)}")
    return {name: layers.index(name) for name in map_names if name in layers}


def plan_experiment(index: pd.DataFrame, frames: np.ndarray, landmarks: np.ndarray,
                    leam_outputs: Mapping[str, tuple[np.ndarray, dict, pd.DataFrame]], map_names: Sequence[str],
                    max_per_identity: int = 0, seed: int = 0, reference_policy: str = "baseline",
                    face_region_policy: str = "landmarks", labels: np.ndarray | None = None) -> Experiment:
    """The images to occlude and everything their occlusion needs.

    index, frames (M, S, S, 3), landmarks (M, 68, 2): the aligned data (``leam.io.read_aligned``).
    leam_outputs: per source model, in model order, its ``(maps (n, L+1, G, G), layers.json, meta.csv)``
    (``leam.io.read_leam_outputs``). ``max_per_identity``, ``seed`` and ``reference_policy`` go to
    ``select_images``. ``face_region_policy`` (params ``face_region``, :mod:`leam.face_region`) says where
    the ``face`` and ``blob`` baselines may occlude; ``parsing`` needs ``labels`` (M, S, S), the parser
    labels of the aligned rows.
    """
    map_names = list(map_names)
    if not map_names:
        raise LeamError("occlusion.maps is empty; name at least one map, e.g. [overall]")
    models = list(leam_outputs)
    layer_ids = {model: guide_layers(info["layers"], map_names, model) for model, (_, info, _) in leam_outputs.items()}
    skipped = {model: [n for n in map_names if n not in ids] for model, ids in layer_ids.items()}
    unknown = [n for n in map_names if all(n in names for names in skipped.values())]
    if unknown:
        raise LeamError(f"occlusion.maps has {', '.join(map(repr, unknown))}, computed for no model; "
                        f"maps of {models[0]!r}: {', '.join(layer_ids[models[0]])} (see data/leam/*/layers.json)")
    for model, names in skipped.items():
        if names:
            log.warning("source %s has no map %s: skipped for it", model, ", ".join(names))
    selection, left_out = select_images(index, {m: meta for m, (_, _, meta) in leam_outputs.items()},
                                        max_per_identity, seed=seed, reference_policy=reference_policy)
    if selection.empty:
        raise LeamError("no image to occlude: every LEAM image lacks a reference or a map")
    frame_rows = selection.frame_row.to_numpy()
    guides = {model: {name: np.asarray(maps[selection[f"map_row_{model}"].to_numpy(), layer], dtype=np.float32)
                      for name, layer in layer_ids[model].items()}
              for model, (maps, _, _) in leam_outputs.items()}
    needed = np.unique(np.concatenate([frame_rows, np.concatenate(selection.reference_rows.map(np.asarray).to_list())]))
    local = {int(row): i for i, row in enumerate(needed)}
    return Experiment(
        selection=selection, frames=np.asarray(frames[needed]), landmarks=np.asarray(landmarks[needed]),
        image_rows=np.array([local[int(r)] for r in frame_rows]),
        reference_rows=[[local[int(r)] for r in rows] for rows in selection.reference_rows], guides=guides,
        face_region=face_region(face_region_policy, frames.shape[1], landmarks=np.asarray(landmarks[frame_rows]),
                                labels=None if labels is None else np.asarray(labels[frame_rows])),
        map_names=map_names,
        maps_skipped=skipped, left_out=left_out)


def run_experiment(experiment: Experiment, targets: Iterable[Target], design: Design, transfer: bool = True,
                   batch_size: int = 32, device: torch.device | str = "cpu") -> tuple[pd.DataFrame, dict[str, Timing]]:
    """Drops of every target (``DROP_COLUMNS``) and its forward-pass timing.

    ``targets`` may be a generator, so one model at a time is loaded; ``design`` gives thresholds, fill
    and random baselines (its guides are replaced by the experiment's: every map for source = target,
    ``map_names[0]`` of every other source when ``transfer``).
    """
    first = experiment.map_names[0]
    timings: dict[str, Timing] = {}
    parts = []
    image_ids = experiment.selection.image_id.tolist()
    counts = [top_count(t, experiment.frame_size ** 2) for t in design.thresholds]
    # Masks depend on no target: each is ranked once (on first use) and serves every target and threshold.
    masks = TopPixels(image_ids, experiment.frame_size, max(counts, default=1), design.seed, experiment.guides,
                      experiment.face_region, batch_size, device)
    for target in targets:
        chosen = {source: (maps if source == target.name else {first: maps[first]})
                  for source, maps in experiment.guides.items() if transfer or source == target.name}
        parts.append(occlusion_drops(
            experiment.frames, experiment.image_rows, image_ids, experiment.reference_rows,
            experiment.face_region, [target], replace(design, guides=chosen), batch_size=batch_size, device=device,
            timings=timings, masks=masks))
        timing = timings[target.name]
        log.info("target %s: %.1f ms per image-forward (%d images in %d forwards)", target.name,
                 timing.ms_per_image, timing.images, timing.forwards)
    drops = pd.concat(parts, ignore_index=True)
    return drops.join(experiment.selection[["image_id", "identity", "gender"]], on="image")[DROP_COLUMNS], timings


def metrics_document(experiment: Experiment, tables: Mapping[str, pd.DataFrame], threshold: float,
                     device: torch.device) -> dict:
    """``metrics/occlusion.json``: the headline at ``threshold`` for the first map (``headline``), the images
    used and left out, the maps skipped, the random-face masks discarded (face smaller than the mask), the device."""
    drops = tables["drops"]
    metrics = headline(tables["summary"], tables["tests"], threshold, experiment.map_names[0])
    metrics.update({"n_images": int(len(experiment.selection)), "left_out": experiment.left_out,
                    "maps_skipped": {m: n for m, n in experiment.maps_skipped.items() if n},
                    "discarded_random_face": int(drops[drops.kind == "random_face"].occluded.isna().sum()),
                    "device": device.type})
    return metrics
