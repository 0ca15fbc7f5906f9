"""``strun``'s distributed options: ``--workers``, ``--scheduler``, ``--scheduler-file``, ...

Only the options and the run's reporting live here (no science): the run itself is
:func:`gpucal.scale.run.calibrate_many`.  This module imports nothing heavy, so
``strun -h`` stays instant.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import click

__all__ = ["OPTIONS", "DISTRIBUTED_KEYS", "run_distributed", "wants_distributed"]

log = logging.getLogger(__name__)

OPTIONS: list[click.Parameter] = [
    click.Option(["--workers"], type=click.IntRange(min=1), default=None, metavar="N",
                 help="Calibrate on a local Dask cluster of N worker processes (on a GPU machine: dask-cuda, "
                      "workers pinned to the GPUs, several per GPU when N exceeds them). Needs gpucal[distributed]."),
    click.Option(["--scheduler"], default=None, metavar="ADDRESS",
                 help="Calibrate on a running Dask cluster (e.g. tcp://host:8786). Needs gpucal[distributed]."),
    click.Option(["--scheduler-file"], default=None, metavar="PATH",
                 help="Like --scheduler, from the file `dask scheduler --scheduler-file` wrote."),
    click.Option(["--files-per-worker"], type=click.IntRange(1, 8), default=None, metavar="N",
                 help="With --workers: files a worker holds at once (one computes while the others are read or "
                      "written; threads per worker). Default 2."),
    click.Option(["--retries"], type=click.IntRange(min=0), default=None, metavar="N",
                 help="Distributed runs: times an input is retried on another worker when it runs out of memory "
                      "or (with --workers) its worker dies; a running scheduler's own "
                      "distributed.scheduler.allowed-failures governs deaths there. A bad input is never retried. "
                      "Default 2."),
    click.Option(["--recycle-after"], type=click.IntRange(min=0), default=None, metavar="K",
                 help="Distributed runs: restart each worker process after K files (0: never). Default 0."),
    click.Option(["--clobber"], is_flag=True, default=None,
                 help="Distributed runs: calibrate every input again, even those the run's ledger "
                      "(gpucal_ledger.jsonl beside the outputs) shows complete."),
    click.Option(["--dashboard-address"], default=None, metavar="[HOST]:PORT",
                 help="With --workers: where the Dask dashboard listens. Default :8787 (another port if busy)."),
]
DISTRIBUTED_KEYS = tuple(p.name for p in OPTIONS if p.name)


def wants_distributed(opts: dict[str, Any]) -> bool:
    """Whether the command line asks for a distributed run; usage errors for odd mixes."""
    chosen = [name for name in ("workers", "scheduler", "scheduler_file") if opts.get(name) is not None]
    if len(chosen) > 1:
        raise click.UsageError("give only one of --workers, --scheduler and --scheduler-file")
    local_only = [name for name in ("files_per_worker", "dashboard_address") if opts.get(name) is not None]
    if local_only and opts.get("workers") is None:
        raise click.UsageError(f"--{local_only[0].replace('_', '-')} needs --workers")
    if not chosen:
        extra = [name for name in ("retries", "recycle_after", "clobber") if opts.get(name) is not None]
        if extra:
            raise click.UsageError(f"--{extra[0].replace('_', '-')} needs --workers, --scheduler or --scheduler-file")
        return False
    return True


def run_distributed(step_cls: Any, values: dict[str, Any], inputs: list[str], opts: dict[str, Any],
                    verbose: bool) -> int:
    """Start or join the cluster, calibrate ``inputs``, print the summary; the exit status."""
    from gpucal.errors import GpucalError
    from gpucal.scale import require
    from gpucal.scale.run import calibrate_many, plan, summarize

    require("distributed")  # (importing distributed sets up its loggers, so quieten them after)
    if not verbose:  # Dask's own INFO lines (scheduler and worker start/stop) would drown the run's
        logging.getLogger("distributed").setLevel(logging.WARNING)
    the_plan = plan(inputs, step_cls, values)  # bad parameters and collisions before any cluster starts
    cluster = client = None
    try:
        from distributed import Client

        from gpucal.scale.cluster import connect, start_local_cluster

        try:
            if opts.get("workers") is not None:
                cluster = start_local_cluster(
                    opts["workers"], backend=str(values.get("backend", "auto")),
                    files_per_worker=opts.get("files_per_worker") or 2, retries=_default(opts, "retries", 2),
                    dashboard_address=opts.get("dashboard_address") or ":8787")
                client = Client(cluster)
            else:
                client = connect(opts.get("scheduler"), opts.get("scheduler_file"))
        except GpucalError:
            raise
        except Exception as exc:  # no scheduler there, a cluster that cannot start
            where = opts.get("scheduler") or opts.get("scheduler_file") or f"{opts.get('workers')} local workers"
            raise GpucalError(f"cannot start or reach the Dask cluster ({where}): {type(exc).__name__}: {exc}") \
                from None
        n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        click.echo(f"Dask dashboard: {_dashboard(client)} ({n_workers} workers)", err=True)
        start = time.perf_counter()
        with click.progressbar(length=len(the_plan.inputs), file=sys.stderr,
                               label=f"Calibrating on {client.scheduler.address}", show_pos=True,
                               show_eta=True) as bar:
            records = calibrate_many(inputs, client, step=step_cls, retries=_default(opts, "retries", 2),
                                     clobber=bool(opts.get("clobber")),
                                     recycle_after=_default(opts, "recycle_after", 0),
                                     on_record=lambda record: bar.update(1), **values)
        summary = summarize(records, time.perf_counter() - start)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    for record in records:
        if record.status == "failed":
            click.echo(f"strun: error: {record.error or record.input + ' failed'}", err=True)
    click.echo(f"{len(records)} inputs: {summary.line()}; ledger {the_plan.ledger.path}",
               err=True)
    codes = {r.exit_code for r in records if r.status == "failed"}
    if not codes:
        return 0
    return codes.pop() if len(codes) == 1 else 1


def _dashboard(client: Any) -> str:
    """The dashboard's address, or why there is none (it needs bokeh)."""
    try:
        link = client.dashboard_link
    except (KeyError, OSError):
        link = None
    return link or "not served (it needs bokeh: pip install 'gpucal[distributed]')"


def _default(opts: dict[str, Any], name: str, default: int) -> int:
    value = opts.get(name)
    return default if value is None else int(value)
