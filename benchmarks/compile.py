"""Imported networks against hand-built native PyTorch networks of the same architecture, same run.

For each imported network: the node-by-node interpreter (what the importers build), the compiled module
(:mod:`leam.models.compile`, what the registry loads) and a hand-written ``nn.Module`` of the same
architecture with random weights (MobileNet-v1 with TF's SAME padding for ``faceres``/``faceres-deep``,
MobileFaceNet for the 112-px networks, sirius-ai's separable variant of it for ``expo_mfn``; ``symmetric``
times MobileNet-v1 with PyTorch's padding too), each timed forward only and forward + backward to the input
(LEAM's pass), in milliseconds per image at ``--batch``. The candidates run interleaved, one pass each per round for ``--rounds`` rounds (after a
warm-up round); times are medians over rounds. The native baseline is timed in NCHW and in
``channels_last`` and the faster of the two (by median) is the baseline; ``ratio`` = the median over rounds
of compiled / native in the same round (target <= 1.2), ``spread`` its smallest and largest round, ``vs
symmetric`` the same ratio against the symmetric-padded MobileNet-v1. Every candidate gets the input in its
own memory format (converted outside the timer), the compiled module included.

    python -m benchmarks.compile [--models faceres expo_mfn] [--batch 32] [--rounds 7] [--no-interpreter]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn as nn

from benchmarks.models import pass_seconds
from leam.models import human_models, npm_models

LOADERS = {name: human_models.load_human_model for name in ("faceres", "faceres-deep")} | \
          {name: npm_models.load_npm_model for name in npm_models.SPECS}


def _conv_block(cin: int, cout: int, kernel: int, stride: int, groups: int, activation: nn.Module | None):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=True)]
    return nn.Sequential(*layers, activation) if activation is not None else layers[0]


def _tf_conv_block(cin: int, cout: int, kernel: int, stride: int, groups: int, tf_same: bool) -> nn.Module:
    """Conv + ReLU6; ``tf_same``: TF's SAME rule at stride 2 on even sizes, pad (0, 1) (as timm's Conv2dSame)."""
    if not (tf_same and stride == 2):
        return _conv_block(cin, cout, kernel, stride, groups, nn.ReLU6(inplace=True))
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups),
                         nn.ReLU6(inplace=True))


def mobilenet_v1(width: int = 32, tf_same: bool = True) -> nn.Module:
    """MobileNet-v1 1.0 at 224 px: batch norms folded into conv biases, ReLU6, global average pooling.

    ``tf_same``: stride-2 convs pad as TF's SAME (what faceres' weights were trained with, so any PyTorch
    port of it pads so); False: PyTorch's symmetric padding, a different and slightly cheaper network."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers = [_tf_conv_block(3, width, 3, 2, 1, tf_same)]
    channels = width
    for out, stride in plan:
        layers += [_tf_conv_block(channels, channels, 3, stride, channels, tf_same),
                   _tf_conv_block(channels, out, 1, 1, 1, tf_same)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = cin * expansion
        self.body = nn.Sequential(_conv_block(cin, hidden, 1, 1, 1, nn.PReLU(hidden)),
                                  _conv_block(hidden, hidden, 3, stride, hidden, nn.PReLU(hidden)),
                                  _conv_block(hidden, cout, 1, 1, 1, None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilefacenet(embedding: int, separable: bool = False) -> nn.Module:
    """MobileFaceNet at 112 px (Chen et al. 2018, InsightFace's settings): PReLU, bottlenecks (channels x
    repeats, stride, expansion) [64x5 s2 e2, 128 s2 e4, 128x6 e2, 128 s2 e4, 128x2 e2], 1x1 to 512, 7x7 global
    depthwise conv, 1x1 linear embedding.

    ``separable``: sirius-ai's MobileFaceNet_TF (``expo_mfn``), whose stem and global depthwise convs are
    separable: 3x3 depthwise -> 1x1 64 -> PReLU, and 7x7 depthwise -> 1x1 512 before the embedding."""
    stem = [_conv_block(64, 64, 3, 1, 64, None), _conv_block(64, 64, 1, 1, 1, nn.PReLU(64))] if separable else \
        [_conv_block(64, 64, 3, 1, 64, nn.PReLU(64))]
    layers = [_conv_block(3, 64, 3, 2, 1, nn.PReLU(64)), *stem]
    channels = 64
    for out, repeats, stride, expansion in ((64, 5, 2, 2), (128, 1, 2, 4), (128, 6, 1, 2), (128, 1, 2, 4),
                                            (128, 2, 1, 2)):
        for k in range(repeats):
            layers.append(_Bottleneck(channels, out, stride if k == 0 else 1, expansion))
            channels = out
    layers += [_conv_block(channels, 512, 1, 1, 1, nn.PReLU(512)), nn.Conv2d(512, 512, 7, 1, 0, groups=512)]
    if separable:
        layers.append(nn.Conv2d(512, 512, 1))
    layers += [nn.Conv2d(512, embedding, 1), nn.Flatten()]
    return nn.Sequential(*layers)


def interleaved_ms(candidates: dict[str, tuple[nn.Module, bool]], images: torch.Tensor, backward: bool,
                   rounds: int) -> dict[str, list[float]]:
    """ms per image of each (model, channels_last input) candidate in each of ``rounds`` rounds, after a
    warm-up round. A round calls every candidate once, in reversed order every other round, so that drifting
    CPU speed (other processes on a shared machine) hits all candidates of a round alike."""
    order = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in order}
    for attempt in range(rounds + 1):
        for name in order if attempt % 2 else order[::-1]:
            model, channels_last = candidates[name]
            elapsed = pass_seconds(model, images, backward, channels_last)
            if attempt:
                times[name].append(1000.0 * elapsed / len(images))
    return times


def round_ratios(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of the per-round ratios numerator / denominator (times of the same rounds)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return statistics.median(ratios), min(ratios), max(ratios)


def native_equivalent(name: str, embedding: int) -> nn.Module:
    if name.startswith("faceres"):
        return mobilenet_v1()
    return mobilefacenet(embedding, separable=name == "expo_mfn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=sorted(LOADERS))
    parser.add_argument("--weights", default="data/models")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--interpreter", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the node-by-node interpreter (the slowest candidate)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.rounds} rounds; "
          "ms per image (median of rounds); ratios: median [min-max] over rounds of the same round's times")
    print(f"{'model':15s} {'pass':8s} {'interpreter':>11s} {'compiled':>9s} {'native':>9s} {'native format':>13s}"
          f" {'interp/native':>13s} {'ratio':>6s} {'spread':>11s} {'vs symmetric':>12s}")
    for name in args.models:
        compiled = LOADERS[name](name, args.weights)
        spec = (human_models.SPECS | npm_models.SPECS)[name]
        images = torch.rand(args.batch, 3, spec.input_size, spec.input_size) * 255.0
        native = native_equivalent(name, spec.embedding_dim).eval().requires_grad_(False)
        native_last = native_equivalent(name, spec.embedding_dim).eval().requires_grad_(False)
        # the compiled module gets its own layout's input, as the native candidates do (no copy inside)
        candidates = {"compiled": (compiled, compiled.channels_last), "nchw": (native, False),
                      "channels_last": (native_last.to(memory_format=torch.channels_last), True)}
        if args.interpreter:
            candidates["interpreter"] = (LOADERS[name](name, args.weights, compiled=False), False)
        if name.startswith("faceres"):
            plain = mobilenet_v1(tf_same=False).eval().requires_grad_(False)
            candidates["symmetric"] = (plain.to(memory_format=torch.channels_last), True)
        for backward in (False, True):
            times = interleaved_ms(candidates, images, backward, args.rounds)
            median = {key: statistics.median(values) for key, values in times.items()}
            layout = "nchw" if median["nchw"] <= median["channels_last"] else "channels_last"
            ratio, low, high = round_ratios(times["compiled"], times[layout])
            interpreter = f"{median['interpreter']:11.2f}" if args.interpreter else f"{'-':>11s}"
            interpreted = f"{round_ratios(times['interpreter'], times[layout])[0]:13.2f}" if args.interpreter \
                else f"{'-':>13s}"
            symmetric = f"{round_ratios(times['compiled'], times['symmetric'])[0]:12.2f}" if "symmetric" in times \
                else ""
            print(f"{name:15s} {'fwd+bwd' if backward else 'forward':8s} {interpreter} {median['compiled']:9.2f} "
                  f"{median[layout]:9.2f} {layout:>13s} {interpreted} {ratio:6.2f} "
                  f"{f'{low:.2f}-{high:.2f}':>11s} {symmetric:>12s}", flush=True)


if __name__ == "__main__":
    main()
