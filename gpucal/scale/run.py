"""The client side of a distributed run: plan, submit, collect, record.

:func:`calibrate_many` submits one Dask task per input (``retries`` for out-of-memory
errors; worker deaths are retried by the scheduler), appends each input's record to the
ledger as it ends, and returns the records in input order.  Every input ends in exactly
one of ``done``, ``skipped`` or ``failed``; an input whose task could not finish at all
(its workers kept dying) is ``failed`` with cause ``worker died``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpucal import work
from gpucal.errors import GpucalError, ParameterError
from gpucal.work import FileRecord

__all__ = ["calibrate_many", "RunSummary", "summarize", "plan"]

log = logging.getLogger(__name__)


class OutputCollisionError(ParameterError):
    """Two inputs of one run would write the same product (a usage error, exit 2)."""

    exit_code = 2


@dataclass
class Plan:
    """What a run will do: absolute inputs, the step class, its values and the ledger."""

    inputs: list[str]
    step_cls: Any
    target: str
    values: dict[str, Any]
    output_dir: Path
    ledger: Any


def plan(paths: Iterable[str | os.PathLike[str]], step: str | type, params: dict[str, Any],
         ledger: bool = True) -> Plan:
    """Resolve inputs and parameters on the client; refuse bad parameters and collisions.

    Relative paths (inputs, ``output_dir``) are made absolute here, so workers elsewhere
    (another working directory) read and write the same files.
    """
    from gpucal.batch import expand_inputs
    from gpucal.registry import load_class, resolve_name
    from gpucal.scale.ledger import LEDGER_NAME, Ledger

    if isinstance(step, str):
        target = resolve_name(step)
        if target is None:
            raise ParameterError(f"unknown step or pipeline {step!r}")
        step_cls = load_class(target)
    else:
        step_cls, target = step, f"{step.__module__}:{step.__name__}"
    inputs = [os.path.abspath(p) for p in expand_inputs([os.fspath(p) for p in paths])]
    values = dict(params)
    out_dir = Path(os.path.abspath(os.path.expandvars(os.path.expanduser(str(values.get("output_dir") or ".")))))
    values["output_dir"] = str(out_dir)
    work.new_step(step_cls, values)  # parameter errors now, once, not per file
    _check_collisions(inputs, step_cls, values)
    return Plan(inputs, step_cls, target, values, out_dir, Ledger(out_dir / LEDGER_NAME) if ledger else None)


def _check_collisions(inputs: Sequence[str], step_cls: Any, values: dict[str, Any]) -> None:
    """No product may be another input's product, an input or a reference; every output
    folder writable (:func:`gpucal.preflight.plan_outputs`, every product name as the
    workers will form it)."""
    from gpucal.preflight import OutputClashError, plan_outputs

    try:
        plan_outputs(work.new_step(step_cls, values), inputs)
    except OutputClashError as exc:
        raise OutputCollisionError(str(exc)) from None


@dataclass
class RunSummary:
    """Counts of a run's outcomes; failures grouped by cause."""

    done: int
    skipped: int
    failed: int
    causes: dict[str, int]
    seconds: float

    def line(self) -> str:
        causes = ", ".join(f"{cause}: {n}" for cause, n in sorted(self.causes.items()))
        text = f"{self.done} done, {self.skipped} skipped, {self.failed} failed"
        return text + (f" ({causes})" if causes else "") + f" in {self.seconds:.1f} s"


def summarize(records: Sequence[FileRecord], seconds: float) -> RunSummary:
    counts = Counter(r.status for r in records)
    causes = Counter(r.cause or "error" for r in records if r.status == work.FAILED)
    return RunSummary(counts[work.DONE], counts[work.SKIPPED], counts[work.FAILED], dict(causes), seconds)


