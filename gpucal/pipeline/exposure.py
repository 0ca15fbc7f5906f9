"""ExposurePipeline (``roman_elp``): Level 1 uncal -> Level 2 cal, romancal 1.1.0's
routing with gpucal's jump step.

Order: dq_init, saturation, [fully saturated short-cut], refpix, dark_decay,
wfi18_transient, linearity, jump (skipped for ``likely``, which finds its own jumps),
rampfit, dark_current, assign_wcs, photom, then flatfield for imaging exposure types
(WFI_IMAGE, WFI_LOLO, WFI_WFSC).  Data pass between steps in memory; one backend serves
the whole run.  source_catalog and tweakreg are not in scope (their cal_step entries say
SKIPPED, as for a romancal run with them skipped).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gpucal.assign_wcs import AssignWcsStep
from gpucal.dark_current import DarkCurrentStep
from gpucal.dark_decay import DarkDecayStep
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.dq_init import DQInitStep
from gpucal.errors import GpucalError, ParameterError
from gpucal.flatfield import FlatFieldStep
from gpucal.jump import JumpStep
from gpucal.linearity import LinearityStep
from gpucal.params import StepParams, build_params, param
from gpucal.photom import PhotomStep
from gpucal.pipeline.inputs import ExposureResult, association_members, input_kind, library_models, make_library
from gpucal.ramp_fitting import RampFitStep
from gpucal.readpattern import read_timing
from gpucal.refpix import RefPixStep
from gpucal.saturation import SaturationStep
from gpucal.stepbase import Step, set_cal_step
from gpucal.wfi18_transient import WFI18TransientStep

__all__ = ["ExposurePipeline", "ExposurePipelineParams", "ExposureResult", "STEP_DEFS", "IMAGING_TYPES"]

log = logging.getLogger(__name__)

STEP_DEFS: dict[str, type[Step[Any]]] = {
    "dq_init": DQInitStep,
    "saturation": SaturationStep,
    "refpix": RefPixStep,
    "dark_decay": DarkDecayStep,
    "wfi18_transient": WFI18TransientStep,
    "linearity": LinearityStep,
    "jump": JumpStep,
    "rampfit": RampFitStep,
    "dark_current": DarkCurrentStep,
    "assign_wcs": AssignWcsStep,
    "photom": PhotomStep,
    "flatfield": FlatFieldStep,
}

IMAGING_TYPES = ("WFI_IMAGE", "WFI_LOLO", "WFI_WFSC")
_SATURATED_SHORTCUT_SKIPS = (
    "refpix", "dark_decay", "wfi18_transient", "linearity", "dark", "ramp_fit",
    "assign_wcs", "flat_field", "photom", "source_catalog",
)


@dataclass(frozen=True)
class ExposurePipelineParams(StepParams):
    suffix: str | None = param("cal", "Suffix of the calibrated product.")
    on_disk: bool = param(False, "Accepted for romancal compatibility (single exposures stay in memory).")
    save_calibrated_ramp: bool = param(False, "Also save the calibrated ramp fed to ramp fitting (<root>_ramp.asdf).")


class ExposurePipeline(Step[ExposurePipelineParams]):
    """Calibrate a Roman WFI exposure from Level 1 resultants to a Level 2 image."""

    class_alias = "roman_elp"
    cal_step_key = ""
    Params = ExposurePipelineParams
    default_suffix = "cal"
    accepts = ("ScienceRawModel", "RampModel")
    names_from_model = True
    step_defs: ClassVar[dict[str, type[Step[Any]]]] = STEP_DEFS

    def __init__(
        self,
        params: ExposurePipelineParams | None = None,
        *,
        steps: dict[str, Any] | None = None,
        name: str | None = None,
        parent: Step | None = None,
        **values: Any,
    ):
        # stpipe's ExposurePipeline(steps={"rampfit": {"algorithm": "likely"}}, save_results=True)
        super().__init__(params, name=name, parent=parent, **values)
        steps = dict(steps or {})
        for absent in _ABSENT_STEPS:
            if absent in steps:
                _AbsentStep(absent).apply(dict(steps.pop(absent)))
        unknown = sorted(set(steps) - set(self.step_defs))
        if unknown:
            raise ParameterError(f"roman_elp has no step(s) {', '.join(unknown)}; steps are {', '.join(self.step_defs)}")
        self.steps: dict[str, Step[Any]] = {
            key: cls(_step_params(cls, steps.get(key)), name=key, parent=self) for key, cls in self.step_defs.items()
        }

    def __getattr__(self, name: str) -> Any:
        if name in _ABSENT_STEPS:  # romancal scripts set pipe.source_catalog.skip = True
            absent = _AbsentStep(name)
            object.__setattr__(self, name, absent)
            return absent
        return super().__getattr__(name)

    @classmethod
    def from_values(cls, values: dict[str, Any] | None = None, **kwargs: Any) -> ExposurePipeline:
        merged = {**(values or {}), **kwargs}
        step_values = dict(merged.pop("steps", {}) or {})
        for name in _ABSENT_STEPS:
            if name in step_values:
                _AbsentStep(name).apply(step_values.pop(name))
        unknown = sorted(set(step_values) - set(cls.step_defs))
        if unknown:
            raise ParameterError(f"roman_elp has no step(s) {', '.join(unknown)}; steps are {', '.join(cls.step_defs)}")
        params = build_params(cls.Params, merged)
        steps = {key: build_params(cls.step_defs[key].Params, vals) for key, vals in step_values.items()}
        return cls(params, steps=steps)

    # ------------------------------------------------------------------ running
    def run(self, input: Any) -> ExposureResult:
        """Calibrate ``input`` and return ``(result, catalog, segmentation)`` as romancal 1.1.0.

        ``input`` is an uncal/ramp file or model (``result`` is the calibrated model), or
        an association (``.json`` path or mapping) or ModelLibrary (``result`` is a
        ModelLibrary of the calibrated members).  gpucal has no source_catalog step, so
        ``catalog`` and ``segmentation`` are None (empty libraries for many members), as
        romancal returns them with source_catalog skipped.
        """
        kind = input_kind(input)
        if kind == "single":
            return ExposureResult(self.run_model(input), None, None)
        if kind == "asn":
            models = self._run_members(association_members(input))
        else:
            models = [self.run_model(model) for model in library_models(input)]
        return ExposureResult(make_library(models), make_library([]), make_library([]))

    def _run_members(self, paths: list[str]) -> list[Any]:
        """Calibrate association members with the batch machinery (read ahead, write behind)."""
        from gpucal.backends.select import select_backend
        from gpucal.batch import run_batch

        if self.backend is None:
            self.backend = select_backend(self.params.backend)
        quiet = dataclasses.replace(self.params, save_results=False, output_file=None)

        def make_step() -> ExposurePipeline:
            step = type(self)(quiet, steps={key: sub.params for key, sub in self.steps.items()})
            step.backend = self.backend
            return step

        kept: dict[str, Any] = {}
        save = bool(self.params.save_results or self.params.output_file)
        result = run_batch(paths, make_step, save=save, kept=kept)
        if result.failed:
            first = result.failed[0]
            raise GpucalError(
                f"{len(result.failed)} of {len(paths)} association members failed; first: {first.error}"
            )
        return [kept[path] for path in paths]

    def _run(self, key: str, model: Any) -> Any:
        """Run sub-step ``key`` on ``model``, timed."""
        start = time.perf_counter()
        out = self.steps[key].run(model)
        self.timings[key] = time.perf_counter() - start
        return out

    def process(self, input_model: Any) -> Any:
        steps = self.steps
        self.timings = {}
        self._check_input(input_model)
        run = self._run
        rampfit, saturation, linearity = steps["rampfit"], steps["saturation"], steps["linearity"]
        # gls finds full well inside a resultant from the level a read saturates at: the
        # saturation step's threshold, anchored on each pixel's last clean resultant, carried
        # through linearity into the DN the fit sees
        saturation.want_headroom = rampfit.params.algorithm == "gls" and not rampfit.params.skip
        try:
            model = run("dq_init", input_model)
            model = run("saturation", model)
            if _fully_saturated(self.backend, model):
                log.warning("All pixels are saturated: writing a zeroed image")
                return self._saturated_product(model)
            linearity.headroom = saturation.headroom
            saturation.headroom = None
            for key in ("refpix", "dark_decay", "wfi18_transient", "linearity"):
                model = run(key, model)
            level = linearity.saturation_level
            if level is None and linearity.headroom is not None:  # no linearity correction ran
                level = self.backend.linearity_threshold(model.data, model.groupdq, linearity.headroom, None, None)
            linearity.headroom = linearity.saturation_level = None
            rampfit.saturation_level = level
            return self._fit_and_finish(model)
        finally:
            saturation.want_headroom = False
            saturation.headroom = linearity.headroom = linearity.saturation_level = None
            rampfit.saturation_level = None

    def _fit_and_finish(self, model: Any) -> Any:
        """From the jump step on (:meth:`process`)."""
        steps, run = self.steps, self._run
        rampfit = steps["rampfit"]
        if rampfit.params.algorithm == "likely" and not steps["jump"].params.skip:
            log.info("rampfit uses 'likely', which finds its own jumps: jump step skipped")
            steps["jump"].params = dataclasses.replace(steps["jump"].params, skip=True)
        model = run("jump", model)
        if self.params.save_calibrated_ramp:
            with self.backend.on_host(model):
                self.save(model, suffix="ramp")
        model = run("rampfit", model)
        for key in ("dark_current", "assign_wcs", "photom"):
            model = run(key, model)
        exposure_type = str(model.meta.exposure.type)
        if exposure_type not in IMAGING_TYPES:
            log.info("Exposure type %s is not imaging: flat field skipped", exposure_type)
            set_cal_step(model, "flat_field", "SKIPPED")
        else:
            model = run("flatfield", model)
        set_cal_step(model, "source_catalog", "SKIPPED")
        set_cal_step(model, "tweakreg", "SKIPPED")
        if type(model).__name__ == "ImageModel" and "wcs" not in model.meta:
            model.meta.wcs = None
        return model

    def _check_input(self, model: Any) -> None:
        """Check, before any work, what the steps that will run need of the exposure:
        the WFI layout for refpix, a read pattern for the steps that use read times."""
        from gpucal.io import check_exposure

        steps = self.steps
        timed = ("saturation", "dark_decay", "wfi18_transient", "linearity", "jump", "rampfit")
        source = self.input_path or str(model.meta.get("filename", "input"))
        check_exposure(
            model, source,
            layout=not steps["refpix"].params.skip,
            timing=any(not steps[key].params.skip for key in timed),
        )

    def _saturated_product(self, ramp: Any) -> Any:
        from gpucal.image import fully_saturated_image

        ramp = self.backend.to_host(ramp)  # a rare product, assembled on the host
        timing = read_timing(ramp.meta.exposure.read_pattern, float(ramp.meta.exposure.frame_time))
        slope = self.backend.to_host({"dumo": self.backend.uniform_slope(ramp.data, timing)})["dumo"]
        image = fully_saturated_image(ramp, slope)
        for key in _SATURATED_SHORTCUT_SKIPS:
            set_cal_step(image, key, "SKIPPED")
        set_cal_step(image, "tweakreg", "SKIPPED")
        image.meta.wcs = None
        return image

    def finalize(self, model: Any) -> None:
        for step in self.steps.values():
            self.ref_records.update(step.ref_records)
        super().finalize(model)

    def save(self, model: Any, suffix: str | None = None) -> Any:
        path = super().save(model, suffix)
        if suffix is None and type(model).__name__ == "ImageModel" and model.meta.get("wcs") is not None:
            self._save_wcs(model)
        return path

    def _save_wcs(self, model: Any) -> None:
        import roman_datamodels.datamodels as rdm

        assert self.products is not None  # Step.save opened the set
        wcs_model = rdm.WfiWcsModel.from_model_with_wcs(model)
        self.products.stage(wcs_model, self.output_path(model, suffix="wcs"))

    def planned_outputs(self, input_path: str | None, meta_filename: str | None,
                        include_top: bool = True) -> list[Path]:
        """The cal product and its wcs partner, the calibrated ramp and every step's
        saved result (named as :meth:`save` and the steps will name them)."""
        planned = super().planned_outputs(input_path, meta_filename, include_top)
        if include_top:
            planned.append(self.output_path_for(input_path, meta_filename, suffix="wcs"))
        if self.params.save_calibrated_ramp:
            planned.append(self.output_path_for(input_path, meta_filename, suffix="ramp"))
        for step in self.steps.values():
            if step.saves_result():
                planned.append(step.output_path_for(input_path, meta_filename))
        return planned


_ABSENT_STEPS = ("source_catalog", "tweakreg")


def _step_params(cls: type[Step[Any]], given: Any) -> Any:
    """A step's parameters from a params object, a mapping of values, or None."""
    if given is None or isinstance(given, StepParams):
        return given
    return build_params(cls.Params, dict(given))


class _AbsentStep:
    """romancal's source_catalog/tweakreg, which gpucal does not run: ``skip`` is accepted
    (gpucal always skips them); any other setting is refused with one line."""

    name: str
    skip: bool

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "skip", True)

    def __setattr__(self, key: str, value: Any) -> None:
        self.apply({key: value})

    def apply(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key == "skip" and str(value).strip().lower() in ("true", "1", "yes", "on"):
                continue
            raise ParameterError(
                f"roman_elp: gpucal has no {self.name} step (it always skips it); "
                f"setting {self.name}.{key}={value!r} has no effect here: remove it, or run romancal's "
                f"{self.name} on gpucal's cal file"
            )


def _fully_saturated(backend: Any, model: Any) -> bool:
    """Whether every pixel saturated (decided where the arrays are; one tiny download)."""
    if backend.all_set(model.groupdq, int(GroupFlag.SATURATED)):
        return True
    return bool(backend.all_set(model.pixeldq, int(PixelFlag.SATURATED)))
