"""Where torch runs and how many photos go into one pass: the ``device`` and ``batch_size`` params.

- **Device** (``<group>.device``): ``auto`` (a visible CUDA GPU, else the CPU), ``cpu`` or ``cuda``;
  ``cuda`` without a visible GPU is one :class:`~leam.errors.LeamError` naming the param
  (:func:`resolve_device`). The package moves modules and tensors there (:func:`module_device` says where a
  module is), never the stage scripts.
- **Batch size** (``<group>.batch_size``): a positive int, or ``auto``: on CUDA as many photos as fit in
  :data:`AUTO_MEMORY_FRACTION` of the free GPU memory (``torch.cuda.mem_get_info``) at the caller's bytes
  per photo (:func:`forward_bytes` estimates them), at most :data:`AUTO_MAX_BATCH`; on the CPU
  :data:`CPU_AUTO_BATCH` (:func:`resolve_batch_size`).
- **Batch-size invariance**: results must not depend on how photos are batched, but CPU kernels pick their
  algorithm by the number of rows in a pass. PyTorch sends a 1x1 convolution to its own im2col + sgemm path
  instead of oneDNN when a pass has fewer than 16 rows on one thread, and a small 3x3 convolution on a
  single row likewise (``ConvParams::use_mkldnn``); MKL's sgemm rounds a Linear layer differently for
  fewer than 4 rows. Measured on real faces with one thread: maps of passes of 1-8 photos differ from those
  of 16 or 32 photos by up to 4e-5 (faceres; 3e-4 of its peak) or 1e-7 (dlib_resnet, mobileface), while
  passes of 16, 17, 24, 32, 48 and 64 photos agree bit for bit for all six networks on one or two threads.
  So every pass is padded to at least :data:`MIN_ROWS` rows by repeating its last photo (:func:`pad_rows`;
  :func:`leam.core.leam_maps` and :mod:`leam.embedding` do) and the padding is dropped from the result:
  float32 maps and embeddings are then bit-identical for every batch size and thread count on the CPU.
  Only the last, short pass of a stage pays for the padding. On CUDA, cuDNN also chooses algorithms by
  shape; the padding is applied there too, but bit-equality across batch sizes is not checked on a GPU.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from leam.errors import LeamError, check_choice

__all__ = ["AUTO_MAX_BATCH", "AUTO_MEMORY_FRACTION", "CPU_AUTO_BATCH", "DEVICES", "MIN_ROWS", "forward_bytes",
           "module_device", "pad_rows", "padded_forward", "resolve_batch_size", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")
CPU_AUTO_BATCH = 16
"""``batch_size: auto`` on the CPU: photos per pass (= :data:`MIN_ROWS`, so no pass but the last is padded)."""
AUTO_MEMORY_FRACTION = 0.5
"""``batch_size: auto`` on CUDA: share of the free GPU memory one pass may use (the rest is headroom for the
allocator's fragmentation and what the estimate misses)."""
AUTO_MAX_BATCH = 1024
"""``batch_size: auto`` on CUDA: at most this many photos per pass."""
MIN_ROWS = 16
"""Rows every forward (+ backward) pass is padded to: from 16 rows on, CPU kernels no longer change with the
row count (module docstring)."""


def resolve_device(choice: str = "auto", key: str = "device") -> torch.device:
    """The device for ``choice``; ``cuda`` without a visible GPU is one LeamError naming the param ``key``."""
    check_choice(key, choice, DEVICES)
    if choice == "cuda" and not torch.cuda.is_available():
        raise LeamError(f"{key}=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` runs: the device of its first parameter or buffer (the CPU for a module without any)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def resolve_batch_size(choice: int | str, device: torch.device | str, image_bytes: int | Callable[[], int],
                       key: str = "batch_size") -> int:
    """Photos per pass for ``<group>.batch_size`` = ``choice`` on ``device``.

    An int >= 1 is returned as is. ``auto``: on CUDA, :data:`AUTO_MEMORY_FRACTION` of the free memory
    (``torch.cuda.mem_get_info``) divided by ``image_bytes`` (bytes one photo of the pass needs; a callable is
    called only then, e.g. ``lambda: 3 * forward_bytes(model, 112)``), between 1 and :data:`AUTO_MAX_BATCH`;
    on the CPU, :data:`CPU_AUTO_BATCH`. Anything else is one LeamError naming ``key``.
    """
    if isinstance(choice, int) and not isinstance(choice, bool) and choice >= 1:
        return choice
    if choice != "auto":
        raise LeamError(f"{key}={choice!r} is not valid; choose a positive integer or auto")
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_AUTO_BATCH
    free, _total = torch.cuda.mem_get_info(device)
    per_image = max(1, int(image_bytes() if callable(image_bytes) else image_bytes))
    return max(1, min(AUTO_MAX_BATCH, int(AUTO_MEMORY_FRACTION * free) // per_image))


@torch.no_grad()
def forward_bytes(module: nn.Module, input_size: int) -> int:
    """Bytes of every leaf module's tensor outputs for one photo (1, 3, s, s), on the module's device.

    What one photo's forward pass keeps alive for a backward pass (each layer's output; the backward needs
    about as much again for the gradients): the per-photo cost ``batch_size: auto`` divides the free memory
    by. One forward of a grey image; hooks are removed afterwards.
    """
    total = 0

    def count(_module: nn.Module, _inputs, output) -> None:
        nonlocal total
        for tensor in (output if isinstance(output, (tuple, list)) else (output,)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()

    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    handles = [leaf.register_forward_hook(count) for leaf in leaves]
    try:
        module(torch.full((1, 3, input_size, input_size), 127.5, device=module_device(module)))
    finally:
        for handle in handles:
            handle.remove()
    return total


def pad_rows(tensors: tuple[torch.Tensor, ...], rows: int = MIN_ROWS) -> tuple[tuple[torch.Tensor, ...], int]:
    """Tensors with the same first dimension n, padded to ``max(n, rows)`` rows by repeating row n - 1.

    Returns the padded tensors and n (slice every result with ``[:n]``). Used only where samples are
    independent (eval-mode networks), so the padding rows cannot change the real ones.
    """
    count = int(tensors[0].shape[0])
    if count == 0 or count >= rows:
        return tensors, count
    pick = torch.cat([torch.arange(count), torch.full((rows - count,), count - 1)])
    return tuple(t[pick.to(t.device)] for t in tensors), count


def padded_forward(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``module(inputs)`` for a batch (N, ...) computed on at least :data:`MIN_ROWS` rows (:func:`pad_rows`),
    so that row i is bit-identical whatever the batch size; returns (N, ...)."""
    (inputs,), count = pad_rows((inputs,))
    return module(inputs)[:count]
