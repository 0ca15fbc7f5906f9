"""Command line: ``strun`` (stpipe's conventions) and ``gpucal`` (demo, info).

No science here: the CLI builds parameters, configures logging and calls the pipeline.
Exit status: 0 success; 1 an error (one line on stderr; traceback only with --debug or
--verbose); 2 usage error, or products that would overwrite an input, a reference or each
other; 64 an input with no science data; 128 + the signal when interrupted (130, 143).  Heavy imports happen inside
commands so ``strun -h`` is instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from gpucal import __version__, preview_cli
from gpucal.registry import known_names, load_class, resolve_name

__all__ = ["strun_main", "gpucal_main", "run_strun"]

log = logging.getLogger("gpucal.cli")

_FLAG_OPTIONS = {"-h", "--help", "-v", "--verbose", "--debug", "--disable-crds-steppars", "--version",
                 "--no-verify-checksums"}
_VALUE_OPTIONS = {"--log-level", "--log-file", "--log-stream", "--save-parameters", "--logcfg"}
EXIT_USAGE = 2


# --------------------------------------------------------------------------- logging
def configure_logging(level: str = "INFO", log_file: str | None = None, stream: str = "stderr") -> None:
    """stpipe's default format, to stderr (or stdout / nowhere), optional file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_gpucal", False):
            root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    numeric = getattr(logging, str(level).upper(), None)
    if not isinstance(numeric, int):
        raise click.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    handlers: list[logging.Handler] = []
    if stream != "null":
        handlers.append(logging.StreamHandler(sys.stdout if stream == "stdout" else sys.stderr))
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.setLevel(numeric)
        handler._gpucal = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(numeric, logging.INFO))
    logging.captureWarnings(True)
    for noisy in ("CRDS", "asdf", "py.warnings"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


# ------------------------------------------------------------------ strun: options
def _option_table(step_cls: Any) -> list[tuple[str, str, str, Any]]:
    """(option, step key or '', parameter, field) for every parameter of ``step_cls``."""
    rows = [(f"--{f.name}", "", f.name, f) for f in dataclasses.fields(step_cls.Params)]
    for key, sub in getattr(step_cls, "step_defs", {}).items():
        for f in dataclasses.fields(sub.Params):
            if f.name == "backend":
                continue  # one backend per run, chosen at the top
            rows.append((f"--steps.{key}.{f.name}", key, f.name, f))
    return rows


def _help_text(f: Any) -> str:
    from gpucal.params import describe_default

    text = f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    if choices:
        text += f" One of: {', '.join(choices)}."
    return text + describe_default(f.default)


def _build_command(name: str, step_cls: Any, defaults: dict[str, Any]) -> click.Command:
    from gpucal.scale import cli as scale_cli

    table = _option_table(step_cls)
    params: list[click.Parameter] = [click.Argument(["inputs"], nargs=-1, required=False)]
    for i, (option, _key, _name, f) in enumerate(table):
        params.append(click.Option([option, f"p{i}"], type=str, default=None, help=_help_text(f), metavar="VALUE"))
    params += [
        click.Option(["-v", "--verbose"], is_flag=True, help="Log at DEBUG level (and show tracebacks)."),
        click.Option(["--debug"], is_flag=True, help="Show the traceback of an error."),
        click.Option(["--log-level"], default="INFO", show_default=True, help="Logging level."),
        click.Option(["--log-file"], default=None, help="Also write the log to this file."),
        click.Option(["--log-stream"], type=click.Choice(["stderr", "stdout", "null"]), default="stderr",
                     show_default=True, help="Where the log goes."),
        click.Option(["--save-parameters"], default=None, help="Write the final parameters to this ASDF file."),
        click.Option(["--disable-crds-steppars"], is_flag=True,
                     help="Accepted for stpipe compatibility (gpucal does not fetch parameters from CRDS)."),
        click.Option(["--no-verify-checksums"], is_flag=True,
                     help="Do not verify the MD5 checksum of each ASDF block read (inputs and reference "
                          "files; verified by default). Same as GPUCAL_VERIFY_CHECKSUMS=0."),
        click.Option(["--logcfg"], default=None, hidden=True),
        *scale_cli.OPTIONS,
        *preview_cli.STRUN_OPTIONS,
    ]
    doc = (step_cls.__doc__ or "").strip().splitlines()[0] if step_cls.__doc__ else ""

    def callback(inputs: tuple[str, ...], verbose: bool, debug: bool, log_level: str, log_file: str | None,
                 log_stream: str, save_parameters: str | None, disable_crds_steppars: bool, logcfg: str | None,
                 no_verify_checksums: bool, preview: bool, preview_stretch: str, **opts: Any) -> int:
        # the log and parameter files are checked with the products (never an input or a
        # reference); the log file is opened only then, so it can never truncate one
        side_files = [(opt, path) for opt, path in (("--log-file", log_file), ("--save-parameters", save_parameters))
                      if path]
        level = "DEBUG" if verbose else log_level
        configure_logging(level, None, log_stream)
        scale = {key: opts.pop(key) for key in scale_cli.DISTRIBUTED_KEYS}
        values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
        steps = values.setdefault("steps", {}) if hasattr(step_cls, "step_defs") else None
        for i, (_option, key, pname, _f) in enumerate(table):
            value = opts.get(f"p{i}")
            if value is None:
                continue
            if key:
                assert steps is not None
                steps.setdefault(key, {})[pname] = value
            else:
                values[pname] = value
        if steps is not None and not steps:
            values.pop("steps")
        try:
            with _checksums(not no_verify_checksums):
                return _execute(step_cls, values, list(inputs), side_files, debug or verbose,
                                lambda: configure_logging(level, log_file, log_stream), scale,
                                preview_stretch if preview else None)
        except KeyboardInterrupt as exc:  # here, before click turns it into a bare Abort
            return _interrupted(exc)

    return click.Command(
        name=name, params=params, callback=callback, help=doc,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
        epilog="Exit status: 0 success, 1 error, 2 usage error (also: a product that would overwrite an input, "
               "a reference or another product), 64 input without science data, 130/143 interrupted "
               "(SIGINT/SIGTERM).",
    )


@contextlib.contextmanager
def _checksums(verify: bool) -> Iterator[None]:
    """``--no-verify-checksums``: GPUCAL_VERIFY_CHECKSUMS=0 for this run (and its child processes)."""
    from gpucal.asdf_verify import ENV_VERIFY

    if verify:
        yield
        return
    previous = os.environ.get(ENV_VERIFY)
    os.environ[ENV_VERIFY] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_VERIFY, None)
        else:
            os.environ[ENV_VERIFY] = previous


