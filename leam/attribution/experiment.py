"""The explain experiment: every attribution method's deletion and insertion curves, per source and target network.

:func:`plan` chooses the photos (those every source network has LEAM outputs for, with their LEAM
references: :func:`leam.occlusion.plan_experiment`, after a seeded subset of ``max_identities``
identities) and their face regions. :func:`run` computes, per source network, every method's maps
(:mod:`leam.attribution.methods`; the layers, negative activations and cell placement of that source's
leam run, from its ``layers.json``) and scores them with the source itself and with each transfer target
(:func:`leam.attribution.curves.image_curves`). Nothing here reads or writes files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from leam.attribution.curves import curve_steps, image_curves, tie_order
from leam.attribution.methods import SourceBatch, build_methods
from leam.embedding import frames_to_tensor, reference_embeddings
from leam.errors import LeamError, check_choice
from leam.occlusion import Experiment, Target, plan_experiment
from leam.occlusion.fills import FILLS
from leam.placement import geometries_from_cells

if TYPE_CHECKING:  # annotations only
    from leam.models.spec import ModelSpec

__all__ = ["CURVE_TABLE_COLUMNS", "Design", "Source", "Timing", "check_scope", "plan", "run"]

log = logging.getLogger(__name__)

CURVE_TABLE_COLUMNS = ["source", "target", "method", "curve", "fraction", "image_id", "identity", "gender", "cosine"]
"""Columns of the per-photo curve table :func:`run` returns."""


@dataclass(frozen=True)
class Design:
    """What to compute: methods (``explain.methods``), their maps / patch options, the steps, the fill."""

    methods: tuple[str, ...]
    maps: tuple[str, ...]
    fractions: tuple[float, ...]
    fill: str
    patch: int
    stride: int
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_choice("explain.fill", self.fill, FILLS)
        curve_steps(self.fractions)
        build_methods(self.methods, maps=self.maps, patch=self.patch, stride=self.stride)


@dataclass
class Source:
    """A source network: its registry spec, loaded module and its leam run's ``layers.json`` record."""

    spec: ModelSpec
    module: torch.nn.Module
    record: dict

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(name for name in self.record["layers"] if name != "overall")


@dataclass
class Timing:
    """Seconds spent per method (maps) and per target (curves)."""

    maps: dict[str, float] = field(default_factory=dict)
    curves: dict[str, float] = field(default_factory=dict)


def plan(index: pd.DataFrame, frames: np.ndarray, landmarks: np.ndarray,
         leam_outputs: Mapping[str, tuple[np.ndarray, dict, pd.DataFrame]], max_identities: int = 0,
         max_per_identity: int = 0, seed: int = 0, reference_policy: str = "baseline",
         face_region_policy: str = "landmarks", labels: np.ndarray | None = None) -> Experiment:
    """The photos to explain (see the module docstring): :class:`leam.occlusion.Experiment` of the sources.

    ``max_identities`` (0 = all) identities are drawn with ``seed`` among those every source has maps of;
    then at most ``max_per_identity`` photos each (0 = all), as the occlusion stage draws them.
    """
    metas = {model: meta for model, (_, _, meta) in leam_outputs.items()}
    common = set.intersection(*(set(meta.identity.astype(str)) for meta in metas.values())) if metas else set()
    identities = sorted(common)
    if max_identities and len(identities) > max_identities:
        rng = np.random.default_rng(seed)
        identities = sorted(rng.choice(identities, size=max_identities, replace=False).tolist())
    keep = set(identities)
    chosen = {model: (maps, info, meta[meta.identity.astype(str).isin(keep)])
              for model, (maps, info, meta) in leam_outputs.items()}
    return plan_experiment(index, frames, landmarks, chosen, ["overall"], max_per_identity, seed, reference_policy,
                           face_region_policy, labels)


