"""rampfit: RampModel -> ImageModel slopes (refs: READNOISE, GAIN).

``gls`` (gpucal's default: generalised least squares with the full covariance of uneven
resultants, the covariance rate refitted so the weights do not bias the slope, segments
split at jumps and saturation, saturation inside the last resultant found;
:mod:`cpu_fallback.ramp_fit.gls`), ``ols_cas22`` (romancal's Casertano 2022 optimal
weights) or ``likely`` (romancal 1.1.0's default, Brandt 2024 maximum likelihood with its
own jump search).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gpucal.backends.protocol import RampFitParams, RampFitResult, SnowballParams
from gpucal.errors import ParameterError
from gpucal.image import create_image_model, jump_indices
from gpucal.jump import load_gain_readnoise
from gpucal.params import StepParams, param
from gpucal.readpattern import exposure_timing
from gpucal.stepbase import Step

__all__ = ["RampFitStep", "RampFitStepParams", "ALGORITHMS"]

log = logging.getLogger(__name__)

ALGORITHMS = ("gls", "ols_cas22", "likely")


@dataclass(frozen=True)
class RampFitStepParams(StepParams):
    algorithm: str = param("gls", "Ramp-fitting algorithm: gls, ols_cas22 or likely.", choices=ALGORITHMS)
    rejection_threshold: float = param(4.5, "Jump threshold (sigma); likely always uses 4.5, as romancal.")
    gls_jump_threshold: float = param(4.5, "gls: threshold (sigma) of the jump search inside the fit.")
    use_ramp_jump_detection: bool = param(True, "Search for jumps inside the ramp fit.")
    threshold_intercept: float | None = param(None, "ols_cas22 jump threshold intercept (default 5.5).")
    threshold_constant: float | None = param(None, "ols_cas22 jump threshold slope constant (default 1/3).")
    include_var_rnoise: bool = param(False, "Write var_rnoise into the image.")
    record_jumps: bool = param(True, "Record jump positions as jump_indices (likely).")
    maximum_cores: str = param("1", "Accepted for romancal compatibility; gpucal vectorises instead.")
    # romancal 1.1.0's snowball flagging (likely only), done on the host between the
    # likely jump search and its final fit
    expand_large_events: bool = param(False, "Flag snowballs (likely): grow jump halos around saturated cores.")
    min_sat_area: float = param(1.0, "Snowballs: minimum area (pixels) of a new saturated core.")
    min_jump_area: float = param(6.0, "Snowballs: minimum area (pixels) of a jump region.")
    expand_factor: float = param(1.9, "Snowballs: growth factor of a snowball's ellipse.")
    sat_required_snowball: bool = param(True, "Snowballs: require a saturated core inside the jump region.")
    min_sat_radius_extend: float = param(0.5, "Snowballs: minimum core axis (pixels) for extending the core.")
    sat_expand: int = param(2, "Snowballs: pixels added to the saturated core's radius.")
    edge_size: int = param(0, "Snowballs: within this many pixels of the edge no saturated core is required.")
    override_readnoise: str | None = param(None, "READNOISE reference file to use instead of CRDS's choice.")
    override_gain: str | None = param(None, "GAIN reference file to use instead of CRDS's choice.")


class RampFitStep(Step[RampFitStepParams]):
    """Fit a slope to every pixel's ramp and build the Level 2 image."""

    class_alias = "ramp_fit"
    cal_step_key = "ramp_fit"
    reference_file_types = ("readnoise", "gain")
    Params = RampFitStepParams
    default_suffix = "rampfit"
    #: set by the pipeline for gls: (ny, nx) float32, the level (DN of the corrected
    #: resultants) at which a read saturates, from the saturation and linearity steps.  A
    #: ramp fit run on its own has none: gls then tests the last resultant for a shortfall.
    saturation_level: Any = None

    def process(self, model: Any) -> Any:
        p = self.params
        if p.algorithm not in ALGORITHMS:
            raise ParameterError(f"rampfit: unknown algorithm {p.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        k = model.data.shape[0]
        if p.algorithm == "likely" and k < 4:
            raise ParameterError(f"rampfit: the likely algorithm needs at least 4 resultants, this exposure has {k}")
        gain, readnoise = load_gain_readnoise(self, model)
        timing = exposure_timing(model, "ramp_fit")
        fit_params = RampFitParams(
            use_ramp_jump_detection=p.use_ramp_jump_detection,
            threshold_intercept=p.threshold_intercept,
            threshold_constant=p.threshold_constant,
            rejection_threshold=p.rejection_threshold,
            gls_jump_threshold=p.gls_jump_threshold,
            snowball=self._snowball(),
        )
        log.info("Fitting ramps with %s (%d resultants)", p.algorithm, k)
        if fit_params.snowball is not None:
            fit, slope_u, model = self._fit_on_host(model, readnoise, gain, timing, fit_params)
        else:
            level = self.saturation_level if p.algorithm == "gls" else None
            fit = self.backend.ramp_fit(
                model.data, model.groupdq, model.pixeldq, readnoise, gain, timing, p.algorithm, fit_params, level
            )
            slope_u = self.backend.uniform_slope(model.data, timing)
        model.groupdq = fit.groupdq
        jumps = jump_indices(fit.groupdq) if (p.record_jumps and p.algorithm == "likely") else None
        image = create_image_model(
            model, fit.slope, fit.dq, fit.err, fit.var_poisson, fit.var_rnoise,
            fit.chisq if p.algorithm != "ols_cas22" else None, slope_u, p.include_var_rnoise, jumps,
        )
        image.meta.cal_step.ramp_fit = "COMPLETE"
        return image


    def _snowball(self) -> SnowballParams | None:
        """The snowball parameters when ``expand_large_events`` is on (likely only)."""
        p = self.params
        if not p.expand_large_events:
            return None
        if p.algorithm != "likely":
            raise ParameterError(
                "rampfit: expand_large_events (snowball flagging) works with algorithm=likely, as in romancal "
                "1.1.0 (whose ols_cas22 does not use it); choose likely or turn it off"
            )
        return SnowballParams(
            min_sat_area=p.min_sat_area, min_jump_area=p.min_jump_area, expand_factor=p.expand_factor,
            sat_required_snowball=p.sat_required_snowball, min_sat_radius_extend=p.min_sat_radius_extend,
            sat_expand=p.sat_expand, edge_size=p.edge_size,
        )

    def _fit_on_host(
        self, model: Any, readnoise: Any, gain: Any, timing: Any, fit_params: RampFitParams
    ) -> tuple[RampFitResult, Any, Any]:
        """The likely fit with snowball flagging, on the host whatever the backend: the
        flagging works on whole-frame masks (scikit-image), between the search and the fit."""
        import numpy as np

        from cpu_fallback.ramp_fit.likely import fit_likely
        from cpu_fallback.uniform import uniform_slope

        model = self.backend.to_host(model)
        data = np.asarray(model.data)
        fit = fit_likely(data, np.asarray(model.groupdq), np.asarray(model.pixeldq), readnoise, gain, timing,
                         fit_params)
        return fit, uniform_slope(data, timing), model
