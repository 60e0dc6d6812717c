"""Protect stage: cost of one PGD step per photo per source network, its scaling with the ensemble, in one run.

On the first ``--batch`` real aligned photos of ``data/aligned`` (references: the clean embeddings rolled by
one photo), for every network of ``--models`` (default: params.yaml ``models``; a network whose weights do not
load is skipped with its reason), best-of-``--repeats`` milliseconds per photo of
  - the baseline: one plain forward pass of the frames through the network's own warp (``Target.embed``, no
    graph), the cost the occlusion stage pays per version of a photo;
  - one PGD step: forward + backward through the warp and the network to the frame perturbation
    (``leam.protect.pgd.ensemble_score`` + ``torch.autograd.grad``, exactly one iteration of ``optimise``),
    and its ratio to the baseline;
then one step against ensembles of the first 1, 2, 3 networks of ``--ensemble`` (default ``protect.sources``
followed by the other loaded networks) and its ratio to the sum of those networks' single-source steps
(1.00 = an ensemble costs exactly its members; the members share nothing but the frames). Runs are
interleaved round by round (``benchmarks.leam.best_ms_per_image``). On ``--device`` (default
``protect.device``, ``auto`` = the GPU when one is visible) the same, synchronised; with a GPU visible and
``--device auto`` the CPU is measured too, for the GPU / CPU ratio.

Last, the projected PGD time of the params' protect scope: photos x optimised conditions x ``protect.steps``
x the measured per-photo step of the ``protect.sources`` ensemble (black, noise and blur need no PGD), beside
the stage's own ``data/protect/timing.json`` when one exists (its ``pgd`` seconds per photo-step).

    python -m benchmarks.protect [--batch 4] [--repeats 2] [--models dlib_resnet mobileface] [--device cpu]
    python -m benchmarks.protect --quick      # dlib_resnet + mobileface, batch 2, one repeat (smoke test)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from leam.config import load_config
from leam.device import resolve_device
from leam.embedding import frames_to_tensor
from leam.io import read_aligned
from leam.models.registry import get_spec, register_zoo
from leam.occlusion import Target
from leam.protect import Design, ensemble_score

WEIGHTS, ALIGNED = Path("data/models"), Path("data/aligned")


def best_ms(runs: dict[str, Callable[[], None]], batch: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best-of-``repeats`` (wall, CPU) milliseconds per photo of each run after one warm-up, interleaved round by
    round like ``benchmarks.leam.best_ms_per_image``; CPU time (this process, all threads) is the figure that a
    shared, loaded machine does not inflate."""
    best = {key: (float("inf"), float("inf")) for key in runs}
    for attempt in range(repeats + 1):
        for key, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if attempt:
                best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
    return {key: (1000.0 * w / batch, 1000.0 * c / batch) for key, (w, c) in best.items()}