def _execute(step_cls: Any, values: dict[str, Any], given: list[str], side_files: list[tuple[str, str]],
             show_traceback: bool, open_log: Callable[[], None], scale: dict[str, Any] | None = None,
             preview: str | None = None) -> int:
    """Run ``step_cls`` on the inputs; ``preview`` (a stretch) also writes PNG quick looks."""
    from gpucal.batch import expand_inputs, list_files
    from gpucal.errors import GpucalError
    from gpucal.preflight import plan_outputs
    from gpucal.scale import cli as scale_cli

    if not given:
        raise click.UsageError("an input file is required")
    distributed = scale_cli.wants_distributed(scale or {})
    inputs = expand_inputs(given)
    if not inputs:
        raise click.UsageError("the list file names no inputs")
    save_parameters = dict(side_files).get("--save-parameters")
    try:
        preview_cli.check_strun_preview(preview, distributed)
        step = step_cls.from_values(values)
        # strun saves the top step's result, as stpipe does
        step.params = dataclasses.replace(step.params, save_results=True)
        # every product named and checked before any work (and dead runs' temporaries cleaned)
        plan_outputs(step, inputs, list_files(given), side_files)
        open_log()
        if save_parameters:
            _save_parameters(step_cls, step, save_parameters)
    except GpucalError as exc:
        _error(str(exc))
        return exc.exit_code
    if distributed:
        try:
            return scale_cli.run_distributed(step_cls, values, inputs, scale or {}, show_traceback)
        except GpucalError as exc:
            _error(str(exc))
            return exc.exit_code
    if len(inputs) == 1:
        return _run_one(step_cls, values, inputs[0], show_traceback, preview)
    return _run_many(step_cls, values, inputs, preview)


