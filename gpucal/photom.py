"""photom: record the DN/s -> MJy/sr conversion in metadata (ref: PHOTOM)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gpucal.params import StepParams, param
from gpucal.refs import open_reference
from gpucal.stepbase import Step

__all__ = ["PhotomStep", "PhotomParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotomParams(StepParams):
    override_photom: str | None = param(None, "PHOTOM reference file to use instead of CRDS's choice.")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(getattr(value, "value", value))


class PhotomStep(Step[PhotomParams]):
    """Copy photmjsr, its uncertainty and the pixel area of the exposure's filter into
    ``meta.photometry``; the arrays stay in DN/s, as in romancal."""

    class_alias = "photom"
    cal_step_key = "photom"
    reference_file_types = ("photom",)
    Params = PhotomParams
    default_suffix = "photom"
    accepts = ("ImageModel",)

    def process(self, model: Any) -> Any:
        refs = self.resolve_references(model)
        if not refs["photom"].available:
            log.warning("No PHOTOM reference: step skipped")
            model.meta.cal_step.photom = "SKIPPED"
            return model
        ref = open_reference(refs["photom"], model)
        element = str(model.meta.instrument.optical_element).upper()
        table = ref.phot_table
        if element not in table:
            # romancal warns, leaves the metadata alone and still marks the step COMPLETE
            log.warning("Optical element %s not in the PHOTOM table: photometry not set", element)
        else:
            row = table[element]
            model.meta.photometry.conversion_megajanskys = _number(row.get("photmjsr"))
            model.meta.photometry.conversion_megajanskys_uncertainty = _number(row.get("uncertainty"))
            model.meta.photometry.pixel_area = _number(row.get("pixelareasr"))
        model.meta.cal_step.photom = "COMPLETE"
        return model
