"""flatfield: divide by the flat field (ref: FLAT)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.params import StepParams, param
from gpucal.refs import open_reference
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
        flat = np.asarray(ref.data)
        if flat.shape != model.data.shape:
            log.warning("FLAT shape %s does not match the image %s: step skipped", flat.shape, model.data.shape)
            model.meta.cal_step.flat_field = "SKIPPED"
            return model
        var_rnoise = np.asarray(model.var_rnoise) if "var_rnoise" in model._instance else None
        result = self.backend.flatfield(
            np.asarray(model.data, dtype=np.float32), np.asarray(model.err), np.asarray(model.var_poisson),
            var_rnoise, np.asarray(model.dumo), np.asarray(model.dq, dtype=np.uint32),
            np.asarray(flat, dtype=np.float32), np.asarray(ref.err, dtype=np.float32),
            np.asarray(ref.dq, dtype=np.uint32), self.params.include_var_flat,
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
