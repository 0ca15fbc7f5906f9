"""The NumPy backend object: one method per algorithm, delegating to its module."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from gpucal.backends.protocol import (
    DQInitResult,
    FlatResult,
    InlTable,
    JumpParams,
    LinearityResult,
    RampFitParams,
    RampFitResult,
    RefpixResult,
    SaturationResult,
)
from gpucal.readpattern import ReadTiming

__all__ = ["CpuBackend"]

RAMP_FIT_ALGORITHMS = ("gls", "ols_cas22", "likely")


class CpuBackend:
    """NumPy implementation of :class:`gpucal.backends.protocol.Backend`."""

    name = "cpu"

    def to_host(self, model: Any) -> Any:
        """The model itself: the NumPy backend's arrays are host arrays already."""
        return model

    def on_host(self, model: Any) -> contextlib.AbstractContextManager[Any]:
        """The model itself, for a mid-pipeline save."""
        return contextlib.nullcontext(model)

    def active(self) -> contextlib.AbstractContextManager[Any]:
        """Nothing to enter: NumPy runs in order on the calling thread."""
        return contextlib.nullcontext()

    def count_set(self, array: np.ndarray, flag: int) -> int:
        """Number of elements of the DQ ``array`` with any bit of ``flag`` set."""
        return int(np.count_nonzero(array & array.dtype.type(flag)))

    def all_set(self, array: np.ndarray, flag: int) -> bool:
        """Whether every element of the DQ ``array`` has a bit of ``flag`` set."""
        return bool(((array & array.dtype.type(flag)) != 0).all())

    def dq_init(
        self,
        data: np.ndarray,
        reference_read: np.ndarray | None,
        encoding_offset: int,
        mask_dq: np.ndarray | None,
        guide_window: tuple[int, int, int, int] | None,
        expand_gw_flagging: int,
    ) -> DQInitResult:
        from cpu_fallback.dq_init import dq_init

        return dq_init(data, reference_read, encoding_offset, mask_dq, guide_window, expand_gw_flagging)

    def saturation(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        pixeldq: np.ndarray,
        threshold: np.ndarray,
        threshold_dq: np.ndarray,
        timing: ReadTiming,
        n_pix_grow_sat: int,
        backup: int,
    ) -> SaturationResult:
        from cpu_fallback.saturation import saturation

        return saturation(data, groupdq, pixeldq, threshold, threshold_dq, timing, n_pix_grow_sat, backup)

    def saturation_headroom(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        pixeldq: np.ndarray,
        threshold: np.ndarray,
        threshold_dq: np.ndarray,
    ) -> np.ndarray:
        from cpu_fallback.saturation import saturation_headroom

        return saturation_headroom(data, groupdq, pixeldq, threshold, threshold_dq)

    def refpix(
        self,
        data: np.ndarray,
        amp33: np.ndarray,
        pixeldq: np.ndarray,
        gamma: np.ndarray,
        zeta: np.ndarray,
        alpha: np.ndarray,
    ) -> RefpixResult:
        from cpu_fallback.refpix import refpix

        return refpix(data, amp33, pixeldq, gamma, zeta, alpha)

    def dark_decay(
        self, data: np.ndarray, timing: ReadTiming, amplitude: float, time_constant: float, sca: int
    ) -> np.ndarray:
        from cpu_fallback.dark_decay import dark_decay

        return dark_decay(data, timing, amplitude, time_constant, sca)

    def wfi18_transient(
        self, data: np.ndarray, groupdq: np.ndarray, timing: ReadTiming, mask_rows: bool
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        from cpu_fallback.wfi18 import wfi18_transient

        return wfi18_transient(data, groupdq, timing, mask_rows)

    def linearity(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        pixeldq: np.ndarray,
        lin_coeffs: np.ndarray,
        ilin_coeffs: np.ndarray | None,
        lin_dq: np.ndarray,
        inl: InlTable | None,
        timing: ReadTiming,
    ) -> LinearityResult:
        from cpu_fallback.linearity import linearity

        return linearity(data, groupdq, pixeldq, lin_coeffs, ilin_coeffs, lin_dq, inl, timing)

    def linearity_threshold(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        headroom: np.ndarray,
        lin_coeffs: np.ndarray | None,
        lin_dq: np.ndarray | None,
    ) -> np.ndarray:
        from cpu_fallback.linearity import linearity_threshold

        return linearity_threshold(data, groupdq, headroom, lin_coeffs, lin_dq)

    def jump(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        readnoise: np.ndarray,
        gain: np.ndarray,
        timing: ReadTiming,
        params: JumpParams,
    ) -> np.ndarray:
        from cpu_fallback.jump import jump

        return jump(data, groupdq, readnoise, gain, timing, params)

    def ramp_fit(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        pixeldq: np.ndarray,
        readnoise: np.ndarray,
        gain: np.ndarray,
        timing: ReadTiming,
        algorithm: str,
        params: RampFitParams,
        saturation_level: np.ndarray | None = None,
    ) -> RampFitResult:
        if saturation_level is not None and algorithm != "gls":
            raise ValueError(f"a saturation level is an input of the gls ramp fit only, not of {algorithm}")
        if algorithm == "gls":
            from cpu_fallback.ramp_fit.gls import fit_gls

            return fit_gls(data, groupdq, pixeldq, readnoise, gain, timing, params, saturation_level)
        if algorithm == "ols_cas22":
            from cpu_fallback.ramp_fit.ols_cas22 import fit_ols_cas22 as fit
        elif algorithm == "likely":
            from cpu_fallback.ramp_fit.likely import fit_likely as fit
        else:
            raise ValueError(f"unknown ramp-fit algorithm {algorithm!r}; choose one of {RAMP_FIT_ALGORITHMS}")
        return fit(data, groupdq, pixeldq, readnoise, gain, timing, params)

    def uniform_slope(self, data: np.ndarray, timing: ReadTiming) -> np.ndarray:
        from cpu_fallback.uniform import uniform_slope

        return uniform_slope(data, timing)

    def dark_current(
        self, slope: np.ndarray, dq: np.ndarray, dark_slope: np.ndarray, dark_dq: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        from cpu_fallback.image import dark_current

        return dark_current(slope, dq, dark_slope, dark_dq)

    def flatfield(
        self,
        data: np.ndarray,
        err: np.ndarray,
        var_poisson: np.ndarray,
        var_rnoise: np.ndarray | None,
        dumo: np.ndarray,
        dq: np.ndarray,
        flat: np.ndarray,
        flat_err: np.ndarray,
        flat_dq: np.ndarray,
        include_var_flat: bool,
    ) -> FlatResult:
        from cpu_fallback.image import flatfield

        return flatfield(data, err, var_poisson, var_rnoise, dumo, dq, flat, flat_err, flat_dq, include_var_flat)
