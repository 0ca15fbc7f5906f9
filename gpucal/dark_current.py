"""dark_current: subtract the dark-current rate from the slope image (ref: DARK)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.image import BORDER
from gpucal.params import StepParams, param
from gpucal.refs import check_array, open_reference
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
        trim = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
        dark_slope = check_array("dark", "dark_slope", ref.dark_slope, full, np.float32)[trim]
        dark_dq = check_array("dark", "dq", ref.dq, full, np.uint32)[trim]
        data, dq = self.backend.dark_current(
            np.asarray(model.data, dtype=np.float32), np.asarray(model.dq, dtype=np.uint32),
            np.ascontiguousarray(dark_slope, dtype=np.float32), np.ascontiguousarray(dark_dq, dtype=np.uint32),
        )
        model.data = data
        model.dq = dq
        model.meta.cal_step.dark = "COMPLETE"
        return model
