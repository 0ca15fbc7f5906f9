"""dark_current: subtract the dark-current rate from the slope image (ref: DARK)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.image import BORDER
from gpucal.params import StepParams, param
from gpucal.refs import check_array, open_reference
from gpucal.refvalues import flag_nan_dark
from gpucal.stepbase import Step

__all__ = ["DarkCurrentStep", "DarkCurrentParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DarkCurrentParams(StepParams):
    override_dark: str | None = param(None, "DARK reference file to use instead of CRDS's choice.")


class DarkCurrentStep(Step[DarkCurrentParams]):
    """Subtract ``dark_slope`` (DN/s) and OR the dark DQ into the image."""

    class_alias = "dark"
    cal_step_key = "dark"
    reference_file_types = ("dark",)
    Params = DarkCurrentParams
    default_suffix = "darkcurrent"
    accepts = ("ImageModel",)

    def process(self, model: Any) -> Any:
        refs = self.resolve_references(model)
        if not refs["dark"].available:
            log.warning("No DARK reference: step skipped")
            model.meta.cal_step.dark = "SKIPPED"
            return model
        ref = open_reference(refs["dark"], model)
        ny, nx = model.data.shape
        full = (ny + 2 * BORDER, nx + 2 * BORDER)
        # full frames: the backend trims the border (and can cache the arrays as they are in the file)
        dark_slope = check_array("dark", "dark_slope", ref.dark_slope, full, np.float32, source=refs["dark"])
        dark_dq = check_array("dark", "dq", ref.dq, full, np.uint32, source=refs["dark"])
        # a NaN rate makes a NaN pixel: flag it (not dq 0); a dark NaN everywhere is an error
        dark_dq = flag_nan_dark(dark_slope, dark_dq, refs["dark"], BORDER)
        data, dq = self.backend.dark_current(model.data, model.dq, dark_slope, dark_dq)
        model.data = data
        model.dq = dq
        model.meta.cal_step.dark = "COMPLETE"
        return model
