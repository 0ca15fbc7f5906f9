"""dark_decay: subtract the decaying dark signal after reset (ref: DARKDECAYSIGNAL)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gpucal.errors import ReferenceFileError
from gpucal.params import StepParams, param
from gpucal.readpattern import exposure_timing
from gpucal.refpix import replace_data
from gpucal.refs import open_reference
from gpucal.stepbase import Step

__all__ = ["DarkDecayStep", "DarkDecayParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DarkDecayParams(StepParams):
    override_darkdecaysignal: str | None = param(
        None, "DARKDECAYSIGNAL reference file to use instead of CRDS's choice."
    )


class DarkDecayStep(Step[DarkDecayParams]):
    """Subtract A*exp(-t/T) per read, with per-pixel read times, from every resultant."""

    class_alias = "dark_decay"
    cal_step_key = "dark_decay"
    reference_file_types = ("darkdecaysignal",)
    Params = DarkDecayParams
    default_suffix = "dark_decay"

    def process(self, model: Any) -> Any:
        refs = self.resolve_references(model)
        # romancal has no N/A guard here (it would fail opening "N/A"); gpucal skips instead.
        if not refs["darkdecaysignal"].available:
            log.warning("No DARKDECAYSIGNAL reference: step skipped")
            model.meta.cal_step.dark_decay = "SKIPPED"
            return model
        ref = open_reference(refs["darkdecaysignal"], model)
        detector = str(model.meta.instrument.detector)
        try:
            entry = ref.decay_table[detector]
            amplitude = float(entry["amplitude"])
            time_constant = float(entry["time_constant"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ReferenceFileError(
                f"darkdecaysignal reference {refs['darkdecaysignal'].path} has no usable entry for {detector}"
            ) from None
        timing = exposure_timing(model, "dark_decay")
        replace_data(model, self.backend.dark_decay(model.data, timing, amplitude, time_constant, int(detector[3:])))
        model.meta.cal_step.dark_decay = "COMPLETE"
        return model
