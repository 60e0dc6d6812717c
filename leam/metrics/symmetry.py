"""Left/right symmetry of LEAM maps: does a map favour one side of aligned, roughly symmetric faces?

Two measurements, each per network, layer and placement (``leam.placement``):

- **L/R mass ratio** of a region pair: the mean over images of the share of the top-t pixels that fall
  in the subject's left part, divided by the mean share in the right part (eyes, brows, mouth halves and
  face halves). Mouth and face are split at the facial midline, the mean x of the nose-bridge landmarks
  27-30. 1 is symmetric; the sides are the subject's (subject's left = image right).
- **Flip bias**: for a face and its mirror image (mirrored pixels *and* relabelled landmarks, so the
  model sees a plausible face), half the difference between the horizontal mass centroid of the face's
  map and that of the mirror's map mirrored back, in analysis-frame pixels. A placement that puts cells
  where they look gives 0 for every network, whatever the face; a drift towards one side shows as a
  bias of that sign (positive = towards the image right).

:func:`model_symmetry` runs one network on a seeded subset of photos and their mirror images under every
placement and measures both per image; :func:`summarise_symmetry` and :func:`symmetry_metrics` make the
``symmetry`` stage's summary and JSON.

Neither measurement alone can tell a placement error from a network that really favours one side: both
move the maps. :func:`symmetry_control` separates them. A placement moves cells; it cannot change which
of two mirror-image cells holds more evidence. The control feeds exactly mirror-symmetric model inputs,
(x + flip x) / 2, to the trained network and to a copy whose every kernel is averaged with its mirror
image (:func:`mirror_symmetrised`), with the same cells placed the same way (the trained network's
geometry under the run's placement, and LayerCAM's), and measures each map's horizontal centre offset (model-input pixels from
the input's centre) and the L/R halves of its top-t pixels. The copy keeps only the architecture's own
lopsidedness (dlib's unpadded stride-2 steps never see the last column, TF's SAME puts the odd pad pixel
on the right), which already shows at its first layer; whatever the trained network adds at a layer,
on the same input and the same cells, is the trained weights' own asymmetry, not the placement's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from leam import core
from leam.device import padded_forward, resolve_batch_size
from leam.embedding import embed_frames, reference_embeddings, to_model_input
from leam.errors import LeamError
from leam.metrics.stats import bootstrap_ci
from leam.parsing.classes import CLASS_ID
from leam.placement import PLACEMENTS, CellGeometry, geometries_from_cells
from leam.topt import top_fraction_mask

if TYPE_CHECKING:  # annotations only
    from leam.config import LeamParams
    from leam.models.spec import ModelSpec

__all__ = ["MIRROR_68", "PAIRS", "placement_geometries", "mirror_faces", "region_sides", "side_shares", "horizontal_centroid",
           "model_symmetry", "summarise_symmetry", "symmetry_metrics", "mirror_symmetrised", "symmetry_control",
           "summarise_control", "WEIGHTS"]

MIRROR_68 = np.array(
    list(range(16, -1, -1))                      # jaw 0..16
    + list(range(26, 21, -1)) + list(range(21, 16, -1))   # brows 17..21 <-> 26..22
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]    # nose bridge, nostrils
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60] + [67, 66, 65])       # inner lips
"""Index permutation of dlib's 68 landmarks under a horizontal mirror (point k of the mirror = point MIRROR_68[k])."""

FACE_CLASSES = ("skin", "nose", "left_eye", "right_eye", "left_brow", "right_brow", "upper_lip", "lower_lip",
                "inner_mouth")
MOUTH_CLASSES = ("upper_lip", "lower_lip", "inner_mouth")
PAIRS = ("eyes", "brows", "mouth", "face")
WEIGHTS = ("trained", "mirror_symmetrised")
"""The two networks of :func:`symmetry_control`: as trained, and every kernel averaged with its mirror image."""


