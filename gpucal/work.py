"""The unit of work: one input calibrated to its outputs, described by a small record.

Every way of running many files goes through this module: the one-process batch
(:mod:`gpucal.batch`, which overlaps the three phases of consecutive files in threads),
the Dask path (:mod:`gpucal.scale`, one task per input) and :func:`gpucal.calibrate_many`.
A file is calibrated in three phases:

1. :func:`start` builds a fresh step from the parameters and reads the input (checked,
   arrays in memory), with its SHA-256 when a ledger needs it;
2. :func:`compute` runs the step in memory (nothing is written);
3. :func:`finish` writes the products (all of an input's together, :mod:`gpucal.products`)
   and returns the :class:`FileRecord`.

:func:`calibrate_file` chains them (and, with a previous record, first checks whether the
outputs are already complete so the file can be skipped).  Failures never propagate from
a phase as exceptions the caller has to classify: :func:`failed_record` turns any error
into a record with its one-line message, exit status and cause.  The exceptions that mean
"this worker is unhealthy, try elsewhere" (out of memory) are the one thing a caller may
re-raise (see :func:`is_resource_error`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucal import __version__
from gpucal.errors import (
    BackendUnavailableError,
    GpucalError,
    InputFileError,
    NoScienceDataError,
    ParameterError,
    ReferenceFileError,
)

__all__ = [
    "FileRecord",
    "Job",
    "DONE",
    "SKIPPED",
    "FAILED",
    "new_step",
    "start",
    "compute",
    "finish",
    "failed_record",
    "abandon",
    "calibrate_file",
    "params_digest",
    "file_sha256",
    "is_resource_error",
    "incomplete_reason",
]

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
_HASH_CHUNK = 8 << 20


@dataclass
class FileRecord:
    """What became of one input (JSON-serialisable; one line of the ledger).

    ``step_seconds`` holds the seconds of each pipeline step plus ``read`` and ``write``;
    ``peak_rss_bytes`` is the high-water mark of the calibrating process's resident memory
    so far (a worker's, over its lifetime); ``cause`` groups failures in a run's summary.
    ``input_sha256``, ``params_digest``, ``gpucal_version``, ``references`` and
    ``output_files`` are what a rerun compares before it skips the input.
    """

    input: str
    status: str = FAILED
    exit_code: int = 0
    error: str | None = None
    cause: str | None = None
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    backend: str | None = None
    device: str | None = None
    peak_rss_bytes: int | None = None
    host: str | None = None
    pid: int | None = None
    worker: str | None = None
    input_sha256: str | None = None
    params_digest: str | None = None
    gpucal_version: str = __version__
    references: dict[str, list[Any]] = field(default_factory=dict)
    output_files: list[list[Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Job:
    """One input between the phases: its step, its model and the record being filled."""

    record: FileRecord
    step: Any = None
    model: Any = None
    t0: float = field(default_factory=time.perf_counter)


# ------------------------------------------------------------------ fingerprints
def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in 8 MiB pieces (hashlib frees the GIL)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def params_digest(step: Any) -> str:
    """SHA-256 of a step's effective parameters (its sub-steps' included).

    ``save_results`` is left out: whether the caller or the step saves changes nothing in
    the products.
    """

    def plain(params: Any) -> dict[str, Any]:
        values = dataclasses.asdict(params)
        values.pop("save_results", None)
        return values

    tree: dict[str, Any] = {"class": f"{type(step).__module__}:{type(step).__name__}", "params": plain(step.params)}
    if hasattr(step, "steps"):
        tree["steps"] = {key: plain(sub.params) for key, sub in step.steps.items()}
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()


def _file_stat(path: str | os.PathLike[str]) -> list[Any]:
    st = os.stat(path)
    return [str(path), st.st_size, st.st_mtime_ns]


def _reference_identities(step: Any) -> dict[str, list[Any]]:
    """``{reftype: [record, path, size, mtime_ns]}`` of the references a run used."""
    out: dict[str, list[Any]] = {}
    steps = [step, *getattr(step, "steps", {}).values()]
    for sub in steps:
        for reftype, path in getattr(sub, "ref_paths", {}).items():
            record = sub.ref_records.get(reftype, path)
            if path == "N/A":
                out[reftype] = [record, path, None, None]
            else:
                _, size, mtime = _file_stat(path)
                out[reftype] = [record, path, size, mtime]
    return out


def _current_references(path: str, step: Any, previous: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Resolve now, for ``path``, the reference types a previous run used."""
    import roman_datamodels.datamodels as rdm

    from gpucal.refs import resolve

    overrides: dict[str, str | None] = {}
    for sub in [step, *getattr(step, "steps", {}).values()]:
        overrides.update({k: v for k, v in sub.reference_overrides().items() if v})
    with rdm.open(path) as model:  # metadata only: the arrays stay on disk
        resolved = resolve(model, list(previous), overrides)
    out: dict[str, list[Any]] = {}
    for reftype, res in resolved.items():
        if res.available:
            _, size, mtime = _file_stat(res.path)
            out[reftype] = [res.record, res.path, size, mtime]
        else:
            out[reftype] = [res.record, res.path, None, None]
    return out


