"""Built-in demo data: a consistent reference-file set and simulated Level 1 exposures.

:func:`make_references` writes Roman WFI reference files (roman_datamodels 1.1 models) and
:func:`make_exposure` simulates an ``*_uncal.asdf`` ramp from them, returning the
:class:`Truth` (rates, cosmic rays, saturation) the calibrated result can be checked against.
Frames may be smaller than the 4096 x 4096 detector for fast tests.
"""

from __future__ import annotations

from gpucal.demo._detector import default_read_pattern
from gpucal.demo.references import REFTYPES, ReferenceSet, load_references, make_references
from gpucal.demo.synth import DEFAULT_ROOT, Truth, demo_paths, make_exposure

__all__ = [
    "DEFAULT_ROOT",
    "REFTYPES",
    "ReferenceSet",
    "Truth",
    "default_read_pattern",
    "demo_paths",
    "load_references",
    "make_exposure",
    "make_references",
]
