"""refpix: FFT-based reference-pixel correction with amp33 and the border (ref: REFPIX)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.params import StepParams, param
from gpucal.refs import check_array, open_reference
from gpucal.stepbase import Step

__all__ = ["RefPixStep", "RefPixParams", "replace_data"]

log = logging.getLogger(__name__)

PAD = 12
NCHANNELS = 32


@dataclass(frozen=True)
class RefPixParams(StepParams):
    # romancal 1.1.0 passes these four positionally into a function whose first keyword
    # differs, so with the defaults every sub-step runs; gpucal keeps the names and the
    # all-on behaviour (spec pipeline.md section 9, item 1).
    remove_offset: bool = param(True, "Remove the per-pixel offset before the correction.")
    remove_trends: bool = param(True, "Remove linear trends along each channel's read order.")
    cosine_interpolate: bool = param(True, "Cosine-interpolate missing amp33 samples.")
    fft_interpolate: bool = param(True, "FFT-interpolate amp33 across the pad pixels.")
    override_refpix: str | None = param(None, "REFPIX reference file to use instead of CRDS's choice.")


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
