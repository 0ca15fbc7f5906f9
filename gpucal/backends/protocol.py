"""The backend protocol: array-in / array-out functions, one per algorithm.

Steps (``gpucal/<step>.py``) own parameters, reference files and metadata; each calls one
function of the backend chosen at pipeline start.  ``cpu_fallback`` (NumPy) and the CuPy
backend implement the same functions with the same signatures and return the same
NamedTuples.  Array conventions (STYLE.md):

* ramps are ``(K, ny, nx)`` float32 DN, K = number of resultants;
* ``groupdq`` is ``(K, ny, nx)`` uint8 (:class:`gpucal.dq.GroupFlag` bits);
* ``pixeldq`` is ``(ny, nx)`` uint32 (:class:`gpucal.dq.PixelFlag` bits);
* per-pixel references are ``(ny, nx)`` float32, coefficient cubes ``(ncoeff, ny, nx)``;
* timing comes as a :class:`gpucal.readpattern.ReadTiming`.

Backends may modify input arrays in place and return them; callers must not rely on the
inputs being unchanged.  Backends never read files or models and never log per pixel.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from gpucal.readpattern import ReadTiming

__all__ = [
    "Backend",
    "DQInitResult",
    "SaturationResult",
    "RefpixResult",
    "LinearityResult",
    "InlTable",
    "RampFitResult",
    "FlatResult",
    "JumpParams",
    "RampFitParams",
    "SnowballParams",
]


@dataclass(frozen=True)
class JumpParams:
    """Thresholds of two-point-difference jump detection (in sigma; neighbours in sigma)."""

    rejection_threshold: float = 4.5
    three_group_rejection_threshold: float = 6.0
    four_group_rejection_threshold: float = 5.0
    flag_4_neighbors: bool = True
    max_jump_to_flag_neighbors: float = 1000.0
    min_jump_to_flag_neighbors: float = 10.0


@dataclass(frozen=True)
class RampFitParams:
    """What the ramp-fit algorithms need beyond arrays and timing.

    ``threshold_intercept`` / ``threshold_constant``: ols_cas22 jump thresholds
    (defaults 5.5 and 1/3 when None). ``use_ramp_jump_detection``: jump search inside the
    gls and ols_cas22 fits; ``gls_jump_threshold``: the gls search's threshold (sigma).
    ``likely`` ignores them and ``rejection_threshold``: as in romancal 1.1.0 it always
    searches for jumps at 4.5 sigma.
    """

    use_ramp_jump_detection: bool = True
    threshold_intercept: float | None = None
    threshold_constant: float | None = None
    rejection_threshold: float = 4.5
    gls_jump_threshold: float = 4.5
    #: snowball flagging between the likely jump search and its final fit (None: off)
    snowball: SnowballParams | None = None


@dataclass(frozen=True)
class SnowballParams:
    """romancal's RampFitStep snowball parameters (``expand_large_events`` turns them on;
    ``sat_expand`` as the user gives it: romancal doubles it for stcal)."""

    min_sat_area: float = 1.0
    min_jump_area: float = 6.0
    expand_factor: float = 1.9
    sat_required_snowball: bool = True
    min_sat_radius_extend: float = 0.5
    sat_expand: int = 2
    edge_size: int = 0


class DQInitResult(NamedTuple):
    data: np.ndarray  # (K, ny, nx) float32 DN
    pixeldq: np.ndarray  # (ny, nx) uint32


class SaturationResult(NamedTuple):
    groupdq: np.ndarray  # (K, ny, nx) uint8
    pixeldq: np.ndarray  # (ny, nx) uint32


class RefpixResult(NamedTuple):
    data: np.ndarray  # (K, ny, nx) float32
    amp33: np.ndarray  # (K, ny, nx_amp33) uint16


class LinearityResult(NamedTuple):
    data: np.ndarray  # (K, ny, nx) float32
    groupdq: np.ndarray  # (K, ny, nx) uint8
    pixeldq: np.ndarray  # (ny, nx) uint32


class InlTable(NamedTuple):
    """Integral non-linearity: a shared grid and one correction table per channel."""

    grid: np.ndarray  # (M,) float32 DN, ascending
    corrections: np.ndarray  # (nchannels, M) float64 DN; NaN row = no correction
    channel_width: int  # science columns per channel (128 for a full frame)


class RampFitResult(NamedTuple):
    slope: np.ndarray  # (ny, nx) float32 DN/s
    err: np.ndarray  # (ny, nx) float32 DN/s
    var_poisson: np.ndarray  # (ny, nx) float32 (DN/s)^2
    var_rnoise: np.ndarray  # (ny, nx) float32 (DN/s)^2
    chisq: np.ndarray  # (ny, nx) float32; zeros where the algorithm has none
    dq: np.ndarray  # (ny, nx) uint32, pixeldq with the ramp's group flags compressed in
    groupdq: np.ndarray  # (K, ny, nx) uint8, with JUMP_DET found by the fit


class FlatResult(NamedTuple):
    data: np.ndarray
    err: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray | None
    var_flat: np.ndarray | None
    dumo: np.ndarray
    dq: np.ndarray


class Backend(Protocol):
    """What every backend module/object provides."""

    name: str

    def to_host(self, model: Any) -> Any:
        """``model`` with every array on the host (the products' one download), in place."""
        ...

    def on_host(self, model: Any) -> AbstractContextManager[Any]:
        """Host copies of ``model``'s arrays for the duration (a mid-pipeline save)."""
        ...

    def active(self) -> AbstractContextManager[Any]:
        """Context in which a step's array work runs on the backend's stream (a no-op on the host)."""
        ...

    def count_set(self, array: np.ndarray, flag: int) -> int:
        """Number of elements of the DQ ``array`` with any bit of ``flag`` set (a host number)."""
        ...

    def all_set(self, array: np.ndarray, flag: int) -> bool:
        """Whether every element of the DQ ``array`` has a bit of ``flag`` set (a host answer)."""
        ...

    def dq_init(
        self,
        data: np.ndarray,
        reference_read: np.ndarray | None,
        encoding_offset: int,
        mask_dq: np.ndarray | None,
        guide_window: tuple[int, int, int, int] | None,
        expand_gw_flagging: int,
    ) -> DQInitResult:
        """uint16 (K, ny, nx) raw resultants -> float32 DN and the initial pixel DQ.

        ``guide_window`` is (xstart, xstop, ystart, ystop) in frame pixels, or None.
        """
        ...

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
    ) -> SaturationResult: ...

    def saturation_headroom(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        pixeldq: np.ndarray,
        threshold: np.ndarray,
        threshold_dq: np.ndarray,
    ) -> np.ndarray:
        """DN left below full well at each pixel's last usable resultant.

        Called on the outputs of :meth:`saturation`.  k* is the last resultant whose group
        DQ has no bit but JUMP_DET (the last one the ramp fit uses); the headroom is the
        float32 difference ``threshold - data[k*]``.

        Parameters
        ----------
        data : ndarray, shape (K, ny, nx), float32
            Resultants (raw DN).  Not modified.
        groupdq : ndarray, shape (K, ny, nx), uint8
            Group DQ after saturation flagging.  Not modified.
        pixeldq : ndarray, shape (ny, nx), uint32
            Pixel DQ.  Not modified.
        threshold : ndarray, shape (ny, nx), float32
            SATURATION reference threshold (DN); NaN means "no check".
        threshold_dq : ndarray, shape (ny, nx), uint32
            SATURATION reference DQ.

        Returns
        -------
        ndarray, shape (ny, nx), float32
            Headroom (DN).  +inf means "no saturation level": no usable resultant, a NaN
            threshold, or NO_SAT_CHECK in ``threshold_dq`` or ``pixeldq``.  NaN where
            ``data[k*]`` is NaN.  On a device backend the result stays on the device.
        """
        ...

    def refpix(
        self,
        data: np.ndarray,
        amp33: np.ndarray,
        pixeldq: np.ndarray,
        gamma: np.ndarray,
        zeta: np.ndarray,
        alpha: np.ndarray,
    ) -> RefpixResult: ...

    def dark_decay(
        self, data: np.ndarray, timing: ReadTiming, amplitude: float, time_constant: float, sca: int
    ) -> np.ndarray: ...

    def wfi18_transient(
        self, data: np.ndarray, groupdq: np.ndarray, timing: ReadTiming, mask_rows: bool
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """WFI18 first-read transient: fit and subtract, or flag rows; returns (data, groupdq, fitted)."""
        ...

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
    ) -> LinearityResult: ...

    def linearity_threshold(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        headroom: np.ndarray,
        lin_coeffs: np.ndarray | None,
        lin_dq: np.ndarray | None,
    ) -> np.ndarray:
        """The saturation threshold in the linearized DN the ramp fit sees.

        Called on the linearity step's input.  With k* as in :meth:`saturation_headroom`
        (from this ``groupdq``), the level is ``P(data[k*] + headroom)``, the sum in
        float32 and P the pixel's classic LINEARITY polynomial evaluated as the correction
        evaluates one value (float32 Horner; the identity for NO_LIN_CORR, NaN-coefficient
        and zero-linear-term pixels).  Anchoring at the pixel's own resultant carries
        reference-pixel offsets and the non-linearity into the level.

        Parameters
        ----------
        data : ndarray, shape (K, ny, nx), float32
            Resultants (DN) before the linearity correction.  Not modified.
        groupdq : ndarray, shape (K, ny, nx), uint8
            Group DQ.  Not modified.
        headroom : ndarray, shape (ny, nx), float32
            :meth:`saturation_headroom` (DN).
        lin_coeffs : ndarray, shape (ncoeff, ny, nx), float32, or None
            LINEARITY coefficients, constant term first (ncoeff >= 2); None: no
            polynomial (level = ``data[k*] + headroom``).
        lin_dq : ndarray, shape (ny, nx), uint32, or None
            LINEARITY reference DQ (may be None without ``lin_coeffs``).

        Returns
        -------
        ndarray, shape (ny, nx), float32
            Level (linearized DN).  +inf means "no level": no usable resultant or a
            headroom that is not finite.  NaN where ``data[k*]`` is NaN.  On a device
            backend the result stays on the device.
        """
        ...

    def jump(
        self,
        data: np.ndarray,
        groupdq: np.ndarray,
        readnoise: np.ndarray,
        gain: np.ndarray,
        timing: ReadTiming,
        params: JumpParams,
    ) -> np.ndarray:
        """Two-point-difference jump detection; returns groupdq with JUMP_DET set."""
        ...

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
        """Fit every pixel's ramp. ``algorithm`` is ``"gls"``, ``"ols_cas22"`` or ``"likely"``.

        ``saturation_level`` (gls only; ValueError with another algorithm): (ny, nx) float32,
        the level (DN, the units of ``data``) at which a read saturates, +inf/NaN where
        unknown (:func:`cpu_fallback.ramp_fit.gls.fit_gls`).
        """
        ...

    def uniform_slope(self, data: np.ndarray, timing: ReadTiming) -> np.ndarray:
        """Flag-blind uniform-weight slope (DN/s), used for ``dumo``."""
        ...

    def dark_current(
        self, slope: np.ndarray, dq: np.ndarray, dark_slope: np.ndarray, dark_dq: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

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
    ) -> FlatResult: ...
