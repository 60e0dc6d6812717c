"""LEAM maps of a whole aligned photo set for one network: what the ``leam@<model>`` stage stores.

Every aligned photo with a possible reference (:func:`leam.core.select_references`) is explained against
its reference embedding (:func:`leam.embedding.reference_embeddings` of the photos' embeddings: the ``models``
stage's ``data/embeddings/<model>.npy`` in the pipeline, computed here when not given), ``leam.batch_size``
photos per forward + backward pass, with the cell placement
measured once per network (:func:`probe_photos` are the faces ``effective_field`` is measured on). The
maps come back in the analysis frame, are area-downsampled to ``leam.store_size`` cells a side and get the
overall map (:func:`leam.core.overall_map` of the stored layer maps) as their last layer. Nothing here reads
or writes files: :func:`leam.io.write_leam_outputs` stores the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam import core
from leam.device import resolve_batch_size
from leam.embedding import embed_frames, reference_embeddings
from leam.engine import map_batches
from leam.errors import LeamError
from leam.placement import CellGeometry, cell_table

if TYPE_CHECKING:  # annotations only
    from leam.config import LeamParams, RayParams
    from leam.models.spec import ModelSpec

__all__ = ["DatasetMaps", "StoredMapsWorker", "dataset_maps", "probe_photos"]


@dataclass(frozen=True)
class DatasetMaps:
    """One network's LEAM maps of an aligned set, with the tables the ``leam`` stage writes beside them.

    maps: float32 (M, L + 1, G, G) raw maps in the analysis frame, G = ``leam.store_size``, the last
    layer ``overall``; row i belongs to ``meta`` row i. meta: row, image_id, identity, gender,
    reference_image_id, cosine (of the clean pair). discards: image_id, identity, reason of the aligned
    photos without a reference (meta + discards = the aligned index). record: the ``layers.json``
    fields (model, layers, grid, frame_size, sign, negative_activations, reference, placement, cells,
    images_in, dropped). dropped: photos without a reference, counted by reason.
    """

    maps: np.ndarray
    meta: pd.DataFrame
    discards: pd.DataFrame
    record: dict
    dropped: dict[str, int]


def probe_photos(index: pd.DataFrame, frames: np.ndarray, landmarks: np.ndarray, count: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Frames (n, S, S, 3) and landmarks (n, 68, 2) of the first ``count`` (``leam.probe_images``) aligned
    photos (index order): where ``effective_field`` measures every layer's cell positions."""
    first = index["row"].to_numpy()[:count]
    return frames[first], landmarks[first]


