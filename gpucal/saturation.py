"""saturation: flag saturated and A/D-floor resultants (ref: SATURATION)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.params import StepParams, param
from gpucal.readpattern import exposure_timing
from gpucal.refs import check_array, open_reference
from gpucal.refvalues import screen
from gpucal.stepbase import Step

__all__ = ["SaturationStep", "SaturationParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaturationParams(StepParams):
    n_pix_grow_sat: int = param(0, "Also flag pixels within this many pixels of a saturated one.")
    backup: int = param(0, "Flag saturation this many resultants earlier in multi-read resultants.")
    override_saturation: str | None = param(None, "SATURATION reference file to use instead of CRDS's choice.")


class SaturationStep(Step[SaturationParams]):
    """Flag resultants at or above the saturation threshold, and below the A/D floor."""

    class_alias = "saturation"
    cal_step_key = "saturation"
    reference_file_types = ("saturation",)
    Params = SaturationParams
    default_suffix = "saturation"
    #: set by the pipeline when its ramp fit takes a saturation level (gls): the step then
    #: also leaves :attr:`headroom`
    want_headroom: bool = False
    #: (ny, nx) float32 DN, the threshold minus each pixel's last resultant with no flag but
    #: JUMP_DET (+inf: no check, no such resultant); None when not asked for or skipped
    headroom: Any = None

    def process(self, model: Any) -> Any:
        self.headroom = None
        refs = self.resolve_references(model)
        if not refs["saturation"].available:
            log.warning("No SATURATION reference: step skipped")
            model.meta.cal_step.saturation = "SKIPPED"
            return model
        ref = open_reference(refs["saturation"], model)
        k, ny, nx = model.data.shape
        source = refs["saturation"]
        threshold = check_array("saturation", "data", ref.data, (ny, nx), np.float32, source=source)
        ref_dq = check_array("saturation", "dq", ref.dq, (ny, nx), np.uint32, source=source)
        screen(source, "data", np.isnan(threshold), "NaN", "flagged NO_SAT_CHECK, never flagged saturated")
        timing = exposure_timing(model, "saturation")
        result = self.backend.saturation(
            model.data, model.groupdq, model.pixeldq, threshold, ref_dq, timing,
            self.params.n_pix_grow_sat, self.params.backup,
        )
        model.groupdq = result.groupdq
        model.pixeldq = result.pixeldq
        if self.want_headroom:
            self.headroom = self.backend.saturation_headroom(
                model.data, model.groupdq, model.pixeldq, threshold, ref_dq
            )
        model.meta.cal_step.saturation = "COMPLETE"
        return model