def incomplete_reason(previous: dict[str, Any] | None, path: str, step: Any, sha256: str) -> str | None:
    """Why ``previous`` (a ledger record) does not let ``path`` be skipped; None if it does.

    The outputs are complete when the record says done (or skipped), every output is in
    place with the size and modification time recorded, and the input's checksum, the
    references (resolved again now), gpucal's version and the parameters are unchanged.
    """
    if not previous:
        return "no record"
    if previous.get("status") not in (DONE, SKIPPED):
        return f"last run {previous.get('status')}"
    if previous.get("gpucal_version") != __version__:
        return f"made by gpucal {previous.get('gpucal_version')}"
    if previous.get("params_digest") != params_digest(step):
        return "parameters changed"
    if previous.get("input_sha256") != sha256:
        return "input changed"
    files = previous.get("output_files") or []
    if not files:
        return "no outputs recorded"
    for name, size, mtime in files:
        try:
            if _file_stat(name)[1:] != [size, mtime]:
                return f"{name} changed"
        except OSError:
            return f"{name} missing"
    refs = previous.get("references") or {}
    try:
        if refs and _current_references(path, step, refs) != refs:
            return "references changed"
    except (GpucalError, OSError) as exc:
        return f"references not resolvable ({exc})"
    return None


# ---------------------------------------------------------------------- phases
def new_step(step_cls: Any, values: dict[str, Any], backend: Any = None) -> Any:
    """A fresh step of ``step_cls`` that leaves saving to :func:`finish`.

    ``backend`` (an already selected backend) spares the per-file backend selection.
    """
    step = step_cls.from_values(values)
    step.backend = backend
    # the caller writes the products (finish), not Step.run
    step.params = dataclasses.replace(step.params, save_results=False)
    step.commit_on_run = False
    return step


def start(path: str, step: Any, *, checksum: bool = False) -> Job:
    """Phase 1: ``step`` (fresh, from :func:`new_step`) and the input read into memory.

    Raises on a bad input; :func:`failed_record` turns the exception into the record.
    """
    from gpucal.io import open_model

    job = Job(FileRecord(input=path, host=socket.gethostname(), pid=os.getpid()), step=step)
    job.record.params_digest = params_digest(step)
    t0 = time.perf_counter()
    if checksum:
        job.record.input_sha256 = file_sha256(path)
    job.model = open_model(path)
    step.input_path = path
    job.record.step_seconds["read"] = time.perf_counter() - t0
    return job


def compute(job: Job) -> None:
    """Phase 2: run the step on the model in memory (raises on failure)."""
    result = job.step.run_model(job.model)  # the model itself (a pipeline's run returns a tuple)
    job.model = result
    backend = job.step.backend
    job.record.backend = getattr(backend, "name", None)
    job.record.device = getattr(backend, "device_name", None)
    job.record.step_seconds.update({k: float(v) for k, v in job.step.timings.items()})


def finish(job: Job, *, save: bool = True) -> FileRecord:
    """Phase 3: write the products, all together (:mod:`gpucal.products`), unless ``save``
    is False (then only what the steps saved themselves), and complete the record."""
    t0 = time.perf_counter()
    if save:
        job.step.save(job.model)
    job.step.commit_products()
    written = [str(Path(p).resolve()) for p in getattr(job.step, "written", [])]
    job.record.step_seconds["write"] = time.perf_counter() - t0
    job.record.outputs = written
    job.record.output_files = [_file_stat(p) for p in written]
    job.record.references = _reference_identities(job.step)
    job.record.status, job.record.exit_code = DONE, 0
    return _close(job)


def _close(job: Job) -> FileRecord:
    job.record.seconds = time.perf_counter() - job.t0
    job.record.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    job.model = None  # products and arrays are freed with the job, not kept by the record
    return job.record


def abandon(job: Job) -> None:
    """Drop the products staged for ``job`` (nothing of it reaches the output folder)."""
    products = getattr(job.step, "products", None)
    if products is not None:
        products.abandon()
        job.step.products = None