def _run_many(step_cls: Any, values: dict[str, Any], inputs: list[str], preview: str | None = None) -> int:
    """Batch mode: read ahead and write behind in threads, a progress bar, failures isolated."""
    import threading

    from gpucal.batch import run_batch
    from gpucal.work import new_step

    def make_step() -> Any:
        return new_step(step_cls, values)  # save_results off: the writer thread saves

    lock = threading.Lock()
    with click.progressbar(length=len(inputs), label=f"Calibrating {len(inputs)} files", file=sys.stderr,
                           show_pos=True, show_eta=True) as bar:
        def done(outcome: Any) -> None:
            with lock:
                bar.update(1)

        result = run_batch(inputs, make_step, on_done=done, report_interrupt=True)
    for outcome in result.failed:
        _error(outcome.error or f"{outcome.input} failed")
    n_ok = len(result.done)
    status = 0
    for outcome in result.done:
        status = preview_cli.strun_previews(outcome.outputs, preview, outcome.step_seconds, _error) or status
    click.echo(f"{n_ok} of {len(inputs)} files calibrated in {result.wall_seconds:.1f} s", err=True)
    if result.interrupted is not None:
        signame = signal.Signals(result.interrupted).name
        _error(f"interrupted by {signame}: {n_ok} of {len(inputs)} files done, {len(result.not_done)} not done")
        click.echo("done: " + " ".join(o.input for o in result.done), err=True)
        if result.failed:
            click.echo("failed: " + " ".join(o.input for o in result.failed), err=True)
        click.echo("not done: " + " ".join(result.not_done), err=True)
        return 128 + result.interrupted
    if not result.failed:
        return status
    codes = {o.exit_code for o in result.failed}
    return codes.pop() if len(codes) == 1 else 1


def _run_one(step_cls: Any, values: dict[str, Any], path: str, show_traceback: bool,
             preview: str | None = None) -> int:
    from gpucal.errors import GpucalError

    step = step_cls.from_values(values)
    step.params = dataclasses.replace(step.params, save_results=True)
    try:
        step.run(path)
    except GpucalError as exc:
        if show_traceback:
            log.exception("%s failed", path)
        _error(str(exc))
        return exc.exit_code
    except MemoryError:
        _error(f"{path}: out of memory")
        return 1
    except Exception as exc:  # an unexpected failure: still one line unless asked
        if show_traceback:
            log.exception("%s failed", path)
        _error(f"{path}: {type(exc).__name__}: {exc}")
        return 1
    return preview_cli.strun_previews(list(step.written), preview, dict(step.timings), _error)


def _save_parameters(step_cls: Any, step: Any, path: str) -> None:
    from gpucal.config import write_parameter_file

    def public(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}

    class_path = f"{step_cls.__module__.replace('.exposure', '')}.{step_cls.__name__}"
    steps = None
    if hasattr(step, "steps"):
        steps = {key: (f"{sub.__class__.__module__}.{sub.__class__.__name__}", public(sub.params))
                 for key, sub in step.steps.items()}
    write_parameter_file(path, class_path, step_cls.__name__, public(step.params), steps)


def _error(message: str) -> None:
    click.echo(f"strun: error: {message.splitlines()[0] if message else 'failed'}", err=True)