class StoredMapsWorker:
    """The stored maps of one batch of photos: the unit of work of either engine (:mod:`leam.engine`).

    Built once per engine (with ``ray``: once per actor, which then holds the network): model, spec,
    layers, geometries (:func:`leam.core.frame_geometries`, measured once by the caller), cfg (the ``leam``
    group: sign, negative_activations, store_size, overall) and padding (``align.padding``). device: the
    engine's (the model is moved there; the maps come back on the CPU; None = where the model is).
    A batch: ``start`` (its first plan row), ``frames`` (B, S, S, 3) uint8, ``landmarks`` (B, 68, 2),
    ``references`` (B, D) float32; out: ``start``, ``maps`` float32 (B, L + 1, G, G), ``cosine`` (B,).
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, layers: tuple[str, ...],
                 geometries: Mapping[str, CellGeometry] | None, cfg: LeamParams, padding: float,
                 device: torch.device | None = None):
        self.model = model if device is None else model.to(device)
        self.spec, self.layers, self.geometries, self.cfg, self.padding = spec, layers, geometries, cfg, padding

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        result = core.frame_leam_maps(self.model, self.spec, batch["frames"], batch["landmarks"],
                                      torch.as_tensor(np.array(batch["references"], dtype=np.float32)), self.layers,
                                      self.padding, cfg.sign, cfg.negative_activations, self.geometries)
        stored = core.area_downsample(result.maps, cfg.store_size)
        stored = torch.cat([stored, core.overall_map(stored, cfg.overall)[:, None]], dim=1)
        return {"start": batch["start"], "maps": stored.cpu().numpy(), "cosine": result.cosine.cpu().numpy()}


def dataset_maps(model: nn.Module, spec: ModelSpec, layers: Sequence[str], index: pd.DataFrame,
                 frames: np.ndarray, landmarks: np.ndarray, cfg: LeamParams, padding: float,
                 pairs: pd.DataFrame | None = None, embeddings: np.ndarray | torch.Tensor | None = None,
                 engine: str = "local", ray: RayParams | None = None, device: torch.device | str = "cpu"
                 ) -> DatasetMaps:
    """LEAM maps of every aligned photo that has a reference, against that reference (module docstring).

    index: the aligned index (``row`` = array row, ``image_id``, ``identity``, ``gender``); frames
    (N, S, S, 3) uint8 and landmarks (N, 68, 2) frame pixels; cfg: the ``leam`` params group; padding:
    ``align.padding`` (the frame's dlib chip padding, for the model's input warp); pairs: the
    ``leam.reference=pairs`` table (image_id, reference_image_id), else None; embeddings: (N, D) raw
    embeddings of the frames (row i = frame i, :func:`leam.embedding.embed_frames`; the ``models`` stage's
    ``data/embeddings/<model>.npy``), computed here (``leam.batch_size`` per pass) when None; engine, ray:
    where the batches run (:func:`leam.engine.map_batches`: ``local`` here, ``ray`` on Ray actors that each
    hold the network; the same maps bit for bit); device: where the local engine runs (the model is moved
    there; ``leam.device`` resolved by :func:`leam.device.resolve_device`). ``leam.batch_size: auto`` is
    resolved here (:func:`leam.device.resolve_batch_size`); maps do not depend on the batch size.
    """
    model = model.to(device)
    grid = cfg.store_size
    batch_size = resolve_batch_size(cfg.batch_size, device, lambda: core.pass_bytes(model, spec, layers, frames.shape[1]),
                                    "leam.batch_size")
    if grid > frames.shape[1]:
        raise LeamError(f"leam.store_size={grid} exceeds the frame size {frames.shape[1]}")
    plan, dropped = core.select_references(index, cfg.reference, cfg.baseline_index, pairs)
    if plan.empty:
        raise LeamError(f"no image has a reference (dropped: {dropped or 'none'}); "
                        "every identity needs at least two aligned photos")
    array_rows = index["row"].to_numpy()
    if embeddings is None:
        embeddings = embed_frames(model, spec, frames[array_rows], landmarks[array_rows], padding, batch_size, device)
    else:
        if tuple(embeddings.shape) != (len(frames), spec.embedding_dim):
            raise LeamError(f"embeddings of shape {tuple(embeddings.shape)} do not fit {len(frames)} frames embedded by "
                            f"{spec.name} ({spec.embedding_dim}-D): rebuild data/embeddings with `dvc repro models`")
        embeddings = torch.as_tensor(np.asarray(embeddings[array_rows]), dtype=torch.float32)
    references = reference_embeddings(F.normalize(embeddings, dim=1), plan.reference_rows)
    image_rows = array_rows[plan.row.to_numpy()]
    geometries = core.frame_geometries(model, spec, layers, cfg.placement,
                                       *probe_photos(index, frames, landmarks, cfg.probe_images), padding)
    maps = np.zeros((len(plan), len(layers) + 1, grid, grid), dtype=np.float32)
    cosines = np.zeros(len(plan), dtype=np.float64)
    starts = range(0, len(plan), batch_size)
    batches = ({"start": start, "frames": frames[image_rows[start:start + batch_size]],
                "landmarks": landmarks[image_rows[start:start + batch_size]],
                "references": references[start:start + batch_size].numpy()} for start in starts)
    worker = partial(StoredMapsWorker, model, spec, tuple(layers), geometries, cfg, padding)
    for out in map_batches(worker, batches, len(starts), engine, ray, device, gpu_capable=True, desc=f"leam {spec.name}"):
        start = int(out["start"])
        maps[start:start + len(out["maps"])] = out["maps"]
        cosines[start:start + len(out["maps"])] = out["cosine"]

    kept = index.iloc[plan.row.to_numpy()].reset_index(drop=True)
    meta = pd.DataFrame({"row": np.arange(len(plan)), "image_id": kept.image_id, "identity": kept.identity,
                         "gender": kept.gender, "reference_image_id": plan.reference_image_id.to_numpy(),
                         "cosine": cosines})
    # every aligned image is in meta or discards; the reason is exact when one reason dropped them all
    unplanned = np.ones(len(index), dtype=bool)
    unplanned[plan.row.to_numpy()] = False
    reason = next(iter(dropped)) if len(dropped) == 1 else "no_reference"
    discards = pd.DataFrame({"image_id": index.image_id[unplanned], "identity": index.identity[unplanned],
                             "reason": reason}, columns=["image_id", "identity", "reason"])
    record = {"model": spec.name, "layers": [*layers, "overall"], "grid": grid, "frame_size": int(frames.shape[1]),
              "sign": cfg.sign, "negative_activations": cfg.negative_activations, "reference": cfg.reference,
              "placement": cfg.placement, "cells": cell_table(geometries), "images_in": int(len(index)),
              "dropped": {k: int(v) for k, v in sorted(dropped.items())}}
    return DatasetMaps(maps=maps, meta=meta, discards=discards, record=record, dropped=dropped)
