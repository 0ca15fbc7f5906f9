"""The worker side: a plugin that keeps a backend per worker process, and the task.

Each Dask worker process sets gpucal up once (:class:`GpucalWorkerPlugin`): it selects the
backend, so the GPU backend's reference cache and CuPy's compiled kernels serve every file
the worker calibrates, and it holds a lock that lets one file at a time compute while the
worker's other threads read or write other files (a worker's ``nthreads`` is the number of
files it holds at once: 2 by default in the clusters gpucal starts).

A worker is recycled (closed gracefully; its nanny starts a fresh process) after
``recycle_after`` files, and after an out-of-memory error, which is raised to Dask so the
file is retried elsewhere (``retries``).  Any other failure of a file is its record
(status ``failed``), never an exception: a bad input is not retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any

from distributed import WorkerPlugin, get_worker

from gpucal import work

__all__ = ["PLUGIN_NAME", "GpucalWorkerPlugin", "calibrate_task"]

log = logging.getLogger(__name__)

PLUGIN_NAME = "gpucal"


class GpucalWorkerPlugin(WorkerPlugin):
    """Per-worker state of gpucal: backend, compute lock, file count, recycling.

    Parameters
    ----------
    backend : str
        ``auto``, ``gpu`` or ``cpu``: selected once when the worker starts.
    recycle_after : int
        Restart the worker process after this many files (0: never).
    """

    idempotent = False  # a new run's settings replace an earlier run's on the same workers

    def __init__(self, backend: str = "auto", recycle_after: int = 0):
        self.backend_name = backend
        self.recycle_after = int(recycle_after)
        # the worker's state is made in setup: the plugin travels pickled to the workers
        self.worker: Any = None
        self.backend: Any = None
        self.compute_lock: Any = None
        self.files = 0
        self.recycling: str | None = None
        self._count_lock: Any = None

    def setup(self, worker: Any) -> None:
        from gpucal.allocator import tune_allocator
        from gpucal.backends.select import select_backend

        tune_allocator()  # the worker's process runs gpucal's blocks from now on
        self.worker = worker
        self.compute_lock = threading.Lock()
        self._count_lock = threading.Lock()
        import roman_datamodels.datamodels  # noqa: F401  (the I/O stack, once, before the first file)

        import gpucal.pipeline  # noqa: F401
        try:  # a backend that cannot start is reported per file by the tasks
            self.backend = select_backend(self.backend_name)
        except Exception as exc:
            log.warning("gpucal worker %s: backend %s unavailable: %s", worker.address, self.backend_name, exc)
        else:
            log.info("gpucal worker %s ready: backend %s%s", worker.address, self.backend.name,
                     f" ({self.backend.device_name})" if getattr(self.backend, "device_name", None) else "")

    def backend_for(self, name: str) -> Any:
        """The worker's backend when the task asks for the one it was set up with."""
        return self.backend if name == self.backend_name else None

    def file_done(self) -> None:
        with self._count_lock:
            self.files += 1
            if self.recycle_after and self.files >= self.recycle_after and self.recycling is None:
                self.recycle(f"recycled after {self.files} files")

    def recycle(self, reason: str) -> None:
        """Restart this worker process once its running files end (its nanny starts a new one).

        The worker is paused first (Dask starts no new task on a paused worker), so the
        files it is calibrating finish rather than being cut off; then it closes
        gracefully, handing its queued tasks back to the scheduler.
        """
        if self.worker is None or self.recycling is not None:
            return
        self.recycling = reason
        log.info("gpucal worker %s: %s", self.worker.address, reason)
        self.worker.loop.add_callback(self._drain_and_close, reason)

    async def _drain_and_close(self, reason: str) -> None:
        import asyncio

        from distributed.core import Status

        worker = self.worker
        try:
            if worker.status == Status.running:
                worker.status = Status.paused
            # the task that asked is still executing: wait for it and its neighbours
            while worker.state.executing_count > 0 and worker.status == Status.paused:
                await asyncio.sleep(0.05)
            # the scheduler has the nanny replace this process (Dask's own restart path);
            # the tasks queued here go back to the scheduler
            await worker.scheduler.restart_workers(
                workers=[worker.address], timeout=120, wait_for_workers=False, on_error="return",
                stimulus_id=f"gpucal-recycle-{time.time()}")
        except Exception as exc:  # the worker may be closing already
            log.debug("gpucal worker recycle: %s", exc)


def _plugin(worker: Any) -> GpucalWorkerPlugin | None:
    plugin = worker.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, GpucalWorkerPlugin) else None


def calibrate_task(path: str, target: str, values: dict[str, Any], previous: dict[str, Any] | None,
                   clobber: bool, verify_checksums: bool = True) -> dict[str, Any]:
    """One Dask task: :func:`gpucal.work.calibrate_file` on this worker; the record as a dict.

    ``target`` is the step class (``module:Class``); ``previous`` the input's last ledger
    record; ``verify_checksums`` the client's choice (``--no-verify-checksums``), which the
    worker's own environment cannot know.  Raises only for a resource error (out of memory), after asking for the
    worker to be recycled, so Dask retries the file on a fresh worker.
    """
    from gpucal.registry import load_class

    worker = get_worker()
    plugin = _plugin(worker)
    backend = plugin.backend_for(str(values.get("backend", "auto"))) if plugin else None
    lock = plugin.compute_lock if plugin else contextlib.nullcontext()
    from gpucal.asdf_verify import checksums_default

    try:
        with checksums_default(verify_checksums):
            record = work.calibrate_file(path, load_class(target), values, previous=previous, clobber=clobber,
                                         checksum=True, backend=backend, compute_lock=lock,
                                         reraise_resource_errors=True)
    except BaseException as exc:
        if plugin is not None and work.is_resource_error(exc):
            plugin.recycle("recycled after running out of memory")
        raise
    if plugin is not None and record.status != work.SKIPPED:
        plugin.file_done()
    out = dataclasses.asdict(record)
    out["worker"] = worker.address
    return out
