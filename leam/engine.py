"""Where a heavy stage's photo batches run: ``engine: local`` (a loop in this process) or ``ray`` (Ray Data).

A stage cuts its photos into batches (dicts of arrays, one batch = what one forward pass sees) and hands
:func:`map_batches` a *worker factory*: a picklable callable ``make_worker(device) -> worker`` whose worker
maps one batch dict to one output dict. ``local`` builds the worker once here and loops. ``ray`` puts one
batch per row of a Ray Data dataset and runs ``Dataset.map_batches`` (one row per call) over a pool of
actors (:class:`BatchActor`, a callable class): each actor builds the worker once, so it holds the network's
weights for its whole life, and reserves ``ray.cpus_per_actor`` CPUs and, for a stage that runs on a GPU
when the cluster has any, ``ray.gpus_per_actor`` GPUs (the worker then gets ``cuda``).

Outputs equal the local engine's bit for bit: the rows are the local loop's batches (float32 results of
these networks depend on the batch's composition: dlib_resnet and mobileface maps move by ~4e-7 of their
peak between batch sizes), and each actor runs as many torch threads as this process
(``ray.cpus_per_actor: 0``; faceres maps move by up to 2e-4 of their peak between 1 and 2 threads).
Rows come back in order (Ray Data's ``preserve_order``).

Ray is imported only inside :func:`map_batches` with ``engine="ray"``; without it that is one
:class:`~leam.errors.LeamError` naming the extra to install. ``ray.address`` (or ``RAY_ADDRESS``) connects to
an existing cluster and ships this checkout's ``leam`` package to it (``runtime_env.py_modules``); otherwise
a Ray instance starts on this machine with ``ray.num_cpus`` CPUs, listening on 127.0.0.1 only, and stops
after the stage. A Ray already initialised in this process (``ray.init`` by a caller) is used as it is.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from leam.errors import LeamError, check_choice

if TYPE_CHECKING:  # annotations only
    from leam.config import RayParams

__all__ = ["ENGINES", "Batch", "BatchActor", "map_batches"]

ENGINES = ("local", "ray")

Batch = Mapping[str, Any]
"""One batch: column name -> array (or scalar), e.g. ``start``, ``frames`` (B, S, S, 3) uint8."""
WorkerFactory = Callable[[torch.device], Callable[[Batch], dict[str, Any]]]

RAY_MISSING = ("engine=ray needs Ray, which is not installed: pip install -r requirements-ray.txt "
               "(or pip install -e '.[ray]'), or set engine: local")

log = logging.getLogger("leam.engine")


def map_batches(make_worker: WorkerFactory, batches: Iterable[Batch], count: int, engine: str = "local",
                ray: RayParams | None = None, device: torch.device | str = "cpu", gpu_capable: bool = False,
                desc: str = "batches", progress: bool = True) -> Iterator[dict[str, Any]]:
    """Yield ``make_worker(device)(batch)`` for every batch, in order, on the chosen engine.

    make_worker: picklable (``functools.partial`` of a class); with ``ray`` it is built once in each actor.
    count: the number of batches (progress only). device: the local engine's torch device. gpu_capable:
    the worker runs on ``cuda`` when it gets a GPU (ray: actors reserve ``ray.gpus_per_actor`` GPUs when the
    cluster has any, and get ``cuda``; else ``cpu``). ray: the ``ray`` params group (defaults when None).
    desc, progress: the progress bar's label, and whether to show it.
    """
    check_choice("engine", engine, ENGINES)
    if engine == "local":
        worker = make_worker(torch.device(device))
        for batch in tqdm(batches, total=count, desc=desc, unit="batch", disable=not progress):
            yield worker(batch)
        return
    if ray is None:
        from leam.config import RayParams
        ray = RayParams()
    yield from _ray_map_batches(make_worker, list(batches), ray, gpu_capable, desc, progress)


class BatchActor:
    """A Ray Data actor (callable class): builds the worker once (the weights live here), then maps rows.

    threads: torch threads of this actor (= the CPUs it reserved); gpu: it reserved a GPU (device ``cuda``).
    Each call gets rows of batches (``batch_size=1``: one) and returns one output row per input row.
    """

    def __init__(self, make_worker: WorkerFactory, threads: int, gpu: bool):
        torch.set_num_threads(threads)
        self.worker = make_worker(torch.device("cuda" if gpu else "cpu"))

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(rows.values())))
        outputs = [self.worker({key: _cell(column[i]) for key, column in rows.items()}) for i in range(count)]
        return {key: _column([output[key] for output in outputs]) for key in outputs[0]}


def _cell(value: Any) -> Any:
    """A row's value as the local engine sees it: a 0-d array becomes its Python scalar."""
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value


def _column(values: list) -> np.ndarray:
    """Output values of the rows of one call as a Ray Data column (an object column when shapes differ)."""
    arrays = [np.asarray(value) for value in values]
    if len({array.shape for array in arrays}) == 1:
        return np.stack(arrays)
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column


def _import_ray(address: str):
    """Ray and Ray Data; a Ray instance this process will start (no ``address``) listens on loopback only.

    Ray picks its node address when first imported: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes it take
    127.0.0.1 (single-node, as on macOS) instead of this machine's network address, which no other node of
    a driver-started instance needs. Set only when Ray is not imported yet and the variable is unset.
    """
    if not address and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data  # Ray Data (ray[data]: pyarrow) is the part used here
    except ImportError:
        raise LeamError(RAY_MISSING) from None
    return ray


def _address(params: RayParams) -> str:
    """The cluster to connect to: ``ray.address``, else ``RAY_ADDRESS``; "" = start one on this machine."""
    return params.address or os.environ.get("RAY_ADDRESS", "")


def _connect(ray_module, params: RayParams) -> bool:
    """Initialise Ray unless a caller did; True when this call started it (then the caller shuts it down)."""
    if ray_module.is_initialized():
        return False
    address = _address(params)
    if address:  # an existing cluster: run this checkout's leam there, not whatever its nodes have installed
        log.info("engine=ray: connecting to %s", address)
        ray_module.init(address=address, logging_level=logging.WARNING,
                        runtime_env={"py_modules": [str(Path(__file__).resolve().parent)]})
    else:
        ray_module.init(address="local", num_cpus=params.num_cpus or None, include_dashboard=False,
                        logging_level=logging.WARNING)
    return True


def _ray_map_batches(make_worker: WorkerFactory, batches: list[Batch], params: RayParams, gpu_capable: bool,
                     desc: str, progress: bool) -> Iterator[dict[str, Any]]:
    ray = _import_ray(_address(params))
    started = _connect(ray, params)
    try:
        resources = ray.cluster_resources()
        threads = params.cpus_per_actor or torch.get_num_threads()
        gpus = params.gpus_per_actor if gpu_capable and resources.get("GPU", 0) > 0 else 0.0
        capacity = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1) // threads)
        actors = max(1, min(params.actors or capacity, len(batches)))
        log.info("%s on Ray: %d batches, %d actor(s) x %d CPU%s", desc, len(batches), actors, threads,
                 f" + {gpus:g} GPU" if gpus else "")
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        rows = [dict(batch) for batch in batches]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        mapped = dataset.map_batches(BatchActor, batch_size=1, batch_format="numpy",
                                     fn_constructor_args=(make_worker, threads, bool(gpus)),
                                     compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads,
                                     num_gpus=gpus or None)
        for row in tqdm(mapped.iter_rows(), total=len(rows), desc=desc, unit="batch", disable=not progress):
            yield {key: _cell(value) for key, value in row.items()}
    finally:
        if started:
            ray.shutdown()
