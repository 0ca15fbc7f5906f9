"""refpix: FFT-based reference-pixel correction with amp33 and the border (ref: REFPIX)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.errors import ParameterError
from gpucal.io import check_wfi_layout
from gpucal.params import StepParams, param
from gpucal.refs import check_array, open_reference
from gpucal.stepbase import Step

__all__ = ["RefPixStep", "RefPixParams", "replace_data", "refuse_partial_refpix"]

log = logging.getLogger(__name__)

PAD = 12
NCHANNELS = 32


@dataclass(frozen=True)
class RefPixParams(StepParams):
    # romancal 1.1.0 passes these four positionally into refpix.run_steps, whose first flag
    # is zero_bad_ref_pix: each value lands one sub-step off (remove_offset switches the
    # bad-reference-pixel zeroing, ..., fft_interpolate is dropped).  gpucal runs the
    # all-on correction, which is what the defaults give, and refuses any other value.
    remove_offset: bool = param(True, "Must stay True (gpucal runs the full correction; see README 'From romancal').")
    remove_trends: bool = param(True, "Must stay True (gpucal runs the full correction).")
    cosine_interpolate: bool = param(True, "Must stay True (gpucal runs the full correction).")
    fft_interpolate: bool = param(True, "Must stay True (gpucal runs the full correction).")

    def __post_init__(self) -> None:
        refuse_partial_refpix(self)  # refused when set, before any input is read
    override_refpix: str | None = param(None, "REFPIX reference file to use instead of CRDS's choice.")


_FLAGS = ("remove_offset", "remove_trends", "cosine_interpolate", "fft_interpolate")


def refuse_partial_refpix(params: Any) -> None:
    """One clear error for a refpix flag set to False (see :class:`RefPixParams`)."""
    off = [name for name in _FLAGS if not getattr(params, name)]
    if off:
        raise ParameterError(
            f"refpix: {', '.join(f'{n}=False' for n in off)} is not supported: romancal 1.1.0 passes these flags "
            "one position off (remove_offset turns off bad-reference-pixel zeroing, remove_trends the offset "
            "removal, cosine_interpolate the trend removal, fft_interpolate nothing) and gpucal only runs the full "
            "correction; leave them True or skip refpix"
        )


def replace_data(model: Any, data: Any) -> None:
    """Set ``model.data``, keeping ``border_ref_pix_left/right`` views of it if they were.

    romancal's refpix leaves the left/right border arrays as views into the corrected
    data, so the later in-place corrections (dark_decay, wfi18_transient, linearity)
    show in them and the cal file carries the linearized border columns.  ASDF keeps
    such views when the ramp is saved and read back; independent copies (dq_init's, or
    refpix skipped) stay as they are.  gpucal follows whichever it finds, re-binding the
    views when a step hands back a new data array.
    """
    old = model.data
    aliased = _shares_memory(model._instance.get("border_ref_pix_left"), old)
    model.data = data
    if aliased and data is not old:
        model.border_ref_pix_left = model.data[:, :, :4]
        model.border_ref_pix_right = model.data[:, :, -4:]


def _shares_memory(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    try:
        return bool(np.may_share_memory(a, b))
    except TypeError:  # device arrays: no host view to keep
        return False


class RefPixStep(Step[RefPixParams]):
    """Remove correlated read noise using the reference border and the amp33 output."""

    class_alias = "refpix"
    cal_step_key = "refpix"
    reference_file_types = ("refpix",)
    Params = RefPixParams
    default_suffix = "refpix"

    def process(self, model: Any) -> Any:
        refs = self.resolve_references(model)
        if not refs["refpix"].available:
            log.warning("No REFPIX reference: step skipped")
            model.meta.cal_step.refpix = "SKIPPED"
            return model
        check_wfi_layout(model, self.input_path or "refpix")
        ref = open_reference(refs["refpix"], model)
        k, ny, nx = model.data.shape
        width = nx // NCHANNELS
        nfreq = ny * (width + PAD) // 2 + 1
        coeffs = [
            check_array("refpix", name, getattr(ref, name), (NCHANNELS, nfreq), np.complex128, source=refs["refpix"])
            for name in ("gamma", "zeta", "alpha")
        ]
        result = self.backend.refpix(model.data, np.asarray(model.amp33), model.pixeldq, *coeffs)
        model.data = result.data
        model.amp33 = result.amp33
        # views, as romancal's: later in-place corrections show in them (replace_data)
        model.border_ref_pix_left = model.data[:, :, :4]
        model.border_ref_pix_right = model.data[:, :, -4:]
        model.meta.cal_step.refpix = "COMPLETE"
        return model
