"""Forward and forward+backward (to the input only) time per image of every registered model with weights.

LEAM needs one backward pass to the input per image, so this is its per-image floor. The baseline measured in
the same run is the plain forward pass at batch 1; every row prints its ratio to it.

    python -m benchmarks.models [--weights data/models] [--batches 1 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from leam.errors import LeamError
from leam.models.registry import available_models, get_spec

log = logging.getLogger("leam.benchmarks.models")


def pass_seconds(model: torch.nn.Module, images: torch.Tensor, backward: bool, channels_last: bool = False) -> float:
    """Seconds of one forward (``backward``: forward + backward to the input) pass over ``images``."""
    x = images.contiguous(memory_format=torch.channels_last) if channels_last else images.clone()
    x.requires_grad_(backward)
    start = time.perf_counter()
    if backward:
        model(x).sum().backward()
    else:
        with torch.no_grad():
            model(x)
    return time.perf_counter() - start


def time_per_image(model: torch.nn.Module, size: int, batch: int, backward: bool, repeats: int) -> float:
    """Best-of-``repeats`` milliseconds per image, after one warm-up call."""
    images = torch.rand(batch, 3, size, size) * 255.0
    times = [pass_seconds(model, images, backward) for _ in range(repeats + 1)]
    return 1000.0 * min(times[1:]) / batch  # the first call warms caches and allocators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="data/models")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'model':<16}{'batch':>6}{'forward ms/img':>16}{'fwd+bwd ms/img':>16}{'fwd ratio':>11}{'f+b ratio':>11}")
    for name in available_models():
        spec = get_spec(name)
        try:
            model = spec.load(args.weights)
        except LeamError as exc:
            log.info("%s: skipped (%s)", name, exc)
            continue
        baseline = time_per_image(model, spec.input_size, 1, False, args.repeats)
        for batch in args.batches:
            forward = baseline if batch == 1 else time_per_image(model, spec.input_size, batch, False, args.repeats)
            both = time_per_image(model, spec.input_size, batch, True, args.repeats)
            print(f"{name:<16}{batch:>6}{forward:>16.2f}{both:>16.2f}{forward / baseline:>11.2f}{both / baseline:>11.2f}")


if __name__ == "__main__":
    main()
