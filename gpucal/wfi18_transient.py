"""wfi18_transient: remove WFI18's first-read transient (no reference file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gpucal.params import StepParams, param
from gpucal.readpattern import exposure_timing
from gpucal.refpix import replace_data
from gpucal.stepbase import Step

__all__ = ["WFI18TransientStep", "WFI18TransientParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WFI18TransientParams(StepParams):
    mask_rows: bool = param(False, "Flag the affected rows of the first resultant instead of fitting.")


class WFI18TransientStep(Step[WFI18TransientParams]):
    """Fit and subtract the transient of detector WFI18 (N/A for other detectors)."""

    class_alias = "wfi18_transient"
    cal_step_key = "wfi18_transient"
    Params = WFI18TransientParams
    default_suffix = "wfi18_transient"

    def process(self, model: Any) -> Any:
        if str(model.meta.instrument.detector) != "WFI18":
            model.meta.cal_step.wfi18_transient = "N/A"
            return model
        timing = exposure_timing(model, "wfi18_transient")
        data, groupdq, fitted = self.backend.wfi18_transient(
            model.data, model.groupdq, timing, self.params.mask_rows
        )
        if not fitted:
            log.info("WFI18 transient: first-resultant rows flagged instead of fitted")
        replace_data(model, data)
        model.groupdq = groupdq
        model.meta.cal_step.wfi18_transient = "COMPLETE"
        return model