def mirror_faces(frames: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror analysis frames (N, S, S, 3) and their landmarks (N, 68, 2): x -> S - 1 - x, points relabelled."""
    size = frames.shape[2]
    mirrored = np.ascontiguousarray(np.asarray(frames)[:, :, ::-1])
    points = np.asarray(landmarks, dtype=np.float64).copy()
    points[..., 0] = size - 1 - points[..., 0]
    return mirrored, points[:, MIRROR_68]


def region_sides(labels: np.ndarray, landmarks: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Boolean (N, S, S) masks of each pair's (subject's left, subject's right) part from parser labels.

    labels: (N, S, S) canonical class ids in the analysis frame; landmarks: (N, 68, 2) frame pixels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] != len(landmarks):
        raise LeamError(f"labels {labels.shape} do not match {len(landmarks)} landmark sets")
    size = labels.shape[-1]
    midline = np.asarray(landmarks)[:, 27:31, 0].mean(axis=1)
    image_right = np.arange(size)[None, None, :] > midline[:, None, None]  # subject's left side
    image_left = np.arange(size)[None, None, :] < midline[:, None, None]

    def of(names) -> np.ndarray:
        return np.isin(labels, [CLASS_ID[name] for name in names])

    mouth, face = of(MOUTH_CLASSES), of(FACE_CLASSES)
    return {
        "eyes": (labels == CLASS_ID["left_eye"], labels == CLASS_ID["right_eye"]),
        "brows": (labels == CLASS_ID["left_brow"], labels == CLASS_ID["right_brow"]),
        "mouth": (mouth & image_right, mouth & image_left),
        "face": (face & image_right, face & image_left),
    }


def side_shares(selected: torch.Tensor, sides: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Share of each map's selected mass on each side: selected (N, L, S, S) -> {pair: (N, L, 2)} (left, right).

    ``selected`` is a top-t mask (as float) or a non-negative map; shares are of the map's total mass.
    """
    total = selected.sum(dim=(-2, -1)).clamp_min(torch.finfo(selected.dtype).tiny)
    out = {}
    for pair, (left, right) in sides.items():
        parts = [(selected * torch.as_tensor(mask, dtype=selected.dtype)[:, None]).sum(dim=(-2, -1)) / total
                 for mask in (left, right)]
        out[pair] = torch.stack(parts, dim=-1).numpy()
    return out


def horizontal_centroid(maps: torch.Tensor) -> torch.Tensor:
    """Mass-weighted mean column (frame pixels) of non-negative maps (N, L, S, S) -> (N, L); NaN without mass."""
    columns = torch.arange(maps.shape[-1], dtype=maps.dtype, device=maps.device)
    mass = maps.sum(dim=(-2, -1))
    centroid = (maps.sum(dim=-2) * columns).sum(dim=-1) / mass
    return torch.where(mass > 0, centroid, torch.full_like(centroid, float("nan")))


def _ratio_with_ci(left: np.ndarray, right: np.ndarray, draws: np.ndarray, name: str) -> dict[str, float]:
    """Ratio of the mean left to the mean right share (NaN without right mass) and its bootstrap 95% CI;
    draws (B, n) resample the n images."""
    ratio = left.mean() / right.mean() if right.mean() > 0 else np.nan
    boot_right = right[draws].mean(axis=1)
    boot = left[draws].mean(axis=1) / np.where(boot_right > 0, boot_right, np.nan)
    low, high = (np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan, np.nan))
    return {name: ratio, f"{name}_low": low, f"{name}_high": high}


