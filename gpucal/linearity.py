"""linearity: read-level classic non-linearity correction (refs: LINEARITY,
INVERSELINEARITY, optional INTEGRALNONLINEARITY)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.backends.protocol import InlTable
from gpucal.errors import ReferenceFileError
from gpucal.params import StepParams, param
from gpucal.readpattern import exposure_timing
from gpucal.refpix import replace_data
from gpucal.refs import check_array, open_reference
from gpucal.refvalues import screen
from gpucal.stepbase import Step

__all__ = ["LinearityStep", "LinearityParams", "inl_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinearityParams(StepParams):
    override_linearity: str | None = param(None, "LINEARITY reference file to use instead of CRDS's choice.")
    override_inverselinearity: str | None = param(
        None, "INVERSELINEARITY reference file to use instead of CRDS's choice."
    )
    override_integralnonlinearity: str | None = param(
        None, "INTEGRALNONLINEARITY reference file to use instead of CRDS's choice."
    )


INL_CHANNEL_WIDTH = 128


def inl_table(ref: Any, nx: int) -> InlTable | None:
    """The INL grid and per-channel corrections of an INTEGRALNONLINEARITY model."""
    grid = ref._instance.get("value")
    if grid is None:
        return None
    grid = np.asarray(grid, dtype=np.float32)
    table = ref.inl_table
    nch = 32
    corrections = np.full((nch, grid.size), np.nan, dtype=np.float64)
    for ch in range(nch):
        entry = table.get(f"science_channel_{ch + 1:02d}") if hasattr(table, "get") else None
        corr = None if entry is None else entry.get("correction")
        if corr is None:
            continue
        corr = np.asarray(corr, dtype=np.float64)
        if corr.shape != grid.shape:
            raise ReferenceFileError(
                f"integralnonlinearity channel {ch + 1}: correction has {corr.size} values, grid has {grid.size}"
            )
        corrections[ch] = corr
    # romancal 1.1.0 fixes the channel width at 128 columns whatever the frame width, so a
    # sub-frame or a small synthetic model takes the corrections of channels 1, 2, ... as there
    return InlTable(grid=grid, corrections=corrections, channel_width=INL_CHANNEL_WIDTH)


class LinearityStep(Step[LinearityParams]):
    """Correct resultants for classic non-linearity at the level of individual reads."""

    class_alias = "linearity"
    cal_step_key = "linearity"
    reference_file_types = ("linearity", "inverselinearity", "integralnonlinearity")
    Params = LinearityParams
    default_suffix = "linearity"
    #: set by the pipeline: the saturation step's :attr:`~gpucal.saturation.SaturationStep.headroom`
    headroom: Any = None
    #: left by :meth:`process` when :attr:`headroom` was given: (ny, nx) float32, the level at
    #: which a read saturates in the corrected resultants' DN (the ramp fit's input)
    saturation_level: Any = None

    def process(self, model: Any) -> Any:
        self.saturation_level = None
        refs = self.resolve_references(model)
        if not (refs["linearity"].available and refs["inverselinearity"].available):
            log.warning("No LINEARITY or INVERSELINEARITY reference: step skipped")
            model.meta.cal_step.linearity = "SKIPPED"
            return model
        k, ny, nx = model.data.shape
        lin = open_reference(refs["linearity"], model)
        ilin = open_reference(refs["inverselinearity"], model)
        coeffs = []
        for name, ref in (("linearity", lin), ("inverselinearity", ilin)):
            shape = np.shape(ref.coeffs)
            if len(shape) != 3 or shape[1:] != (ny, nx):
                raise ReferenceFileError(
                    f"{name} reference {refs[name].path}: coeffs have shape {shape}, the exposure needs (n, {ny}, {nx})"
                )
            coeffs.append(check_array(name, "coeffs", ref.coeffs, shape, np.float32, source=refs[name]))
        lin_coeffs, ilin_coeffs = coeffs
        for name, c in (("linearity", lin_coeffs), ("inverselinearity", ilin_coeffs)):
            if c.shape[0] < 2:
                raise ReferenceFileError(f"{name} reference {refs[name].path}: coeffs need a linear term")
            screen(refs[name], "coeffs", np.isnan(c).any(axis=0) | (c[1] == 0), "NaN (or its linear term zero)",
                   "flagged NO_LIN_CORR, left uncorrected")
        lin_dq = check_array("linearity", "dq", lin.dq, (ny, nx), np.uint32, source=refs["linearity"])
        inl = None
        if refs["integralnonlinearity"].available:
            inl = inl_table(open_reference(refs["integralnonlinearity"], model), nx)
        timing = exposure_timing(model, "linearity")
        if self.headroom is not None:  # before the correction: anchored on the uncorrected resultant
            self.saturation_level = self.backend.linearity_threshold(
                model.data, model.groupdq, self.headroom, lin_coeffs, lin_dq
            )
        result = self.backend.linearity(
            model.data, model.groupdq, model.pixeldq, lin_coeffs, ilin_coeffs, lin_dq, inl, timing
        )
        replace_data(model, result.data)
        model.groupdq = result.groupdq
        model.pixeldq = result.pixeldq
        model.meta.cal_step.linearity = "COMPLETE"
        return model
