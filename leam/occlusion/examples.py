"""Report figures of the occlusion test: one image clean, occluded by its LEAM map, and by a random mask.

Panels are uint8 RGB in the analysis frame; they use the same fill, upsampling and ranking as the drops
(``leam.occlusion.fills``, ``leam.occlusion.masks``), so a panel shows exactly a mask that was scored.
"""

from __future__ import annotations

import numpy as np
import torch

from leam.examples import first_per_identity
from leam.occlusion.experiment import Experiment
from leam.occlusion.fills import fill_values, occlude
from leam.occlusion.masks import random_scores, upsample_maps
from leam.topt import pixel_ranks, top_count

__all__ = ["example_panel", "example_panels"]


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


def example_panels(experiment: Experiment, source: str, threshold: float, seed: int, fill: str,
                   count: int) -> list[tuple[str, np.ndarray]]:
    """``(image_id, example_panel)`` of ``count`` occluded images, guided by ``source``'s first map.

    The first image of each identity comes first (``leam.examples.first_per_identity``), then the others
    in selection order, so a few examples show different people.
    """
    selection = experiment.selection
    picks = first_per_identity(selection, count).index.tolist()
    picks += [i for i in selection.index if i not in set(picks)][:count - len(picks)]
    guide = experiment.guides[source][experiment.map_names[0]]
    return [(selection.image_id[p], example_panel(experiment.frames[experiment.image_rows[p]], guide[p],
                                                  selection.image_id[p], threshold, seed, fill)) for p in picks]
