"""flatfield: divide by the flat field (ref: FLAT)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.params import StepParams, param
from gpucal.refs import check_array, open_reference
from gpucal.refvalues import screen
from gpucal.stepbase import Step

__all__ = ["FlatFieldStep", "FlatFieldParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlatFieldParams(StepParams):
    include_var_flat: bool = param(False, "Propagate the flat's error into var_flat and err.")
    override_flat: str | None = param(None, "FLAT reference file to use instead of CRDS's choice.")


class FlatFieldStep(Step[FlatFieldParams]):
    """Divide the image and its errors by the flat; OR the flat DQ in."""

    class_alias = "flat_field"
    cal_step_key = "flat_field"
    reference_file_types = ("flat",)
    Params = FlatFieldParams
    default_suffix = "flat"
    accepts = ("ImageModel",)

    def process(self, model: Any) -> Any:
        refs = self.resolve_references(model)
        if not refs["flat"].available:
            log.warning("No FLAT reference: step skipped")
            model.meta.cal_step.flat_field = "SKIPPED"
            return model
        ref = open_reference(refs["flat"], model)
        shape = tuple(model.data.shape)
        # romancal 1.1.0 skips the step with a warning here; gpucal treats a flat that
        # does not fit as the error it is (as for every other reference type)
        source = refs["flat"]
        flat = check_array("flat", "data", ref.data, shape, np.float32, source=source)
        flat_err = check_array("flat", "err", ref.err, shape, np.float32, source=source)
        flat_dq = check_array("flat", "dq", ref.dq, shape, np.uint32, source=source)
        screen(source, "data", np.isnan(flat) | (flat == 0), "NaN or zero", "flagged NO_FLAT_FIELD, not flat-fielded")
        var_rnoise = model.var_rnoise if "var_rnoise" in model._instance else None
        result = self.backend.flatfield(
            model.data, model.err, model.var_poisson, var_rnoise, model.dumo, model.dq,
            flat, flat_err, flat_dq, self.params.include_var_flat,
        )
        model.data = result.data
        model.err = result.err.astype(np.float16)
        model.var_poisson = result.var_poisson.astype(np.float16)
        if result.var_rnoise is not None:
            model.var_rnoise = result.var_rnoise.astype(np.float16)
        if result.var_flat is not None:
            model.var_flat = result.var_flat.astype(np.float16)
        model.dumo = result.dumo.astype(np.float16)
        model.dq = result.dq
        model.meta.cal_step.flat_field = "COMPLETE"
        return model
