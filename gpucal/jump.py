"""jump: two-point-difference cosmic-ray detection for uneven resultants (refs: GAIN,
READNOISE).

gpucal's own step, restored from romancal's earlier pipeline: each first difference is
divided by its resultants' mean-time difference and compared with the noise expected
from the read pattern, read noise and gain; JUMP_DET is set in the group DQ.  It writes
``meta.cal_step.jump`` (an extra key the schema allows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.backends.protocol import JumpParams
from gpucal.dq import GroupFlag
from gpucal.params import StepParams, param
from gpucal.readpattern import exposure_timing
from gpucal.refs import check_array, open_reference
from gpucal.stepbase import Step

__all__ = ["JumpStep", "JumpStepParams"]

log = logging.getLogger(__name__)

# a NumPy scalar, not the IntFlag: CuPy takes NumPy scalars, not int subclasses
_JUMP = int(GroupFlag.JUMP_DET)

_D = JumpParams()
#: The step's default threshold with 4 or more usable differences.  Higher than the
#: algorithm's 4.5 sigma (stcal's usage): the default ramp fit (gls) searches every ramp
#: again at 4.5 sigma with the likelihood-ratio statistic of its exact covariance, which
#: finds more cosmic rays at fewer false jumps; this step's pass is then the coarse first cut
#: (and flags the neighbours of large jumps).  On the demo exposures: 5.5 and 4.5 find
#: 99.9% / 97.7% of the hits >= 100 e- at 2,880 / 2,352 false jumps, 4.5 and no gls search
#: 99.5% / 97.2% at 3,088 / 2,770 (bench/ramp_science.py, README "Ramp-fit science").
DEFAULT_REJECTION_THRESHOLD = 5.5


@dataclass(frozen=True)
class JumpStepParams(StepParams):
    rejection_threshold: float = param(
        DEFAULT_REJECTION_THRESHOLD, "Threshold (sigma) with 4 or more usable differences."
    )
    three_group_rejection_threshold: float = param(
        _D.three_group_rejection_threshold, "Threshold (sigma) with 2 usable differences (3 resultants)."
    )
    four_group_rejection_threshold: float = param(
        _D.four_group_rejection_threshold, "Threshold (sigma) with 3 usable differences (4 resultants)."
    )
    flag_4_neighbors: bool = param(_D.flag_4_neighbors, "Also flag the 4 neighbours of a jump.")
    max_jump_to_flag_neighbors: float = param(
        _D.max_jump_to_flag_neighbors, "Flag neighbours only for jumps below this significance (sigma)."
    )
    min_jump_to_flag_neighbors: float = param(
        _D.min_jump_to_flag_neighbors, "Flag neighbours only for jumps above this significance (sigma)."
    )
    override_gain: str | None = param(None, "GAIN reference file to use instead of CRDS's choice.")
    override_readnoise: str | None = param(None, "READNOISE reference file to use instead of CRDS's choice.")


def load_gain_readnoise(step: Step, model: Any, *, warn: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """GAIN and READNOISE arrays (float32, full frame) for ``model``.

    A file unusable at every pixel (gain NaN, zero or negative; read noise NaN) is an
    error; otherwise, with ``warn``, the unusable pixels are counted in one warning each.
    """
    from gpucal.errors import ReferenceFileError
    from gpucal.refvalues import screen

    refs = step.resolve_references(model, ("gain", "readnoise"))
    k, ny, nx = model.data.shape
    arrays = []
    for reftype in ("gain", "readnoise"):
        if not refs[reftype].available:
            raise ReferenceFileError(f"no {reftype.upper()} reference file applies to this exposure (CRDS said N/A)")
        ref = open_reference(refs[reftype], model)
        arrays.append(check_array(reftype, "data", ref.data, (ny, nx), np.float32, source=refs[reftype]))
    gain, readnoise = arrays
    with np.errstate(invalid="ignore"):
        bad_gain = ~np.isfinite(gain) | (gain <= 0)
    bad_noise = ~np.isfinite(readnoise)
    if bad_gain.all() or bad_noise.all() or warn:
        screen(refs["gain"], "data", bad_gain, "NaN, infinite, zero or negative",
               "their slopes are flagged DO_NOT_USE (NO_GAIN_VALUE where not finite or negative)")
        screen(refs["readnoise"], "data", bad_noise, "NaN or infinite", "their slopes are flagged DO_NOT_USE")
    return gain, readnoise


class JumpStep(Step[JumpStepParams]):
    """Flag cosmic-ray jumps between resultants."""

    class_alias = "jump"
    cal_step_key = "jump"
    reference_file_types = ("gain", "readnoise")
    Params = JumpStepParams
    default_suffix = "jump"

    def process(self, model: Any) -> Any:
        gain, readnoise = load_gain_readnoise(self, model, warn=False)  # rampfit warns
        timing = exposure_timing(model, "jump")
        p = self.params
        jp = JumpParams(
            rejection_threshold=p.rejection_threshold,
            three_group_rejection_threshold=p.three_group_rejection_threshold,
            four_group_rejection_threshold=p.four_group_rejection_threshold,
            flag_4_neighbors=p.flag_4_neighbors,
            max_jump_to_flag_neighbors=p.max_jump_to_flag_neighbors,
            min_jump_to_flag_neighbors=p.min_jump_to_flag_neighbors,
        )
        before = self.backend.count_set(model.groupdq, _JUMP)
        model.groupdq = self.backend.jump(model.data, model.groupdq, readnoise, gain, timing, jp)
        after = self.backend.count_set(model.groupdq, _JUMP)
        log.info("Jump step flagged %d resultants", after - before)
        model.meta.cal_step["jump"] = "COMPLETE"
        return model