def load_targets(names: list[str], landmarks: np.ndarray, frame_size: int, padding: float, device: torch.device
                 ) -> tuple[dict[str, Target], dict[str, float]]:
    """Each loadable network as a Target on ``device`` (eval, no parameter grads) and its load seconds."""
    targets, seconds = {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            spec = get_spec(name)
            module = spec.load(WEIGHTS).to(device).eval().requires_grad_(False)
        except Exception as error:  # a benchmark reports what it could not measure and goes on
            print(f"skipped {name}: {str(error).splitlines()[0]}")
            continue
        targets[name] = Target.from_spec(spec, module, landmarks, frame_size, padding)
        seconds[name] = time.perf_counter() - start
    return targets, seconds


def step_runs(targets: dict[str, Target], ensembles: list[list[str]], frames: torch.Tensor, rows: np.ndarray,
              device: torch.device) -> dict[str, Callable[[], None]]:
    """The timed runs: per network a plain forward and one PGD step; one PGD step per ensemble."""
    with torch.no_grad():
        references = {name: t.embed(frames, rows).roll(1, dims=0) for name, t in targets.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward(target: Target):
        with torch.no_grad():
            target.embed(frames, rows)
        sync()

    def step(sources: list[Target]):
        delta = torch.zeros_like(frames, requires_grad=True)
        score = ensemble_score(frames + delta, rows, sources, references)
        torch.autograd.grad(score.sum(), delta)
        sync()

    runs = {}
    for name, target in targets.items():
        runs[f"forward {name}"] = lambda t=target: forward(t)
        runs[f"step {name}"] = lambda t=target: step([t])
    for members in ensembles:
        if len(members) > 1:
            runs[f"step {' + '.join(members)}"] = lambda m=members: step([targets[n] for n in m])
    return runs


def measure(names: list[str], ensemble: list[str], frames: np.ndarray, landmarks: np.ndarray, padding: float,
            device: torch.device, repeats: int) -> tuple[dict[str, tuple[float, float]], list[list[str]], dict[str, float]]:
    """ms per photo of every run on ``device``, the ensembles measured and the networks' load seconds."""
    targets, loads = load_targets(names, landmarks, frames.shape[1], padding, device)
    order = [n for n in ensemble if n in targets] + [n for n in targets if n not in ensemble]
    ensembles = [order[:k] for k in (1, 2, 3) if len(order) >= k]
    x = frames_to_tensor(frames).to(device)
    ms = best_ms(step_runs(targets, ensembles, x, np.arange(len(frames)), device), len(frames), repeats)
    return ms, ensembles, loads


def report(ms: dict[str, tuple[float, float]], ensembles: list[list[str]], loads: dict[str, float],
           device: torch.device) -> None:
    print(f"\n{device.type}: ms per photo, best of the repeats, wall (CPU time of this process)")
    print(f"{'network':16s} {'load s':>6s} {'forward':>15s} {'PGD step':>15s} {'x forward':>9s}")
    for name in loads:
        (fw, fc), (sw, sc) = ms[f"forward {name}"], ms[f"step {name}"]
        print(f"{name:16s} {loads[name]:6.1f} {fw:7.1f} ({fc:6.1f}) {sw:7.1f} ({sc:6.1f}) {sw / fw:9.2f}")
    print(f"{'ensemble':36s} {'PGD step':>15s} {'sum of singles':>17s} {'ratio':>6s}")
    for members in ensembles:
        (w, c) = ms[f"step {' + '.join(members)}"]
        singles = [ms[f"step {n}"] for n in members]
        sw, sc = sum(v[0] for v in singles), sum(v[1] for v in singles)
        print(f"{' + '.join(members):36s} {w:7.1f} ({c:6.1f}) {sw:8.1f} ({sc:6.1f}) {w / sw:6.2f}")


def projected(config, ms: dict[str, float], index: pd.DataFrame) -> None:
    """The params' protect scope priced with the measured per-photo step of its source ensemble."""
    cfg = config.protect
    design = Design(tuple(cfg.maps), cfg.budget, tuple(cfg.budgets), cfg.epsilon, tuple(cfg.epsilons),
                    tuple(cfg.fills), tuple(cfg.random), cfg.sparse, cfg.person, cfg.steps)
    conditions = design.conditions()
    optimised = sum(c.fill == "optimised" for c in conditions)
    sizes = index.groupby("identity").size()
    sizes = sizes[sizes >= 2]  # a protected photo needs another photo of the person
    if cfg.max_identities:
        sizes = sizes.iloc[:cfg.max_identities]
    photos = int(np.minimum(sizes, cfg.max_images_per_identity).sum() if cfg.max_images_per_identity else sizes.sum())
    key = f"step {' + '.join(cfg.sources)}"
    nan = (float("nan"), float("nan"))
    wall, cpu = ms[key] if key in ms else [sum(ms.get(f"step {n}", nan)[i] for n in cfg.sources) for i in (0, 1)]
    jobs = photos * optimised * cfg.steps
    print(f"\nprojected protect scope (params.yaml): {photos} photos x {optimised} optimised conditions (of "
          f"{len(conditions)}) x {cfg.steps} steps x {wall:.1f} ms wall ({cpu:.1f} ms CPU) per photo-step against "
          f"{' + '.join(cfg.sources)} = {jobs * wall / 1000:.0f} s of PGD wall here ({jobs * cpu / 1000:.0f} CPU s)")
    timing, metrics = Path("data/protect/timing.json"), Path("metrics/protect.json")
    if timing.is_file() and metrics.is_file():
        done, scope = json.loads(timing.read_text()), json.loads(metrics.read_text())
        steps = done.get("pgd_jobs", 0) * scope.get("steps", 0)
        if steps:
            print(f"the last stage run (data/protect/timing.json): {done['pgd']:.0f} s of PGD for {done['pgd_jobs']:.0f}"
                  f" (condition, photo) jobs x {scope['steps']} steps against {' + '.join(scope['sources'])} on "
                  f"{scope.get('device', '?')} = {1000.0 * done['pgd'] / steps:.1f} ms per photo-step (batched, "
                  f"with projection and the sparse baseline's ranking)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="networks to time (default: params.yaml models)")
    parser.add_argument("--ensemble", nargs="+", help="ensemble order (default: protect.sources, then the others)")
    parser.add_argument("--batch", type=int, default=4, help="photos per pass (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds after one warm-up (default 2)")
    parser.add_argument("--device", help="auto | cpu | cuda (default: protect.device)")
    parser.add_argument("--quick", action="store_true", help="dlib_resnet + mobileface, batch 2, one repeat")
    args = parser.parse_args()
    config = load_config()
    register_zoo(config.model_zoo)
    cfg = config.protect
    names = args.models or (["dlib_resnet", "mobileface"] if args.quick else list(config.models))
    batch, repeats = (2, 1) if args.quick else (args.batch, args.repeats)
    torch.manual_seed(0)
    index, frames, landmarks = read_aligned(ALIGNED)
    frames, landmarks = np.asarray(frames[:batch]), np.asarray(landmarks[:batch])
    choice = args.device or cfg.device
    device = resolve_device(choice, "protect.device")
    devices = [device] + ([torch.device("cpu")] if device.type == "cuda" and choice == "auto" else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU visible")
          + f"; batch {len(frames)} photos of {frames.shape[1]} px")
    results = {}
    for where in devices:
        results[where.type] = measure(names, list(args.ensemble or cfg.sources), frames, landmarks,
                                      config.align.padding, where, repeats)
        report(*results[where.type], where)
    if len(results) == 2:
        gpu, cpu = results["cuda"][0], results["cpu"][0]
        print("\nGPU / CPU wall per PGD step: " + ", ".join(f"{k[5:]} {gpu[k][0] / cpu[k][0]:.3f}" for k in gpu
                                                               if k.startswith("step ") and k in cpu))
    projected(config, results[device.type][0], index)


if __name__ == "__main__":
    main()