def _split_argv(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(options before the class, class/config name, the rest)."""
    before: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-"):
            before.append(tok)
            if tok in _VALUE_OPTIONS and i + 1 < len(argv):
                before.append(argv[i + 1])
                i += 1
            i += 1
            continue
        return before, tok, argv[i + 1:]
    return before, None, []


def _print_versions() -> None:
    lines = [f"gpucal: {__version__}"]
    for dist in ("roman_datamodels", "rad", "asdf", "crds", "stpipe", "romancal", "cupy-cuda12x", "cupy-cuda13x"):
        try:
            from importlib.metadata import version

            lines.append(f"{dist}: {version(dist)}")
        except Exception:  # not installed
            continue
    click.echo("\n".join(lines))


def _delegate_to_stpipe(argv: list[str]) -> int | None:
    try:
        from stpipe._cli import strun as stpipe_strun  # type: ignore[import-not-found]
    except ImportError:
        return None
    sys.argv = ["strun", *argv]
    try:
        stpipe_strun.main()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def run_strun(argv: list[str]) -> int:
    """Run ``strun`` with ``argv`` (without the program name); return the exit status."""
    from gpucal.allocator import tune_allocator

    tune_allocator()
    if "--version" in argv:
        _print_versions()
        return 0
    before, name, rest = _split_argv(argv)
    if name is None:
        click.echo("usage: strun <class | alias | parameter file> <input> [--param=value ...]", err=True)
        click.echo("strun: error: the following arguments are required: cfg_file_or_class", err=True)
        click.echo("gpucal provides: " + ", ".join(known_names()), err=True)
        return EXIT_USAGE
    defaults: dict[str, Any] = {}
    target = resolve_name(name)
    if target is None and os.path.isfile(name):
        from gpucal.config import read_parameter_file
        from gpucal.errors import ParameterError

        try:
            cls_name, defaults = read_parameter_file(name)
        except ParameterError as exc:
            _error(str(exc))
            return 1
        target = resolve_name(cls_name) if cls_name else None
        if target is None:
            delegated = _delegate_to_stpipe(argv)
            if delegated is not None:
                return delegated
            _error(f"parameter file {name} names class {cls_name!r}, which gpucal does not provide")
            return 1
    if target is None:
        delegated = _delegate_to_stpipe(argv)
        if delegated is not None:
            return delegated
        _error(f"unknown step or pipeline {name!r}; gpucal provides: " + ", ".join(known_names()))
        return EXIT_USAGE
    step_cls = load_class(target)
    if defaults:
        from gpucal.config import adapt_file_values

        defaults = adapt_file_values(step_cls, defaults, name)
    command = _build_command(f"strun {name}", step_cls, defaults)
    try:
        rv = command.main(args=before + rest, prog_name=f"strun {name}", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _interrupted(exc.__cause__)
        _error("aborted")
        return 130
    return int(rv or 0)


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    from gpucal.batch import Interrupted

    raise Interrupted(signum)


def _interrupted(exc: KeyboardInterrupt) -> int:
    from gpucal.batch import interrupt_signal

    signum = interrupt_signal(exc)
    _error(f"interrupted by {signal.Signals(signum).name}")
    return 128 + signum


def strun_main(argv: list[str] | None = None) -> None:
    """Console entry point of ``strun``.

    SIGTERM is turned into an interrupt like Ctrl-C, so a run stops the same way: staged
    products dropped, exit status 128 + the signal number (130 SIGINT, 143 SIGTERM).
    """
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        status = run_strun(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt as exc:
        status = _interrupted(exc)
    sys.exit(status)


# ------------------------------------------------------------------------- gpucal
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpucal")
def gpucal_main() -> None:
    """gpucal: GPU-accelerated Roman WFI calibration (run pipelines with `strun`)."""


gpucal_main.add_command(preview_cli.preview)

@gpucal_main.command()
@click.option("--size", default="4096", show_default=True,
              help="Frame size NY or NYxNX (incl. the 4-px border; NX a multiple of 32, >= 256).")
@click.option("--nresultants", type=click.IntRange(4, 10), default=8, show_default=True,
              help="Resultants in the uneven read pattern.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (same seed, same files).")
@click.option("--backend", type=click.Choice(["auto", "gpu", "cpu"]), default="auto", show_default=True,
              help="Array backend for the calibration run.")
@click.option("--no-run", is_flag=True, help="Only write the demo data and references.")
@click.option("--log-level", default="INFO", show_default=True, help="Logging level (DEBUG, INFO, WARNING, ...).")
def demo(size: str, nresultants: int, seed: int, backend: str, no_run: bool, log_level: str) -> None:
    """Write a synthetic exposure, references and a CRDS cache here, then calibrate it."""
    from gpucal.allocator import tune_allocator
    from gpucal.demo.run import crds_command_env, prepare_demo, run_demo

    tune_allocator()
    configure_logging(log_level)
    try:
        ny, nx = _parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    result = prepare_demo(".", ny=ny, nx=nx, nresultants=nresultants, seed=seed)
    click.echo(f"Demo exposure: {result.uncal} ({ny}x{nx}, {nresultants} resultants; truth in {result.truth})")
    click.echo(f"References:    {result.references['mask'].parent}/ (CRDS cache {result.crds_path}, {result.context})")
    click.echo(f"Generated in {result.generate_seconds:.1f} s")
    command = f"{crds_command_env(result)} strun roman_elp {result.uncal} --backend={backend}"
    if no_run:
        click.echo(f"To calibrate it:\n  {command}")
        return
    result = run_demo(result, backend=backend)
    if result.status:
        click.echo(f"gpucal demo: error: {result.error}", err=True)
        sys.exit(result.status)
    click.echo("\nPer-step time (s):")
    total = result.step_seconds.pop("roman_elp", sum(result.step_seconds.values()))
    for step, seconds in result.step_seconds.items():
        click.echo(f"  {step:<16s}{seconds:9.2f}")
    click.echo(f"  {'total':<16s}{total:9.2f}")
    click.echo("\nOutputs:")
    for path in result.outputs:
        click.echo(f"  {path.resolve()}")
    click.echo(f"\nSame run by hand:\n  {command}")


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) == 1:
        ny = nx = int(parts[0])
    elif len(parts) == 2:
        ny, nx = int(parts[0]), int(parts[1])
    else:
        raise ValueError(f"{text!r} is not NY or NYxNX")
    if ny < 16 or nx < 256 or nx % 32 or ny > 4096 or nx > 4096:
        raise ValueError(f"{text!r}: need 16 <= NY <= 4096 and 256 <= NX <= 4096 with NX a multiple of 32")
    return ny, nx


@gpucal_main.command()
@click.option("--arch", default="80,90", show_default=True,
              help="CUDA architectures to compile for with NVRTC (no GPU needed), comma separated.")
@click.option("--warm/--no-warm", default=True, show_default=True,
              help="Also build the kernels on this machine's GPU into CuPy's cache (CUPY_CACHE_DIR), if usable.")
def kernels(arch: str, warm: bool) -> None:
    """Compile every CUDA kernel with NVRTC and check CuPy's compiler finds the CUDA headers; on a GPU, warm
    CuPy's kernel cache."""
    from gpucal.backends.select import probe_gpu
    from gpucal.kernels._loader import check_kernels, warm_gpu_cache
    from gpucal.kernels.cupy_toolchain import check_toolchain

    arches = tuple(a.strip().lower().removeprefix("sm_") for a in arch.split(",") if a.strip())
    try:
        for line in check_kernels(arches):
            click.echo(line)
        # CuPy's own element-wise/reduction kernels need the CUDA headers at first use
        for line in check_toolchain(arches):
            click.echo(line)
    except Exception as exc:  # NVRTC or the CUDA headers missing, or a kernel that does not compile
        click.echo(f"gpucal kernels: error: {exc}", err=True)
        sys.exit(1)
    ok, reason = probe_gpu()
    if not warm:
        return
    if not ok:
        click.echo(f"No usable GPU ({reason}): CuPy's kernel cache not warmed.")
        return
    for line in warm_gpu_cache():
        click.echo(line)


@gpucal_main.command()
def info() -> None:
    """Show GPUs (NVML), CUDA/NVRTC versions and the backend 'auto' picks."""
    from gpucal.backends.info import describe

    click.echo(describe())


@gpucal_main.command(add_help_option=False,
                     context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("suite_args", nargs=-1, type=click.UNPROCESSED)
def bench(suite_args: tuple[str, ...]) -> None:
    """Run the benchmark suite (bench/suite.py); `gpucal bench -h` lists its options."""
    suite = _import_bench_suite()
    sys.exit(suite.main(list(suite_args), prog="gpucal bench"))


def _import_bench_suite() -> Any:
    """``bench.suite`` from the source checkout this gpucal runs from (an editable install)."""
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "suite.py").is_file():
        raise click.ClickException(
            f"the benchmark suite is not installed with gpucal (no bench/ beside {root / 'gpucal'}): "
            "run `gpucal bench` from an editable install of a source checkout (pip install -e .)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module("bench.suite")
    if Path(module.__file__ or "").resolve().parent != root / "bench":
        raise click.ClickException(f"`bench` resolves to {module.__file__}, not {root / 'bench'}; "
                                   "run `gpucal bench` from the source checkout")
    return module