def summarise_symmetry(per_image: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per (model, placement, layer): L/R ratios of mean shares and the mean flip bias, each with a 95% CI.

    per_image: one row per (model, placement, layer, image) with columns ``grid``, ``<pair>_left``,
    ``<pair>_right`` for every pair and ``flip_bias_px``. The ratio CI resamples images.
    """
    rows = []
    for (model, placement, layer), group in per_image.groupby(["model", "placement", "layer"], sort=False):
        row = {"model": model, "placement": placement, "layer": layer, "grid": int(group.grid.iloc[0]),
               "images": len(group)}
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(group), size=(n_boot, len(group)))
        for pair in PAIRS:
            row.update(_ratio_with_ci(group[f"{pair}_left"].to_numpy(), group[f"{pair}_right"].to_numpy(), draws,
                                      f"{pair}_lr"))
        bias = group.flip_bias_px.to_numpy()
        bias = bias[np.isfinite(bias)]
        row["flip_bias_px"] = float(bias.mean()) if len(bias) else np.nan
        row["flip_bias_low"], row["flip_bias_high"] = bootstrap_ci(bias, n_boot, seed) if len(bias) > 1 else (np.nan, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


Geometries = dict[str, "dict[str, CellGeometry] | None"]
"""Cell geometries per placement (:data:`leam.placement.PLACEMENTS`; None for ``centred``)."""


def placement_geometries(model: nn.Module, spec: ModelSpec, layers: Sequence[str],
                         probe: tuple[np.ndarray, np.ndarray], padding: float, record: dict | None = None
                         ) -> Geometries:
    """The network's cell geometries under every placement, once per network for both measurements.

    ``record``: the leam stage's ``layers.json`` of this network, or None. When it was made with these
    ``layers``, the geometry of its placement is the one it recorded (``cells``, centres rounded to 1e-4
    input pixels; :func:`leam.placement.geometries_from_cells`), so the maps here are placed exactly as the
    stored ones and ``effective_field`` is not measured twice (about 3.5 s a network on 2 cores). The
    other placements are traced or measured on ``probe`` (the leam stage's probe frames and landmarks).
    """
    recorded = None
    if record and record.get("cells") and list(record.get("layers", []))[:-1] == list(layers):
        recorded = record.get("placement")
    return {placement: geometries_from_cells(record["cells"], spec.input_size) if placement == recorded
            else core.frame_geometries(model, spec, layers, placement, *probe, padding) for placement in PLACEMENTS}


def _seeded_plan(index: pd.DataFrame, cfg: LeamParams, seed: int, max_images: int) -> pd.DataFrame:
    """The reference plan (``leam.reference``) of ``max_images`` photos drawn with ``seed``, in index order;
    a smaller ``max_images`` gives the first photos of the same draw."""
    plan, _ = core.select_references(index, cfg.reference, cfg.baseline_index)
    rng = np.random.default_rng(seed)
    return plan.iloc[np.sort(rng.permutation(len(plan))[:max_images])].reset_index(drop=True)


def model_symmetry(model: nn.Module, spec: ModelSpec, layers: Sequence[str], frames: np.ndarray,
                   landmarks: np.ndarray, labels: np.ndarray, index: pd.DataFrame,
                   geometries: Geometries, cfg: LeamParams, *, padding: float, threshold: float,
                   seed: int, max_images: int, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Per-image symmetry rows of one network for every placement (see the module docstring).

    frames (N, S, S, 3) uint8, landmarks (N, 68, 2) frame pixels and labels (N, S, S) canonical class ids
    are the photos with parser labels, ``index`` their aligned index (row i = array row i); geometries:
    the network's cells under every placement (:func:`placement_geometries`). ``cfg`` is the
    ``leam`` params group (references, sign, negative activations, overall map, batch size); ``max_images``
    photos are drawn with ``seed``; ``threshold`` is the top-t fraction whose L/R shares are measured;
    ``device``: where the network runs (``symmetry.device``; the model is moved there, the maps come back).
    Columns: model, placement, layer, grid (cells a side, receptive_field; 0 for overall), image_id,
    flip_bias_px, ``<pair>_left``, ``<pair>_right`` for every pair of :data:`PAIRS`.
    """
    plan = _seeded_plan(index, cfg, seed, max_images)
    model = model.to(device)
    batch = resolve_batch_size(cfg.batch_size, device, lambda: 2 * core.pass_bytes(model, spec, layers, frames.shape[1]),
                               "leam.batch_size")  # two passes (photo, mirror) are alive at once
    needed = np.unique(np.concatenate([plan.row.to_numpy(), *map(np.asarray, plan.reference_rows)]))
    embeddings = torch.zeros((len(frames), spec.embedding_dim))  # only the rows the subset needs are filled
    embeddings[needed] = embed_frames(model, spec, frames[needed], landmarks[needed], padding, batch, device)
    references = reference_embeddings(F.normalize(embeddings, dim=1), plan.reference_rows)
    rows = plan.row.to_numpy()
    names = [*layers, "overall"]

    def maps_of(images, points, refs, placement) -> torch.Tensor:
        """Layer maps plus the overall map (N, L + 1, S, S) under one placement."""
        result = core.frame_leam_maps(model, spec, images, points, refs, layers, padding, cfg.sign,
                                      cfg.negative_activations, geometries[placement])
        return torch.cat([result.maps, core.overall_map(result.maps, cfg.overall)[:, None]], dim=1).cpu()

    out = []
    for start in tqdm(range(0, len(rows), batch), desc=f"symmetry {spec.name}", unit="batch"):
        chunk, refs = rows[start:start + batch], references[start:start + batch]
        sides = region_sides(labels[chunk], landmarks[chunk])
        mirrored, mirrored_points = mirror_faces(frames[chunk], landmarks[chunk])
        for placement in PLACEMENTS:
            maps = maps_of(frames[chunk], landmarks[chunk], refs, placement)
            flipped_back = maps_of(mirrored, mirrored_points, refs, placement).flip(-1)
            bias = ((horizontal_centroid(maps) - horizontal_centroid(flipped_back)) / 2).numpy()
            n, count, size = maps.shape[0], maps.shape[1], maps.shape[-1]
            top = top_fraction_mask(maps.reshape(n * count, size, size), threshold).reshape(maps.shape)
            shares = side_shares(top.to(torch.float32), sides)
            for i, row in enumerate(chunk):
                for j, layer in enumerate(names):
                    record = {"model": spec.name, "placement": placement, "layer": layer,
                              "image_id": index.image_id[row], "flip_bias_px": float(bias[i, j])}
                    for pair in PAIRS:
                        record[f"{pair}_left"], record[f"{pair}_right"] = shares[pair][i, j]
                    out.append(record)
    frame = pd.DataFrame(out)
    grids = {layer: geometry.grid[0] for layer, geometry in geometries["receptive_field"].items()}
    frame.insert(3, "grid", frame.layer.map(grids).fillna(0).astype(int))
    return frame


def symmetry_metrics(summary: pd.DataFrame, threshold: float, control: pd.DataFrame | None = None) -> dict:
    """metrics/symmetry.json: per model, placement and layer the L/R ratios and the flip bias; with
    ``control`` (:func:`summarise_control`), per model, weights, placement and layer its centre offset,
    half L/R ratio and invariance (rounded to 3 places)."""
    document: dict = {"threshold": threshold, "models": {}}
    for row in summary.itertuples(index=False):
        entry = {"grid": row.grid, "images": row.images, "flip_bias_px": round(row.flip_bias_px, 3)}
        for pair in PAIRS:
            entry[f"{pair}_lr"] = round(float(getattr(row, f"{pair}_lr")), 3)
        document["models"].setdefault(row.model, {}).setdefault(row.placement, {})[row.layer] = entry
    if control is not None and len(control):
        document["control"] = {}
        for row in control.itertuples(index=False):
            entry = {"grid": row.grid, "images": row.images, "invariance": round(row.invariance, 4),
                     "centre_offset_px": round(row.centre_offset_px, 3), "half_left": round(row.half_left, 3),
                     "half_right": round(row.half_right, 3), "half_lr": round(float(row.half_lr), 3)}
            (document["control"].setdefault(row.model, {}).setdefault(row.weights, {})
             .setdefault(row.placement, {}))[row.layer] = entry
    return document


def mirror_symmetrised(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose every kernel is averaged with its horizontal mirror image.

    Convolutions (every 4-D ``weight`` with kw > 1; of a ``LopsidedConv2d`` only its original kernel, not
    the zero taps it grew) become w -> (w + w[..., ::-1]) / 2, and a dense layer fed by a flattened grid
    (C, H, W) averages each weight with that of the mirrored grid position (the flattening order is read
    off one forward pass of ``example``, (N, 3, s, s) model inputs). The copy has no side of its own: only
    the chain's geometry (no padding, TF SAME's odd pixel on the right) can still favour one. Its
    ``invariance`` in :func:`symmetry_control` says how closely it embeds a face and its mirror alike.
    """
    import copy

    from leam.models.compile import LopsidedConv2d

    mirrored = copy.deepcopy(model)
    with torch.no_grad():
        for module in mirrored.modules():
            kernel = getattr(module, "weight", None)
            if not (isinstance(kernel, torch.Tensor) and kernel.ndim == 4 and kernel.shape[-1] > 1):
                continue
            if isinstance(module, LopsidedConv2d):  # the grown zero column stays where it is
                width, left, right = module.receptive_window[1][0], module.pads[2], module.pads[3]
                kernel = kernel[..., 1:] if left < right and kernel.shape[-1] > width else kernel[..., :width]
            kernel.copy_((kernel + kernel.flip(-1)) / 2)
        for dense, order in _flattened_grids(mirrored, example).items():
            axis = _DENSE_INPUT_AXIS[type(dense)]
            dense.weight.copy_((dense.weight + dense.weight.index_select(axis, order)) / 2)
    return mirrored


def _dense_input_axes() -> dict[type, int]:
    from leam.models.graph import Linear as GraphLinear  # weight (in, out), as TF stores it

    return {nn.Linear: 1, GraphLinear: 0}


_DENSE_INPUT_AXIS = _dense_input_axes()
"""Dense layer types and the axis of their ``weight`` that runs over the input features."""


def _flattened_grids(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """For each dense layer (:data:`_DENSE_INPUT_AXIS`) whose input is a flattened (C, H, W) grid: the index of each input feature's
    mirror image (same channel and row, column W - 1 - w).

    One pass lists, per dense layer, the modules before it whose output is a 4-D grid of as many values;
    then, latest first, one candidate's output is replaced by its own position numbers until the dense
    layer receives a permutation of them: the flattening order itself (a tap whose output nothing reads
    changes nothing and is passed over). Dense layers fed by pooled vectors are left out.
    """
    produced: list[tuple[nn.Module, int]] = []
    candidates: dict[nn.Module, list[nn.Module]] = {}

    def note_grid(module, _, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            produced.append((module, output[0].numel()))

    def note_dense(module, args):
        size = args[0].shape[-1]
        candidates[module] = list(dict.fromkeys(m for m, numel in reversed(produced) if numel == size))

    hooks = [m.register_forward_pre_hook(note_dense) if type(m) in _DENSE_INPUT_AXIS else m.register_forward_hook(note_grid)
             for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    orders = {}
    for linear, sources in candidates.items():
        for source in sources:
            order = _mirrored_order(model, example[:1], source, linear)
            if order is not None:
                orders[linear] = order
                break
    return orders


def _mirrored_order(model: nn.Module, example: torch.Tensor, source: nn.Module, linear: nn.Module
                    ) -> torch.Tensor | None:
    """The dense layer's mirror-feature index if it reads ``source``'s 4-D output flattened; else None."""
    seen: dict = {}

    def numbered(_, __, output):
        seen["shape"] = tuple(output.shape[1:])
        return torch.arange(output[0].numel(), dtype=output.dtype, device=output.device).reshape(output.shape)

    def read(_, args):
        seen["flat"] = args[0][0].round().long()

    hooks = [source.register_forward_hook(numbered), linear.register_forward_pre_hook(read)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    flat = seen.get("flat")
    if flat is None or "shape" not in seen:
        return None
    numel = flat.numel()
    positions = torch.arange(numel, device=flat.device)
    if not torch.equal(flat.sort().values, positions):
        return None
    mirror_of = positions.reshape(seen["shape"]).flip(-1).flatten()  # grid position -> its mirror's position
    feature_of = torch.empty_like(flat)
    feature_of[flat] = positions  # grid position -> dense input feature
    return feature_of[mirror_of[flat]].cpu()


def symmetry_control(model: nn.Module, spec: ModelSpec, layers: Sequence[str], frames: np.ndarray,
                     landmarks: np.ndarray, index: pd.DataFrame, geometries: Geometries,
                     cfg: LeamParams, *, padding: float, threshold: float, seed: int, max_images: int,
                     device: torch.device | str = "cpu") -> pd.DataFrame:
    """Per-image rows of the symmetric-input control (module docstring) for one network.

    The photos are the first ``max_images`` of :func:`model_symmetry`'s seeded draw (the same ``seed``),
    each seen through the model's own warp and made exactly symmetric in the model input, (x + flip x) / 2;
    its reference is the symmetric input of its reference photo(s), embedded by the same weights.
    The maps are placed the run's way (``cfg.placement``) and LayerCAM's (``centred``), with the trained
    network's cells (``geometries``, :func:`placement_geometries`) for both weights, so only the kernels differ. Columns: model,
    weights (:data:`WEIGHTS`), placement, layer, grid (cells a side; 0 for overall), image_id, invariance
    (cosine between the weights' embeddings of the natural input and of its mirror image; 1 =
    mirror-invariant), centre_offset_px (horizontal mass centre of the map on the model input minus the
    input's centre, model-input pixels; + = image right = subject's left), half_left, half_right (shares
    of the top-``threshold`` pixels in the subject's left / right half of the input).
    """
    plan = _seeded_plan(index, cfg, seed, max_images)
    model = model.to(device)
    size = spec.input_size
    batch = resolve_batch_size(cfg.batch_size, device, lambda: core.pass_bytes(model, spec, layers, frames.shape[1]),
                               "leam.batch_size")
    needed = np.unique(np.concatenate([plan.row.to_numpy(), *map(np.atleast_1d, plan.reference_rows)]))
    position = {int(row): i for i, row in enumerate(needed)}
    natural = to_model_input(spec, frames[needed], landmarks[needed], padding, device)[0]
    symmetric = (natural + natural.flip(-1)) / 2
    photos = [position[int(row)] for row in plan.row]
    reference_positions = [[position[int(row)] for row in np.atleast_1d(rows)] for rows in plan.reference_rows]
    subject_left = np.repeat((np.arange(size) > (size - 1) / 2)[None, None], size, axis=1)  # image right half
    placements = tuple(dict.fromkeys((cfg.placement, "centred")))  # the run's own and LayerCAM's
    grids = {layer: geometry.grid[0] for layer, geometry in geometries["receptive_field"].items()}
    out = []
    bar = tqdm(total=len(WEIGHTS) * len(placements) * math.ceil(len(photos) / batch),
               desc=f"symmetry control {spec.name}", unit="pass")
    for weights in WEIGHTS:
        net = model if weights == "trained" else mirror_symmetrised(model, natural[:1])
        with torch.no_grad():
            units = torch.cat([F.normalize(padded_forward(net, symmetric[i:i + batch]), dim=1)
                               for i in range(0, len(symmetric), batch)])
            chosen, half = natural[photos], max(1, batch // 2)  # photo and mirror in one pass
            invariance = torch.cat([F.cosine_similarity(*padded_forward(
                net, torch.cat([chosen[i:i + half], chosen[i:i + half].flip(-1)])).chunk(2), dim=1)
                for i in range(0, len(chosen), half)]).cpu().numpy()
        references = reference_embeddings(units, reference_positions)
        for placement in placements:
            for start in range(0, len(photos), batch):
                bar.update()
                chunk = photos[start:start + batch]
                result = core.leam_maps(net, symmetric[chunk], references[start:start + batch], layers, cfg.sign,
                                        cfg.negative_activations, geometries[placement])
                maps = torch.cat([result.maps, core.overall_map(result.maps, cfg.overall)[:, None]], dim=1).cpu()
                offset = (horizontal_centroid(maps) - (size - 1) / 2).numpy()
                n, count = maps.shape[:2]
                top = top_fraction_mask(maps.reshape(n * count, size, size), threshold).reshape(maps.shape)
                left_half = np.repeat(subject_left, n, axis=0)
                shares = side_shares(top.to(torch.float32), {"half": (left_half, ~left_half)})
                for i in range(n):
                    row = plan.row[start + i]
                    for j, layer in enumerate([*layers, "overall"]):
                        out.append({"model": spec.name, "weights": weights, "placement": placement, "layer": layer,
                                    "image_id": index.image_id[row], "invariance": float(invariance[start + i]),
                                    "centre_offset_px": float(offset[i, j]),
                                    "half_left": float(shares["half"][i, j, 0]),
                                    "half_right": float(shares["half"][i, j, 1])})
    bar.close()
    frame = pd.DataFrame(out)
    frame.insert(4, "grid", frame.layer.map(grids).fillna(0).astype(int))
    return frame


def summarise_control(per_image: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per (model, weights, placement, layer) of :func:`symmetry_control`'s rows: the mean centre offset
    with its 95% CI, the mean shares of the top-t pixels in each half, their L/R ratio with its CI (NaN
    when the right half holds none) and the mean invariance."""
    rows = []
    for (model, weights, placement, layer), group in per_image.groupby(["model", "weights", "placement", "layer"],
                                                                       sort=False):
        offset = group.centre_offset_px.to_numpy()
        offset = offset[np.isfinite(offset)]
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(group), size=(n_boot, len(group)))
        row = {"model": model, "weights": weights, "placement": placement, "layer": layer,
               "grid": int(group.grid.iloc[0]), "images": len(group), "invariance": float(group.invariance.mean()),
               "centre_offset_px": float(offset.mean()) if len(offset) else np.nan,
               "half_left": float(group.half_left.mean()), "half_right": float(group.half_right.mean())}
        row["centre_offset_low"], row["centre_offset_high"] = (bootstrap_ci(offset, n_boot, seed) if len(offset) > 1
                                                               else (np.nan, np.nan))
        row.update(_ratio_with_ci(group.half_left.to_numpy(), group.half_right.to_numpy(), draws, "half_lr"))
        rows.append(row)
    return pd.DataFrame(rows)
