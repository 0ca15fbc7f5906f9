"""The Step base class: parameters, reference files, metadata, skipping and saving.

Array work is not done here: each step's :meth:`Step.process` calls one function of the
backend chosen once at the start of the run (``self.backend``).  The behaviour mirrors
stpipe/romancal: a step inside a pipeline honours ``skip`` and writes
``meta.cal_step.<key> = "SKIPPED"``; a step run on its own ignores ``skip``; results are
saved when ``save_results`` or ``output_file`` is set (``strun`` forces it on the top step).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from gpucal.errors import InputFileError, ParameterError
from gpucal.naming import output_name
from gpucal.params import StepParams, build_params
from gpucal.products import ProductSet

__all__ = ["Step", "CAL_STEP_KEYS", "set_cal_step"]

log = logging.getLogger(__name__)

# The 16 keys the l2_cal_step schema requires (rad 1.1).
CAL_STEP_KEYS = (
    "assign_wcs",
    "dark",
    "dark_decay",
    "dq_init",
    "flat_field",
    "flux",
    "linearity",
    "outlier_detection",
    "photom",
    "source_catalog",
    "ramp_fit",
    "refpix",
    "saturation",
    "skymatch",
    "tweakreg",
    "wfi18_transient",
)


def set_cal_step(model: Any, key: str, value: str) -> None:
    """Set ``meta.cal_step[key]`` where the model has a cal_step block."""
    meta = model.meta
    if "cal_step" not in meta:
        return
    meta.cal_step[key] = value


P = TypeVar("P", bound=StepParams)


class Step(Generic[P]):
    """Base class of gpucal's steps and pipeline (generic in its parameter class)."""

    #: romancal's class alias (``strun`` name)
    class_alias: ClassVar[str] = ""
    #: key of ``meta.cal_step`` this step writes
    cal_step_key: ClassVar[str] = ""
    #: reference types, as CRDS names them (each has an ``override_<reftype>`` parameter)
    reference_file_types: ClassVar[tuple[str, ...]] = ()
    #: the frozen dataclass of this step's parameters
    Params: ClassVar[type[StepParams]] = StepParams
    #: suffix of a saved result
    default_suffix: ClassVar[str] = ""
    #: always name the output after ``meta.filename`` (romancal's pipeline forces stpipe's
    #: ``output_use_model`` on); a step does so when its ``output_use_model`` parameter is set
    names_from_model: ClassVar[bool] = False
    #: model classes this step takes as input
    accepts: ClassVar[tuple[str, ...]] = ("RampModel",)

    def __init__(
        self, params: P | None = None, *, name: str | None = None, parent: Step | None = None, **values: Any
    ):
        """``values`` are parameters by name, as stpipe's ``Step(**kwargs)`` takes them."""
        # instance attributes first: once ``params`` exists, setting a parameter's name sets it
        self.name = name or self.class_alias
        self.parent = parent
        self.backend: Any = None
        self.input_path: str | None = None
        self.ref_records: dict[str, str] = {}
        #: reftype -> the file used ("N/A" when none applies)
        self.ref_paths: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        #: every product this step (and, for the top step, its sub-steps) wrote
        self.written: list[Path] = []
        #: the products of the current input (top step only; see gpucal.products)
        self.products: ProductSet | None = None
        #: top step: commit the products at the end of :meth:`run_model` (a batch's writer
        #: saves and commits them itself)
        self.commit_on_run = True
        #: files no product may replace, beside the input and the references (a batch's inputs)
        self.protected: list[Path] = []
        if params is None:
            params = build_params(self.Params, values)
        elif values:
            params = build_params(self.Params, values, base=params)
        self.params: P = params  # type: ignore[assignment]
        _refuse_hooks(self.params, self.name)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_values(cls, values: dict[str, Any] | None = None, **kwargs: Any) -> Step[Any]:
        """Build the step from parameter values (typed or text)."""
        merged = {**(values or {}), **kwargs}
        return cls(build_params(cls.Params, merged))  # type: ignore[arg-type]

    @classmethod
    def call(cls, input: Any, config_file: str | None = None, **kwargs: Any) -> Any:
        """Run the step on ``input`` (a file path or a model) and return the result model.

        ``config_file`` is a parameter file (ASDF/YAML/INI as stpipe writes them), read as
        ``strun`` reads it (romancal's source_catalog/tweakreg sections and parameters
        gpucal does not have are passed over with a log line); keyword arguments override
        it.  Nothing is saved unless ``save_results=True`` or ``output_file`` is given.
        """
        values: dict[str, Any] = {}
        if config_file is not None:
            from gpucal.config import adapt_file_values, read_parameter_file

            _, values = read_parameter_file(config_file)
            values = adapt_file_values(cls, values, str(config_file))
        values = _merge(values, kwargs)
        return cls.from_values(values).run(input)

    # ------------------------------------------------------ stpipe-style attributes
    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: parameters read as attributes, as in stpipe
        params = self.__dict__.get("params")
        if params is not None and name in _param_names(type(params)):
            return getattr(params, name)
        steps = self.__dict__.get("steps")
        if steps is not None and name in steps:  # a pipeline's steps are attributes (pipe.rampfit)
            return steps[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or parameter {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("params")
        if params is not None and name in _param_names(type(params)) and name not in self.__dict__:
            # ``step.algorithm = "likely"`` sets the parameter, parsed and checked as any value
            new = build_params(type(params), {name: value}, base=params)
            _refuse_hooks(new, self.name)
            object.__setattr__(self, "params", new)
            return
        object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------- running
    def search_attr(self, name: str) -> Any:
        step: Step | None = self
        while step is not None:
            value = getattr(step.params, name, None)
            if value is not None:
                return value
            if name == "output_file" and not step.params.search_output_file:
                return None  # stpipe: search_output_file=False keeps the parent's name out
            step = step.parent
        return None

    def reference_overrides(self) -> dict[str, Any]:
        return {rt: getattr(self.params, f"override_{rt}", None) for rt in self.reference_file_types}

    def open_input(self, input: Any) -> Any:
        """A model from a path (checked) or the model itself."""
        if isinstance(input, str | os.PathLike):
            path = Path(input)
            input_dir = self.params.input_dir
            if input_dir and not path.is_absolute():
                path = Path(input_dir) / path
            from gpucal.io import open_model

            self.input_path = str(path)
            return self._updated(open_model(path))
        if input is None:
            raise InputFileError("no input given")
        return self._updated(input)

    def _updated(self, model: Any) -> Any:
        """The model at the current schema version when ``update_version`` asks for it."""
        if not self.params.update_version or not hasattr(model, "_node_type"):
            return model
        if model.tag == model._node_type._default_tag:
            return model
        from astropy.time import Time

        log.info("Updating %s from %s to the current schema version", type(model).__name__, model.tag)
        new = type(model).create_from_model(model)
        if "file_date" in new.meta and not isinstance(new.meta.file_date, Time):
            new.meta.file_date = Time(new.meta.file_date)
        return new

    def run(self, input: Any) -> Any:
        """Run the step on ``input`` (a path or a model) and return what romancal's returns."""
        return self.run_model(input)

    def run_model(self, input: Any) -> Any:
        """Run the step: resolve the backend (top level), process, finalize, save.

        At the top level every product is staged in a :class:`~gpucal.products.ProductSet`
        and committed together at the end (unless ``commit_on_run`` is off: then the caller
        saves and commits); on any failure or interrupt the staged products are dropped.
        """
        top = self.parent is None
        if top:
            if self.backend is None:
                from gpucal.backends.select import select_backend

                self.backend = select_backend(self.params.backend)
        else:
            assert self.parent is not None
            self.backend = self.parent.backend
        if not top and self.params.skip:
            # stpipe: a skipped step hands its input on untouched, whatever it holds
            log.info("Step %s skipped.", self.name)
            if hasattr(input, "meta"):
                set_cal_step(input, self.cal_step_key, "SKIPPED")
            return input
        model = self.open_input(input)
        if not top:
            return self._run_opened(model, top)
        self.products = ProductSet(
            planned=self.planned_outputs(self._primary_input(), _meta_filename(model),
                                         include_top=self.saves_result() or not self.commit_on_run),
            protected=[*self.protected, *([Path(self.input_path)] if self.input_path else [])])
        try:
            result = self._run_opened(model, top)
            if self.commit_on_run:
                self.commit_products()
        except BaseException:
            if self.products is not None:
                self.products.abandon()
                self.products = None
            raise
        return result

    def commit_products(self) -> list[Path]:
        """Install the products staged for the current input, all together (top step)."""
        products, self.products = self.products, None
        if products is None:
            return []
        products.protected += [Path(p) for p in self.reference_paths()]
        try:
            committed = products.commit()
        except BaseException:
            products.abandon()
            raise
        self.written += committed
        return committed

    def saves_result(self) -> bool:
        """Whether this step's result is a product (``save_results`` or ``output_file``)."""
        return bool(self.params.save_results or self.params.output_file)

    def reference_paths(self) -> list[str]:
        """The reference files this step (and its steps) used, as paths."""
        paths = [p for p in self.ref_paths.values() if p != "N/A"]
        for sub in getattr(self, "steps", {}).values():
            paths += sub.reference_paths()
        return paths

    def _run_opened(self, model: Any, top: bool) -> Any:
        kind = type(model).__name__
        if kind not in self.accepts:
            source = self.input_path or "the input"
            raise InputFileError(
                f"{source} holds a {kind}; {self.class_alias} needs a {' or '.join(self.accepts)}"
            )
        if top and self.params.skip:
            log.info("Step %s run as standalone: skip ignored.", self.name)
        log.info("Step %s running with backend %s.", self.name, self.backend.name)
        start = time.perf_counter()
        ctx: contextlib.AbstractContextManager[list[str]] = _cal_log_context() if top else contextlib.nullcontext([])
        with ctx as lines, self.backend.active():
            result = self.process(model)
            if top:  # the products come back from the device here, once
                result = self.backend.to_host(result)
            self.finalize(result)
            elapsed = time.perf_counter() - start
            self.timings[self.name] = elapsed
            log.info("Step %s done in %.2f s", self.name, elapsed)
            if top:
                self.finalize_top(result, lines)
        if self.saves_result() and (self.commit_on_run or not top):
            # inside a pipeline the arrays may still be on the device: host copies for the
            # save, the device arrays stay in the model for the next step
            with self.backend.on_host(result):
                self.save(result)
        return result

    def process(self, model: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- references
    def get_reference_file(self, input_file: Any, reference_file_type: str) -> Any:
        """stpipe's ``get_reference_file``: the override (a path or an opened reference
        model, returned as given) or CRDS's choice for ``input_file`` (a model or a path).

        Returns
        -------
        str or DataModel
            A path, ``"N/A"`` when no reference applies, or the override model.

        Raises
        ------
        ReferenceFileError
            An override file that does not exist, or CRDS cannot supply the reference.
        """
        from gpucal.refs import resolve

        model = self.open_input(input_file) if isinstance(input_file, str | os.PathLike) else input_file
        overrides = {reference_file_type: getattr(self.params, f"override_{reference_file_type}", None)}
        res = resolve(model, (reference_file_type,), overrides)[reference_file_type]
        self.ref_records[reference_file_type] = res.record
        return res.model if res.model is not None else res.path

    def resolve_references(self, model: Any, reftypes: tuple[str, ...] | None = None) -> dict[str, Any]:
        from gpucal.refs import resolve

        wanted = self.reference_file_types if reftypes is None else reftypes
        resolved = resolve(model, wanted, self.reference_overrides())
        for reftype, res in resolved.items():
            self.ref_records[reftype] = res.record
            self.ref_paths[reftype] = res.path
        return resolved

    # ------------------------------------------------------------------ metadata
    def finalize(self, model: Any) -> None:
        """Software version, backend and reference-file records (romancal's finalize)."""
        from gpucal import __version__

        meta = model.meta
        meta.calibration_software_name = "gpucal"
        meta.calibration_software_version = __version__
        meta["gpucal"] = {"version": __version__, "backend": getattr(self.backend, "name", "cpu")}
        device = getattr(self.backend, "device_name", None)
        if device:
            meta.gpucal["device"] = device
        if self.ref_records and "ref_file" in meta:
            for reftype, record in self.ref_records.items():
                if reftype in meta.ref_file:
                    meta.ref_file[reftype] = record
            if any(r.startswith("crds://") for r in self.ref_records.values()):
                from gpucal.crds_local import crds_info

                version, context = crds_info()
                meta.ref_file.crds = {"version": version, "context": context}

    def finalize_top(self, model: Any, lines: list[str]) -> None:
        """Logs and statistics on an image product, done once at the end of the run."""
        if type(model).__name__ == "ImageModel":
            from gpucal.image import image_statistics

            model.meta.statistics = image_statistics(model)
            model.meta.cal_logs = list(lines)

    # -------------------------------------------------------------------- saving
    def output_path(self, model: Any, suffix: str | None = None) -> Path:
        """Where a result is saved (stpipe's rules, romancal's known suffixes)."""
        return self.output_path_for(self._primary_input(), _meta_filename(model), suffix)

    def output_path_for(self, input_path: str | None, meta_filename: str | None,
                        suffix: str | None = None) -> Path:
        """Where a result is saved, from the input's path and its ``meta.filename``."""
        if self.names_from_model or self.params.output_use_model:
            base = meta_filename or ""
        else:
            base = self.search_attr("output_file") or input_path or meta_filename or ""
        chosen = suffix or self.params.suffix or self.default_suffix or self.name
        out_dir = self.search_attr("output_dir") or "."
        out_dir = os.path.expandvars(os.path.expanduser(out_dir))
        return Path(out_dir) / output_name(base, chosen, self.params.output_ext)

    def planned_outputs(self, input_path: str | None, meta_filename: str | None,
                        include_top: bool = True) -> list[Path]:
        """Every product a top-level run on this input may write, its own result first.

        ``include_top``: the step's own result is saved (``strun`` and a batch always save
        it); a pipeline adds its result's partners and the results of its steps that
        have ``save_results``.
        """
        return [self.output_path_for(input_path, meta_filename)] if include_top else []

    def _primary_input(self) -> str | None:
        step: Step | None = self
        while step is not None:
            if step.input_path:
                return step.input_path
            step = step.parent
        return None

    def _top(self) -> Step:
        step: Step = self
        while step.parent is not None:
            step = step.parent
        return step

    def save(self, model: Any, suffix: str | None = None) -> Path:
        """Stage ``model`` as a product of the current input (committed with the others).

        Outside :meth:`run_model` (no product set open) the product and its partners are
        written and committed at once, together.
        """
        top = self._top()
        if top.products is None:
            top.products = ProductSet(protected=[Path(p) for p in [self._primary_input()] if p])
            try:
                path = self.save(model, suffix)  # and its partners, into the one set
                top.written += top.products.commit()
            except BaseException:
                top.products.abandon()
                raise
            finally:
                top.products = None
            return path
        return top.products.stage(model, self.output_path(model, suffix), primary=self is top and suffix is None)

    def record_output(self, path: Path) -> Path:
        """Note a written product on the top step (a run's list of outputs)."""
        self._top().written.append(path)
        return path

    # --------------------------------------------------------------- description
    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in fields(cls.Params)]


def _meta_filename(model: Any) -> str | None:
    try:
        name = model.meta.get("filename")
    except AttributeError:
        return None
    return str(name) if name else None


def _param_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _refuse_hooks(params: Any, name: str) -> None:
    """stpipe's pre/post hooks run arbitrary commands and steps; gpucal runs none of them."""
    for kind in ("pre_hooks", "post_hooks"):
        if getattr(params, kind, ()):
            raise ParameterError(
                f"{name}: {kind} are not supported by gpucal (got {list(getattr(params, kind))!r}); "
                "remove them and run the hook on the result yourself"
            )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if key == "steps" and isinstance(value, dict):
            steps = {k: dict(v) for k, v in out.get("steps", {}).items()}
            for name, vals in value.items():
                steps.setdefault(name, {}).update(vals)
            out["steps"] = steps
        else:
            out[key] = value
    return out


def _cal_log_context() -> contextlib.AbstractContextManager[list[str]]:
    from gpucal.logs import capture_cal_logs

    return capture_cal_logs()

