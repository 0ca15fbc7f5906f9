"""Names ``strun`` understands: aliases, gpucal class paths, romancal's class paths.

``roman_elp`` comes first.  romancal/calroman class paths (``romancal.dq_init.DQInitStep``,
``romancal.pipeline.exposure_pipeline.ExposurePipeline``, ...) map to gpucal's classes
so parameter files and habits carry over.  Importing this module imports no step code.
"""

from __future__ import annotations

import importlib

__all__ = ["ALIASES", "CLASS_PATHS", "resolve_name", "load_class", "known_names"]

# alias -> "module:Class"
ALIASES: dict[str, str] = {
    "roman_elp": "gpucal.pipeline.exposure:ExposurePipeline",
    "dq_init": "gpucal.dq_init:DQInitStep",
    "saturation": "gpucal.saturation:SaturationStep",
    "refpix": "gpucal.refpix:RefPixStep",
    "dark_decay": "gpucal.dark_decay:DarkDecayStep",
    "wfi18_transient": "gpucal.wfi18_transient:WFI18TransientStep",
    "linearity": "gpucal.linearity:LinearityStep",
    "jump": "gpucal.jump:JumpStep",
    "ramp_fit": "gpucal.ramp_fitting:RampFitStep",
    "dark": "gpucal.dark_current:DarkCurrentStep",
    "assign_wcs": "gpucal.assign_wcs:AssignWcsStep",
    "photom": "gpucal.photom:PhotomStep",
    "flat_field": "gpucal.flatfield:FlatFieldStep",
}

# public dotted class path (gpucal.<module>.<Class>) -> "module:Class"
CLASS_PATHS: dict[str, str] = {
    "gpucal.pipeline.ExposurePipeline": ALIASES["roman_elp"],
    "gpucal.pipeline.exposure.ExposurePipeline": ALIASES["roman_elp"],
    **{target.replace(":", "."): target for alias, target in ALIASES.items() if alias != "roman_elp"},
}

_BY_CLASS_NAME: dict[str, str] = {target.split(":")[1]: target for target in ALIASES.values()}
_FOREIGN_PREFIXES = ("romancal.", "calroman.")


def resolve_name(name: str) -> str | None:
    """``module:Class`` for an alias or class path gpucal implements, else None."""
    if name.startswith("gpucal::"):
        name = name.split("::", 1)[1]
    if name in ALIASES:
        return ALIASES[name]
    if name in CLASS_PATHS:
        return CLASS_PATHS[name]
    if name.startswith(_FOREIGN_PREFIXES):
        return _BY_CLASS_NAME.get(name.rsplit(".", 1)[-1])
    return None


def load_class(target: str) -> type:
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def known_names() -> list[str]:
    """Aliases then class paths, for error messages and ``-h``."""
    return [*ALIASES, *CLASS_PATHS]
