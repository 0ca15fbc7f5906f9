"""Dask clusters for gpucal: a local one for ``--workers N``, or a running one to join.

On a machine without a usable GPU (or with ``--backend=cpu``) ``--workers N`` is a
``distributed.LocalCluster`` of N worker processes.  On a GPU machine it is dask-cuda's
``LocalCUDACluster`` (one worker per GPU, pinned through ``CUDA_VISIBLE_DEVICES``) when N
is at most the number of GPUs; with more workers than GPUs, N nanny-managed workers are
pinned round-robin to the GPUs (several processes per GPU, so that reading and writing on
the CPU keep each GPU busy), in a ``distributed.SpecCluster`` as dask-cuda builds its own.

The scheduler of a cluster started here retries the tasks of a worker that died
``retries`` times (Dask's ``distributed.scheduler.allowed-failures``); a scheduler started
elsewhere uses its own setting (Dask's default is 3).
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["start_local_cluster", "connect", "gpu_devices"]

log = logging.getLogger(__name__)


def gpu_devices() -> list[int]:
    """Indices of the GPUs this process may use ([] without a usable GPU)."""
    from gpucal.backends.select import probe_gpu

    ok, _ = probe_gpu()
    if not ok:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [int(v) for v in visible.split(",") if v.strip().isdigit()]
    import cupy

    return list(range(cupy.cuda.runtime.getDeviceCount()))


def start_local_cluster(n_workers: int, *, backend: str = "auto", files_per_worker: int = 2, retries: int = 2,
                        dashboard_address: str = ":8787", gpus: list[int] | None = None) -> Any:
    """Start a cluster of ``n_workers`` worker processes on this machine.

    Parameters
    ----------
    n_workers : int
        Worker processes.
    backend : str
        The run's backend; ``cpu`` never pins workers to GPUs.
    files_per_worker : int
        Threads per worker, so files a worker holds at once (one computes, the others
        are read or written).
    retries : int
        Times the scheduler reschedules a task whose worker died.
    dashboard_address : str
        Where the scheduler serves its dashboard (another port is taken if busy).
    gpus : list of int, optional
        The GPUs to pin workers to (default: those of :func:`gpu_devices`).
    """
    import dask

    from gpucal.scale import require

    require("distributed")
    if gpus is None:
        gpus = [] if backend == "cpu" else gpu_devices()
    with dask.config.set({"distributed.scheduler.allowed-failures": int(retries)}):
        if not gpus:
            from distributed import LocalCluster

            return LocalCluster(n_workers=n_workers, threads_per_worker=files_per_worker, processes=True,
                                dashboard_address=dashboard_address, env=_share_cores(n_workers))
        if n_workers <= len(gpus):
            require("dask_cuda")
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster(n_workers=n_workers, threads_per_worker=files_per_worker,
                                    CUDA_VISIBLE_DEVICES=gpus[:n_workers], dashboard_address=dashboard_address)
        return _shared_gpu_cluster(n_workers, gpus, files_per_worker, dashboard_address)


def _share_cores(n_workers: int) -> dict[str, str]:
    """Each worker's share of this machine's cores for gpucal's I/O threads (unless set).

    Dask already limits OpenMP/BLAS threads to one per worker; gpucal's lz4 codec would
    otherwise start one thread per core in every worker.
    """
    if os.environ.get("GPUCAL_IO_THREADS"):
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"GPUCAL_IO_THREADS": str(max(1, cores // n_workers))}


def pinned_devices(i: int, gpus: list[int]) -> str:
    """``CUDA_VISIBLE_DEVICES`` of worker ``i``: GPU ``i mod len(gpus)`` first, the rest after."""
    first = i % len(gpus)
    order = gpus[first:] + gpus[:first]
    return ",".join(str(g) for g in order)


def _shared_gpu_cluster(n_workers: int, gpus: list[int], files_per_worker: int, dashboard_address: str) -> Any:
    from distributed import Nanny, Scheduler, SpecCluster

    scheduler = {"cls": Scheduler, "options": {"dashboard_address": dashboard_address}}
    workers = {
        f"gpu{pinned_devices(i, gpus).split(',')[0]}-{i}": {
            "cls": Nanny,
            "options": {"nthreads": files_per_worker, "env": {"CUDA_VISIBLE_DEVICES": pinned_devices(i, gpus)}},
        }
        for i in range(n_workers)
    }
    log.info("%d workers on %d GPU(s): several processes per GPU", n_workers, len(gpus))
    return SpecCluster(workers=workers, scheduler=scheduler)


def connect(address: str | None = None, scheduler_file: str | None = None) -> Any:
    """A ``distributed.Client`` of a running scheduler (by address or scheduler file)."""
    from gpucal.scale import require

    require("distributed")
    from distributed import Client

    if scheduler_file:
        return Client(scheduler_file=scheduler_file, timeout="30s")
    return Client(address, timeout="30s")
