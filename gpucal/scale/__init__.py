"""Many exposures over many processes, GPUs and machines, on Dask.

gpucal does not schedule: ``dask.distributed`` places one task per input
(:func:`~gpucal.scale.worker.calibrate_task`, the unit of work of :mod:`gpucal.work`) on
its workers, retries the tasks of a worker that died, and shows progress on its
dashboard.  gpucal adds what calibration needs around it:

* :mod:`~gpucal.scale.worker`: a worker plugin that keeps each worker's backend (and so
  its device reference cache and compiled kernels) for the worker's lifetime, lets one
  file at a time compute while others read or write, and recycles the worker after K files
  or an out-of-memory error;
* :mod:`~gpucal.scale.ledger`: the run's ledger (JSON Lines beside the outputs) that makes
  a rerun skip the inputs whose outputs are complete;
* :mod:`~gpucal.scale.run`: the client side (:func:`~gpucal.scale.run.calibrate_many`,
  used by ``strun --workers/--scheduler`` and by Python callers with their own Client);
* :mod:`~gpucal.scale.cluster`: a local cluster for ``--workers N`` (dask-cuda's
  LocalCUDACluster on a GPU machine) or a connection to a running scheduler.

``dask[distributed]`` (``pip install 'gpucal[distributed]'``) and, for GPU nodes,
``dask-cuda`` (``gpucal[distributed-cuda]``) are optional; :func:`require` says which is
missing in one line.
"""

from __future__ import annotations

from gpucal.errors import GpucalError

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(GpucalError):
    """An optional dependency of the distributed mode is not installed."""


def require(what: str = "distributed") -> None:
    """Raise :class:`MissingExtraError` (one line naming the extra) if it is not importable."""
    if what == "distributed":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise MissingExtraError(
                "distributed runs (--workers, --scheduler, calibrate_many with a client) need Dask: "
                "pip install 'gpucal[distributed]'") from None
    elif what == "dask_cuda":
        try:
            import dask_cuda  # noqa: F401
        except ImportError:
            raise MissingExtraError(
                "a local cluster on a GPU machine needs dask-cuda: pip install 'gpucal[distributed-cuda]'") from None
