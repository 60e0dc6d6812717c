"""What the paper's scale costs here: per-photo cost of each stage for each network, and a projection.

Measures, on a small real slice (the first ``--photos`` aligned frames of ``data/aligned``, or the face
mirror aligned here when that folder is missing), one warm pass each, on this machine's device
(``--device``, default auto: CUDA when visible):

  align       seconds per photo (dlib detection + landmarks + chip, ``--align-photos`` mirror photos)
  parse       seconds per photo (the landmark parser)
  models      seconds per photo and network (one forward, ``leam.embedding.embed_frames``)
  leam        seconds per photo and network (forward + backward, every default layer, stored maps)
  correlate   seconds per photo and network (region shares of the stored maps at every correlate threshold)
  similarity  seconds per photo pair and network (BC at every threshold x layer, each pair's own dot product,
              the stage's path at the paper's scale: leam.metrics.similarity.bhattacharyya_pairs), plus the
              top-t distributions of each photo's maps (``distributions``, per photo) spread over the pairs
  emd         seconds per photo pair and network given EMD (exact, one process: every ``emd_layers`` x
              ``emd_thresholds``), for the ``similarity.emd_max_pairs`` pairs per network that get it
  occlusion   seconds per photo, target network and image-forward (an occluded frame through the network)
  symmetry    = leam x 2 x placements (each photo and its mirror image, under every placement)
  explain     = (2 x fractions x rankings) image-forwards + one LEAM pass per photo, source and target

and projects the default params to ``--identities`` x ``--photos-per-identity`` photos and ``--networks``
networks (the paper: 1000 x ~20, 9 networks). Networks beyond the measured ones are assumed to cost the
mean of the measured networks (per photo, and in stored layers for disk); what grows with the network
count beyond that is stated in each row: occlusion forwards per photo and target are
1 + thresholds x (maps + (sources - 1) + random kinds x repeats) with every network a source (transfer),
so the occlusion stage grows with networks squared; explain and symmetry keep their capped scopes
(``explain.max_identities`` x ``max_images_per_identity``, ``symmetry.max_images``; 0 = every photo).
Similarity pairs: every same-identity pair, ``similarity.different_per_same`` different pairs per same pair;
BC scores all of them, EMD a seeded ``similarity.emd_max_pairs`` of them per network (0 = all).
Disk counts the DVC outputs that grow with the photos (frames, labels, maps, embeddings, per-row CSVs at
~100 bytes a row). Timings are one process on ``torch.get_num_threads()`` threads, stages in sequence;
fewer than 16 photos inflate the per-photo cost of a pass (it is padded to 16 rows, leam.device).

    python -m benchmarks.scale                      # 16 photos, every default network
    python -m benchmarks.scale --quick              # CI size: 16 photos, dlib_resnet only (~20 s here)
    python -m benchmarks.scale --models dlib_resnet mobileface --photos 8
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: this folder must not shadow the ``leam`` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from leam import core  # noqa: E402
from leam.config import Config, load_config  # noqa: E402
from leam.device import resolve_device  # noqa: E402
from leam.embedding import embed_frame_tensors, embed_frames, frames_to_tensor  # noqa: E402
from leam.metrics.correlation import NUM_PARTS, class_shares, label_fractions  # noqa: E402
from leam.metrics.distributions import cell_centres  # noqa: E402
from leam.metrics.similarity import bhattacharyya_pairs, emd_pair  # noqa: E402
from leam.models.registry import get_spec  # noqa: E402
from leam.parsing import parse_landmarks  # noqa: E402
from leam.parsing.classes import REGIONS  # noqa: E402
from leam.placement import PLACEMENTS  # noqa: E402
from leam.topt import effective_thresholds, top_fraction_mask  # noqa: E402

ROW_BYTES = 100
"""Bytes a per-row CSV line takes (drops.csv, pairs tables): the disk estimate of the tabular outputs."""
SHARE_ROWS = NUM_PARTS + len(REGIONS) + 1
"""Per-image share rows per photo, network and layer at the top-level threshold (correlate's per-image CSV): at most
every class + not_labelled and every region + not_labelled (the parser's unavailable classes are left out)."""
PER_LAYER_METHODS = 3
"""explain methods with one ranking per map of ``explain.maps`` (leam, leam_opposes, gradcam)."""


@dataclass(frozen=True)
class Slice:
    """The measured photos: frames (N, S, S, 3) uint8, landmarks (N, 68, 2), identities (N,), and the
    mirror paths whose alignment is timed (may be empty: align is then not measured)."""

    frames: np.ndarray
    landmarks: np.ndarray
    identities: np.ndarray
    align_paths: list[str]


def timed(run: Callable[[], object]) -> float:
    """Wall seconds of one call after one warm-up call (first calls pay allocation and kernel selection)."""
    run()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def load_slice(photos: int, align_photos: int, aligned: Path = Path("data/aligned")) -> Slice:
    """The first ``photos`` aligned frames (``data/aligned``, else the mirror aligned here) and the mirror
    paths of ``align_photos`` photos for the align timing."""
    from leam.io import read_aligned

    mirror = Path(os.environ.get("LEAM_FACES_MIRROR") or Path(__file__).resolve().parents[2] / "shared" / "faces")
    manifest = pd.read_csv(mirror / "manifest.csv") if (mirror / "manifest.csv").is_file() else None
    paths = [] if manifest is None else [str(mirror / f) for f in manifest.file[:align_photos]]
    if (aligned / "frames.npy").is_file():
        index, frames, landmarks = read_aligned(aligned)
        return Slice(np.asarray(frames[:photos]), np.asarray(landmarks[:photos]),
                     index.identity.to_numpy()[:photos], paths)
    from leam.align import align_images

    result = align_images([str(mirror / f) for f in manifest.file[:photos]], progress=False, workers=1)
    return Slice(result.frames, result.landmarks, manifest.identity.to_numpy()[:photos][result.kept], paths)


def measure(data: Slice, networks: list[str], config: Config, weights: Path, device: torch.device) -> pd.DataFrame:
    """Seconds per unit of each stage (columns stage, network, unit, seconds, layers, embedding_dim).

    ``network`` is ``-`` for the network-free stages (align, parse).
    """
    frames, landmarks, padding = data.frames, data.landmarks, config.align.padding
    n, size = len(frames), frames.shape[1]
    rows = []
    if data.align_paths:
        from leam.align import align_images

        align = config.align.model_dump()
        seconds = timed(lambda: align_images(data.align_paths, progress=False, **dict(align, workers=1)))
        rows.append(("align", "-", "photo", seconds / len(data.align_paths), 0, 0))
    rows.append(("parse", "-", "photo", timed(lambda: parse_landmarks(landmarks, size)) / n, 0, 0))
    labels = parse_landmarks(landmarks, size).labels
    grid = config.leam.store_size
    for name in networks:
        spec = get_spec(name)
        model = spec.load(weights).to(device)
        layers = spec.layers
        rows.append(("models", name, "photo",
                     timed(lambda: embed_frames(model, spec, frames, landmarks, padding, n, device)) / n, 0, 0))
        embeddings = embed_frames(model, spec, frames, landmarks, padding, n, device)
        references = F.normalize(embeddings.roll(1, 0), dim=1)  # another photo as the reference
        geometries = core.frame_geometries(model, spec, layers, config.leam.placement, frames[:2], landmarks[:2],
                                           padding)

        def leam_pass():
            result = core.frame_leam_maps(model, spec, frames, landmarks, references, layers, padding,
                                          config.leam.sign, config.leam.negative_activations, geometries)
            stored = core.area_downsample(result.maps, grid)
            return torch.cat([stored, core.overall_map(stored)[:, None]], dim=1).cpu().numpy()

        maps = leam_pass()
        rows.append(("leam", name, "photo", timed(leam_pass) / n, len(layers) + 1, spec.embedding_dim))
        fractions = label_fractions(labels, grid)
        thresholds = sorted({*config.correlate.thresholds, config.threshold})
        rows.append(("correlate", name, "photo", timed(lambda: class_shares(maps, fractions, thresholds)) / n, 0, 0))
        dist_seconds, bc_seconds, emd_seconds = _pair_seconds(maps, config, size)
        rows.append(("similarity", name, "pair", bc_seconds, 0, 0))
        rows.append(("distributions", name, "photo", dist_seconds, 0, 0))
        rows.append(("emd", name, "pair", emd_seconds, 0, 0))
        target_frames = frames_to_tensor(frames, device)
        matrices = np.asarray(spec.input_warp(landmarks, size, padding))
        rows.append(("occlusion", name, "forward", timed(
            lambda: embed_frame_tensors(model, target_frames, matrices, spec.input_size)) / n, 0, 0))
    return pd.DataFrame(rows, columns=["stage", "network", "unit", "seconds", "layers", "embedding_dim"])


def _pair_seconds(maps: np.ndarray, config: Config, frame_size: int) -> tuple[float, float, float]:
    """Seconds of one network's similarity work: (top-t distributions of every layer at every similarity
    threshold per photo, their BC per pair, exact EMD of the overall map at the top-level threshold per pair
    times the EMD layers x thresholds).

    BC is timed on each pair's own dot product (``bhattacharyya_pairs``' path at the paper's scale, where the
    all-pairs matrix would cost N * N) over 1024 rows of these distributions and 2000 random pairs of them, so
    that, as at scale, the rows do not fit in the caches.
    """
    n, count, grid = maps.shape[0], maps.shape[1], maps.shape[-1]
    flat = torch.from_numpy(np.ascontiguousarray(maps.reshape(n * count, grid, grid)))
    thresholds = effective_thresholds(config.similarity.thresholds, config.threshold)

    def distributions(t: float) -> np.ndarray:
        top = flat.clamp_min(0) * top_fraction_mask(flat, t) if t < 1 else flat.clamp_min(0)
        mass = top.reshape(n, count, -1).numpy().astype(np.float64)
        return mass / np.maximum(mass.sum(axis=-1, keepdims=True), np.finfo(np.float64).tiny)

    dist_seconds = timed(lambda: [distributions(t) for t in thresholds]) / n
    rows = np.resize(np.arange(n), 1024)
    a, b = np.random.default_rng(0).integers(0, len(rows), size=(2, 2000))
    bc_seconds = 0.0
    for t in thresholds:
        dist = distributions(t)
        for layer in range(count):
            probs = dist[rows, layer]
            bc_seconds += timed(lambda: bhattacharyya_pairs(probs, a, b, matrix_max_waste=0)) / a.size
    overall = distributions(config.threshold)[:, -1]
    centres = cell_centres(grid, frame_size)
    pairs = [(i, (i + 1) % n) for i in range(n)]
    emd_seconds = timed(lambda: [emd_pair(overall[a], overall[b], centres) for a, b in pairs]) / len(pairs)
    emd_thresholds = {config.threshold, *config.similarity.emd_thresholds}  # as the stage counts them
    return dist_seconds, bc_seconds, emd_seconds * len(config.similarity.emd_layers) * len(emd_thresholds)


def project(costs: pd.DataFrame, config: Config, identities: int, per_identity: int, networks: int,
            frame_size: int) -> pd.DataFrame:
    """Hours and GB of each stage at ``identities`` x ``per_identity`` photos and ``networks`` networks.

    Per-network rows are the mean over the measured networks times ``networks`` (module docstring).
    Columns: stage, unit, seconds_per_unit (mean per network), units (at that scale, all networks), hours, disk_gb.
    """
    photos = identities * per_identity
    per_net = costs[costs.network != "-"].groupby("stage").seconds.mean()
    free = costs[costs.network == "-"].set_index("stage").seconds
    leam_rows = costs[costs.stage == "leam"]
    layers, dim = float(leam_rows.layers.mean()), float(leam_rows.embedding_dim.mean())
    grid = config.leam.store_size
    occ = config.occlusion
    thresholds = len({*occ.thresholds, config.threshold})
    forwards = 1 + thresholds * (len(occ.maps) + (networks - 1 if occ.transfer else 0) + len(occ.random)
                                 * occ.random_repeats)
    occluded = photos if occ.max_images_per_identity == 0 else identities * min(per_identity,
                                                                                 occ.max_images_per_identity)
    same = identities * math.comb(per_identity, 2)
    pairs = same * (1 + config.similarity.different_per_same)
    emd_pairs = pairs if config.similarity.emd_max_pairs == 0 else min(pairs, config.similarity.emd_max_pairs)
    bc_thresholds = effective_thresholds(config.similarity.thresholds, config.threshold)  # a score row each, per pair
    sym = min(photos, config.symmetry.max_images)
    ex = config.explain
    ex_photos = (identities if ex.max_identities == 0 else min(identities, ex.max_identities)) * \
        (per_identity if ex.max_images_per_identity == 0 else min(per_identity, ex.max_images_per_identity))
    rankings = len(ex.methods) + PER_LAYER_METHODS * (len(ex.maps) - 1)
    ex_pairs = len(ex.sources) * (1 + len([t for t in ex.targets if t not in ex.sources]) + len(ex.sources) - 1)
    explain_seconds = per_net.get("leam", 0) + 2 * len(ex.fractions) * rankings * per_net.get("occlusion", 0)
    rows = [
        ("align", "photo", free.get("align", np.nan), photos, photos * frame_size * frame_size * 3),
        ("parse", "photo", free.get("parse", np.nan), photos, photos * frame_size * frame_size),
        ("models", "photo x network", per_net["models"], photos * networks, photos * networks * dim * 4),
        ("leam", "photo x network", per_net["leam"], photos * networks, photos * networks * layers * grid * grid * 2),
        ("correlate", "photo x network", per_net["correlate"], photos * networks,
         photos * networks * layers * SHARE_ROWS * ROW_BYTES),
        ("similarity", "pair x network (BC; the maps' top-t distributions spread over the pairs)",
         per_net["similarity"] + per_net["distributions"] * photos / pairs, pairs * networks,
         pairs * networks * layers * len(bc_thresholds) * ROW_BYTES),
        ("emd", f"pair x network ({emd_pairs} pairs each)", per_net["emd"], emd_pairs * networks,
         emd_pairs * networks * 8),
        ("occlusion", f"forward ({forwards} per photo x target)", per_net["occlusion"],
         occluded * networks * forwards, occluded * networks * (forwards - 1) * ROW_BYTES),
        ("symmetry", f"photo x network ({sym} photos)", 2 * len(PLACEMENTS) * per_net["leam"], sym * networks,
         sym * networks * len(PLACEMENTS) * layers * ROW_BYTES),
        ("explain", f"photo x (source, target) ({ex_photos} photos, {ex_pairs} pairs)", explain_seconds,
         ex_photos * ex_pairs, ex_photos * ex_pairs * rankings * ROW_BYTES),
    ]
    table = pd.DataFrame(rows, columns=["stage", "unit", "seconds_per_unit", "units", "disk_bytes"])
    table["hours"] = table.seconds_per_unit * table.units / 3600
    table["disk_gb"] = table.disk_bytes / 1e9
    return table.drop(columns="disk_bytes")


def machine() -> str:
    """One line naming where the numbers come from."""
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"on {torch.get_num_threads()} threads{gpu}")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI size: 16 photos, 2 aligned, dlib_resnet only")
    parser.add_argument("--photos", type=int, default=16, help="aligned photos measured (default 16)")
    parser.add_argument("--align-photos", type=int, default=4, help="mirror photos whose alignment is timed")
    parser.add_argument("--models", nargs="+", help="networks measured (default: params.yaml models)")
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--photos-per-identity", type=int, default=20)
    parser.add_argument("--networks", type=int, default=9, help="networks projected (default 9, the paper)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--weights", default="data/models")
    args = parser.parse_args(argv)
    config = load_config()
    networks = args.models or (["dlib_resnet"] if args.quick else list(config.models))
    photos, align_photos = (16, 2) if args.quick else (args.photos, args.align_photos)
    device = resolve_device(args.device, "--device")
    data = load_slice(photos, align_photos)
    costs = measure(data, networks, config, Path(args.weights), device)
    table = project(costs, config, args.identities, args.photos_per_identity, args.networks, data.frames.shape[1])
    print(f"{machine()}; device {device.type}; {len(data.frames)} photos, networks: {', '.join(networks)}")
    print("\nper unit, measured (seconds):")
    print(costs.pivot_table(index="network", columns="stage", values="seconds", sort=False).to_string(
        float_format=lambda v: f"{v:.4f}"))
    print(f"\nprojected: {args.identities} identities x {args.photos_per_identity} photos, {args.networks} networks "
          f"(unmeasured networks cost the measured mean), default params:")
    total = pd.DataFrame([{"stage": "total", "unit": "", "seconds_per_unit": np.nan, "units": table.units.sum(),
                           "hours": table.hours.sum(), "disk_gb": table.disk_gb.sum()}])
    print(pd.concat([table, total], ignore_index=True).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return table


if __name__ == "__main__":
    main()
