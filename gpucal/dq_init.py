"""dq_init: Level 1 resultants -> RampModel with the initial pixel DQ (ref: MASK)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.io import check_exposure
from gpucal.params import StepParams, param
from gpucal.refs import check_array, open_reference
from gpucal.stepbase import CAL_STEP_KEYS, Step

__all__ = ["DQInitStep", "DQInitParams", "to_ramp_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DQInitParams(StepParams):
    expand_gw_flagging: int = param(0, "Expand the guide-window DO_NOT_USE box by this many pixels.")
    override_mask: str | None = param(None, "MASK reference file to use instead of CRDS's choice.")


def to_ramp_model(model: Any) -> Any:
    """A RampModel sharing the Level 1 metadata; data still raw (cast later)."""
    import roman_datamodels.datamodels as rdm

    if type(model).__name__ == "RampModel":
        return model
    if type(model).__name__ != "ScienceRawModel":
        raise TypeError(type(model).__name__)
    tree = {key: model[key] for key in model._instance.keys() if key not in ("data", "resultantdq")}
    ramp = rdm.RampModel.create_from_model({**tree, "data": None})
    old = model.meta.get("cal_step", {}) if hasattr(model.meta, "get") else {}
    ramp.meta.cal_step = {key: old.get(key, "INCOMPLETE") for key in CAL_STEP_KEYS}
    shape = model.data.shape
    resultantdq = model._instance.get("resultantdq")
    ramp.groupdq = np.array(resultantdq, dtype=np.uint8) if resultantdq is not None else np.zeros(shape, np.uint8)
    problem = ramp.meta.exposure.get("data_problem")
    if isinstance(problem, bool):
        ramp.meta.exposure.data_problem = "True" if problem else None
    return ramp


class DQInitStep(Step[DQInitParams]):
    """Convert a Level 1 exposure to a ramp and initialise its data-quality arrays."""

    class_alias = "dq_init"
    cal_step_key = "dq_init"
    reference_file_types = ("mask",)
    Params = DQInitParams
    default_suffix = "dqinit"
    accepts = ("ScienceRawModel", "RampModel")

    def process(self, model: Any) -> Any:
        if self.parent is None:  # in a pipeline, the pipeline checked what its steps need
            source = self.input_path or str(model.meta.get("filename", "input"))
            check_exposure(model, source, layout=False, timing=False)
        kind = type(model).__name__
        raw = np.asarray(model.data)
        ramp = to_ramp_model(model)
        k, ny, nx = raw.shape
        refs = self.resolve_references(ramp)
        mask_dq = None
        if refs["mask"].available:
            mask = open_reference(refs["mask"], ramp)
            # a mask that does not fit is an error, as for every reference (not "not applied")
            mask_dq = check_array("mask", "dq", mask.dq, (ny, nx), np.uint32, source=refs["mask"])
        meta = ramp.meta
        offset = int(meta.instrument.get("data_encoding_offset", 0) or 0)
        gs = meta.guide_star
        window = (int(gs.window_xstart), int(gs.window_xstop), int(gs.window_ystart), int(gs.window_ystop))
        if not (0 <= window[0] < nx and 0 <= window[2] < ny):
            log.info("Invalid guide window location: %s, %s, %s, %s", *window)
            gw = None
        else:
            log.info("Flagging columns %d to %d as affected by the guide window read", window[0], window[1])
            gw = window
        reference_read = ramp._instance.get("reference_read") if kind == "ScienceRawModel" else None
        if reference_read is not None:
            reference_read = check_array("input", "reference_read", reference_read, (ny, nx), np.uint16)
        result = self.backend.dq_init(raw, reference_read, offset, mask_dq, gw, self.params.expand_gw_flagging)
        ramp.data = result.data
        ramp.pixeldq = result.pixeldq
        amp33 = np.array(ramp.amp33, dtype=np.uint16, copy=True)
        ref_amp33 = ramp._instance.get("reference_amp33") if kind == "ScienceRawModel" else None
        if reference_read is not None:
            del ramp.reference_read
            if ref_amp33 is not None:
                amp33 += np.asarray(ref_amp33, dtype=np.uint16)
        if ref_amp33 is not None and "reference_amp33" in ramp._instance:
            del ramp.reference_amp33
        if offset:
            amp33 -= np.uint16(offset)
        ramp.amp33 = amp33
        data = ramp.data
        pdq = ramp.pixeldq
        ramp.border_ref_pix_left = data[:, :, :4].copy()
        ramp.border_ref_pix_right = data[:, :, -4:].copy()
        ramp.border_ref_pix_top = data[:, :4, :].copy()
        ramp.border_ref_pix_bottom = data[:, -4:, :].copy()
        ramp.dq_border_ref_pix_left = pdq[:, :4].copy()
        ramp.dq_border_ref_pix_right = pdq[:, -4:].copy()
        ramp.dq_border_ref_pix_top = pdq[:4, :].copy()
        ramp.dq_border_ref_pix_bottom = pdq[-4:, :].copy()
        ramp.meta.cal_step.dq_init = "COMPLETE" if mask_dq is not None else "SKIPPED"
        return ramp