def is_resource_error(exc: BaseException) -> bool:
    """Host or device memory ran out: the worker, not the input, is the problem."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "DeviceMemoryError":
        return True
    return type(exc).__name__ in ("OutOfMemoryError", "CUDARuntimeError") and "memory" in str(exc).lower()


def _cause(exc: BaseException) -> str:
    if isinstance(exc, NoScienceDataError):
        return "no science data"
    if isinstance(exc, InputFileError):
        return "bad input"
    if isinstance(exc, ReferenceFileError):
        return "reference file"
    if isinstance(exc, BackendUnavailableError):
        return "backend unavailable"
    if isinstance(exc, ParameterError):
        return "parameters"
    if is_resource_error(exc):
        return "out of memory"
    if isinstance(exc, GpucalError):
        return "error"
    return "unexpected error"


def failed_record(job_or_path: Job | str, exc: BaseException) -> FileRecord:
    """The record of an input whose calibration raised ``exc`` (one-line message)."""
    if isinstance(job_or_path, Job):
        job = job_or_path
        abandon(job)
    else:
        job = Job(FileRecord(input=job_or_path, host=socket.gethostname(), pid=os.getpid()))
    path = job.record.input
    if isinstance(exc, GpucalError):
        text = str(exc)
    elif is_resource_error(exc):
        text = f"{path}: out of memory"
    else:
        text = f"{path}: {type(exc).__name__}: {exc}"
    job.record.status = FAILED
    job.record.exit_code = exc.exit_code if isinstance(exc, GpucalError) else 1
    job.record.error = text.splitlines()[0] if text else f"{path}: failed"
    job.record.cause = _cause(exc)
    log.error("%s", job.record.error)
    log.debug("%s failed", path, exc_info=exc)
    return _close(job)


def calibrate_file(path: str, step_cls: type, values: dict[str, Any], *, previous: dict[str, Any] | None = None,
                   clobber: bool = True, checksum: bool = False, backend: Any = None,
                   compute_lock: contextlib.AbstractContextManager[Any] | None = None,
                   reraise_resource_errors: bool = False) -> FileRecord:
    """Calibrate one input to its outputs and return its record (never raises for a bad file).

    Parameters
    ----------
    path : str
        The input (Level 1 or ramp ASDF file).
    step_cls : type
        The step or pipeline class (``ExposurePipeline`` for ``roman_elp``).
    values : dict
        Its parameter values, as ``step_cls.from_values`` takes them.
    previous : dict, optional
        The input's last ledger record: when ``clobber`` is off and it shows complete
        outputs from the same input, references, version and parameters, the input is
        skipped (status ``skipped``, the record carried forward).
    checksum : bool
        Record the input's SHA-256 (implied by ``previous`` or ``clobber=False``).
    compute_lock : context manager, optional
        Held around the compute phase only, so reading and writing of other files on the
        same worker overlap it while one file at a time uses the device.
    reraise_resource_errors : bool
        Re-raise out-of-memory errors instead of recording them (a distributed worker lets
        Dask retry the input elsewhere).
    """
    checksum = checksum or previous is not None or not clobber
    job: Job | None = None
    try:
        if previous and not clobber:
            skipped = _skip_record(path, step_cls, values, previous)
            if skipped is not None:
                return skipped
        job = start(path, new_step(step_cls, values, backend), checksum=checksum)
        with compute_lock or contextlib.nullcontext():
            compute(job)
        return finish(job)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            if job is not None:
                abandon(job)
            raise
        if reraise_resource_errors and is_resource_error(exc):
            raise
        return failed_record(job or path, exc)


def _skip_record(path: str, step_cls: type, values: dict[str, Any], previous: dict[str, Any]) -> FileRecord | None:
    """The ``skipped`` record of ``path`` when ``previous`` shows complete outputs, else None."""
    t0 = time.perf_counter()
    step = new_step(step_cls, values)
    try:
        sha = file_sha256(path)
    except OSError:
        return None  # the calibration attempt reports the unreadable input
    reason = incomplete_reason(previous, path, step, sha)
    if reason is not None:
        log.info("%s: calibrated again (%s)", path, reason)
        return None
    record = FileRecord.from_dict(previous)
    record.status, record.error, record.cause, record.exit_code = SKIPPED, None, None, 0
    record.seconds = time.perf_counter() - t0
    record.host, record.pid = socket.gethostname(), os.getpid()
    log.info("%s: outputs complete (ledger), skipped", path)
    return record