def calibrate_many(paths: Iterable[str | os.PathLike[str]], client: Any = None, *, step: str | type = "roman_elp",
                   retries: int = 2, clobber: bool = False, ledger: bool = True, recycle_after: int = 0,
                   on_record: Callable[[FileRecord], None] | None = None, **pipeline_params: Any) -> list[FileRecord]:
    """Calibrate many inputs, on a Dask cluster when ``client`` is given; return their records.

    Parameters
    ----------
    paths : iterable of str or path
        Inputs (list files ``.txt``/``.lst``/``.list`` are expanded).
    client : distributed.Client, optional
        Any client of a running cluster (yours, or one gpucal started).  Without one, the
        inputs are calibrated one after another in this process, with the same records,
        ledger and skipping.
    step : str or class
        The pipeline or step: an alias (``roman_elp``) or the class.
    retries : int
        Retries of an input whose task raised an out-of-memory error (each on a freshly
        started worker).  Worker deaths are retried by the scheduler.
    clobber : bool
        Calibrate every input again, even those the ledger shows complete.
    ledger : bool
        Keep the run's ledger (``gpucal_ledger.jsonl`` in ``output_dir``) and skip the
        inputs whose outputs are complete.
    recycle_after : int
        Restart each worker process after this many files (0: never).
    on_record : callable, optional
        Called with each record as its input ends (progress).
    **pipeline_params
        The pipeline's parameters, as ``ExposurePipeline.call`` takes them (``backend``,
        ``output_dir``, ``steps={"jump": {...}}``, ...).

    Returns
    -------
    list of FileRecord
        One per input, in input order.

    Raises
    ------
    ParameterError
        Bad parameters, or two inputs that would write the same product (nothing runs).
    """
    the_plan = plan(paths, step, pipeline_params, ledger)
    previous = the_plan.ledger.latest() if the_plan.ledger is not None else {}
    records: dict[str, FileRecord] = {}

    def ended(record: FileRecord) -> None:
        if the_plan.ledger is not None:
            the_plan.ledger.append(record)
        records[record.input] = record
        if on_record is not None:
            on_record(record)

    if client is None:
        for path in the_plan.inputs:
            ended(work.calibrate_file(path, the_plan.step_cls, the_plan.values, previous=previous.get(path),
                                      clobber=clobber or not ledger, checksum=ledger))
    else:
        _run_on_cluster(client, the_plan, previous, retries=retries, clobber=clobber or not ledger,
                        recycle_after=recycle_after, ended=ended)
    return [records[p] for p in the_plan.inputs]


def _run_on_cluster(client: Any, the_plan: Plan, previous: dict[str, dict[str, Any]], *, retries: int,
                    clobber: bool, recycle_after: int, ended: Callable[[FileRecord], None]) -> None:
    from gpucal.scale import require

    require("distributed")
    from distributed import as_completed

    from gpucal.scale.worker import PLUGIN_NAME, GpucalWorkerPlugin, calibrate_task

    backend = str(the_plan.values.get("backend", "auto"))
    client.register_plugin(GpucalWorkerPlugin(backend, recycle_after), name=PLUGIN_NAME)
    futures: dict[Any, str] = {}
    token = f"{os.getpid()}-{time.time_ns()}"
    from gpucal.asdf_verify import verify_enabled

    verify = verify_enabled()  # the client's choice travels with each task
    resubmitted: dict[str, int] = {}

    def submit(i: int, path: str) -> Any:
        attempt = resubmitted.get(path, 0)
        future = client.submit(calibrate_task, path, the_plan.target, the_plan.values, previous.get(path), clobber,
                               verify, key=f"gpucal-{Path(path).name}-{i}-{token}-{attempt}", pure=False,
                               retries=retries)
        futures[future] = path
        return future

    index = {path: i for i, path in enumerate(the_plan.inputs)}
    for i, path in enumerate(the_plan.inputs):
        submit(i, path)
    try:
        pending = as_completed(list(futures))
        for future in pending:
            path = futures.pop(future)
            if future.status == "cancelled" and resubmitted.get(path, 0) < max(1, retries):
                # the cluster dropped the task (a worker restarted under it while recycling):
                # nothing was written under a final name, so it runs again, a bounded number of times
                resubmitted[path] = resubmitted.get(path, 0) + 1
                log.warning("%s: its task was dropped by the cluster; submitted again (%d)", path, resubmitted[path])
                pending.add(submit(index[path], path))
                continue
            ended(_record_of(future, path, retries))
            future.release()
    except BaseException:
        client.cancel(list(futures))  # an interrupted client leaves no task running for it
        raise
    _recover(the_plan.output_dir)


def _recover(folder: Path) -> None:
    """Clear what workers killed during the run left staged in ``folder`` (their hidden set
    folders; only those of dead processes on this host can be judged here, the rest are
    recovered by the next run on their host)."""
    from gpucal.products import folder_lock, recover_folder

    try:
        with folder_lock(folder):
            recover_folder(folder)
    except OSError as exc:
        log.warning("could not tidy %s after the run: %s", folder, exc)


def _record_of(future: Any, path: str, retries: int) -> FileRecord:
    """The record a finished task returned, or a failed record for a task that raised."""
    if future.status == "finished":
        return FileRecord.from_dict(future.result())
    if future.status != "error":  # cancelled (or lost with no result to come)
        return work.failed_record(path, GpucalError(f"{path}: its task was {future.status}"))
    exc = future.exception()
    if type(exc).__name__ == "KilledWorker":
        record = FileRecord(input=path, exit_code=1, cause="worker died",
                            error=f"{path}: the workers calibrating it died repeatedly (killed, or out of memory); "
                                  "given up")
        log.error("%s", record.error)
        return record
    record = work.failed_record(path, exc)
    if work.is_resource_error(exc):
        record.error = f"{record.error} (after {retries} retries on fresh workers)"
    return record