def _unit_references(target: Target, experiment: Experiment, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N, D) reference embeddings under ``target`` of the experiment's photos (the clean frames' unit embeddings)."""
    rows = np.arange(len(experiment.frames))
    unit = torch.cat([target.embed(frames_to_tensor(experiment.frames[rows[s:s + batch_size]], device),
                                   rows[s:s + batch_size]) for s in range(0, len(rows), batch_size)])
    return reference_embeddings(unit, experiment.reference_rows)  # Target.embed is unit-norm already


def run(experiment: Experiment, sources: Iterable[Source], targets: Mapping[str, Target], design: Design,
        transfer: Sequence[str] = (), padding: float = 0.5, device: torch.device | str = "cpu"
        ) -> tuple[pd.DataFrame, Timing]:
    """Curves of every method of ``design`` for every source (scored by itself and by each of ``transfer``).

    sources: may be a generator (one network loaded at a time); targets: every network that scores
    curves, by name (each source's own name included), built on ``experiment.landmarks`` (``Target.from_spec``).
    Returns the per-photo curve table (``CURVE_TABLE_COLUMNS``) and the time spent.
    """
    device = torch.device(device)
    steps = curve_steps(design.fractions)
    methods = build_methods(design.methods, maps=design.maps, patch=design.patch, stride=design.stride)
    selection = experiment.selection
    ids = selection.image_id.tolist()
    references: dict[str, torch.Tensor] = {}
    timing, parts = Timing(), []
    for source in sources:
        name = source.spec.name
        judges = [name, *[t for t in transfer if t != name]]
        missing = [t for t in judges if t not in targets]
        if missing:
            raise LeamError(f"no target network {', '.join(missing)} to score {name}'s maps")
        for judge in judges:
            targets[judge].module.to(device)
            if judge not in references:
                references[judge] = _unit_references(targets[judge], experiment, design.batch_size, device)
        source.module.to(device)
        geometries = geometries_from_cells(source.record.get("cells"), source.spec.input_size)
        for start in range(0, len(ids), design.batch_size):
            stop = min(start + design.batch_size, len(ids))
            rows = experiment.image_rows[start:stop]
            batch = SourceBatch(
                model=source.module, spec=source.spec, target=targets[name], frames=np.asarray(experiment.frames[rows]),
                landmarks=experiment.landmarks[rows], rows=rows, references=references[name][start:stop],
                region=experiment.face_region[start:stop], image_ids=ids[start:stop], layers=source.layers,
                geometries=geometries, negative_activations=source.record.get("negative_activations", "keep"),
                padding=padding, seed=design.seed, fill=design.fill, batch_size=design.batch_size, device=device)
            scores: dict[str, torch.Tensor] = {}
            for method in methods:
                began = time.perf_counter()
                scores.update(method(batch))
                timing.maps[method.name] = timing.maps.get(method.name, 0.0) + time.perf_counter() - began
            region = torch.as_tensor(np.asarray(batch.region), device=device)
            order = tie_order(batch.image_ids, batch.frame_size, design.seed)
            for judge in judges:
                began = time.perf_counter()
                table = image_curves(targets[judge].embed, batch.frame_tensor, rows, references[judge][start:stop],
                                     region, scores, steps, design.fill, order, design.batch_size)
                timing.curves[judge] = timing.curves.get(judge, 0.0) + time.perf_counter() - began
                table["image"] += start
                parts.append(table.assign(source=name, target=judge))
            log.info("explain %s: photos %d-%d of %d scored by %s", name, start + 1, stop, len(ids), ", ".join(judges))
    if not parts:
        raise LeamError("no source network to explain (explain.sources is empty)")
    curves = pd.concat(parts, ignore_index=True)
    curves = curves.join(selection[["image_id", "identity", "gender"]], on="image")
    return curves[CURVE_TABLE_COLUMNS], timing


def check_scope(sources: Sequence[str], targets: Sequence[str], models: Sequence[str]) -> None:
    """Sources need the leam stage's outputs, so they must be in ``models``; targets must be registered."""
    from leam.models.registry import available_models

    outside = [name for name in sources if name not in models]
    if outside:
        raise LeamError(f"explain.sources has {', '.join(map(repr, outside))}, not in models ({', '.join(models)}): "
                        f"only those have LEAM outputs; add it to models or drop it")
    known = set(available_models())
    unknown = [name for name in targets if name not in known]
    if unknown:
        raise LeamError(f"explain.targets has {', '.join(map(repr, unknown))}, not a registered model; choose from: "
                        f"{', '.join(sorted(known))}")
