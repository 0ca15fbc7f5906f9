"""Output file naming, as stpipe and romancal do it.

A base name loses **one** known suffix (``_uncal``, ``-dqinit``, ...) from its end, keeping
the separator found, then gets ``<sep><suffix>.<ext>``.  An unknown suffix is kept.
"""

from __future__ import annotations

import os
import re

__all__ = ["KNOWN_SUFFIXES", "remove_suffix", "output_name"]

# romancal 1.1.0's known suffixes (romancal.lib.suffix), plus gpucal's jump step.
KNOWN_SUFFIXES: frozenset[str] = frozenset(
    """assign_wcs assignwcs assignwcsstep ca cal cat coadd crf dark dark_current dark_decay
    darkcurrent darkcurrentstep darkdecaystep dq_init dqinit dqinitstep flat flatfieldstep
    fluxstep linearity linearitystep median multibandcatalogstep outlier_detection
    outlierdetectionstep phot photom photomstep ramp rampfit rampfitstep rate refpix
    refpixstep resamplestep saturation saturationstep segm skymatch skymatchstep
    sourcecatalogstep tweakregstep uncal wfi18_transient wfi18transientstep
    jump jumpstep""".split()
)

_SUFFIX_RE = re.compile(
    r"^(?P<root>.+?)((?P<sep>_|-)(?P<suffix>" + "|".join(sorted(KNOWN_SUFFIXES, key=len, reverse=True)) + r"))?$"
)


def remove_suffix(name: str) -> tuple[str, str | None]:
    """Split one known suffix off ``name``; return (root, separator or None)."""
    match = _SUFFIX_RE.match(name)
    if match is None:  # empty name
        return name, None
    return match.group("root"), match.group("sep")


def output_name(base: str, suffix: str | None, ext: str = ".asdf") -> str:
    """File name for ``base`` (a path or name; only its stem is used) with ``suffix``.

    >>> output_name("r0001_wfi01_uncal.asdf", "cal")
    'r0001_wfi01_cal.asdf'
    >>> output_name("x_wcs.asdf", "cal")
    'x_wcs_cal.asdf'
    """
    stem = os.path.splitext(os.path.basename(base))[0]
    ext = ext if ext.startswith(".") else "." + ext
    if not suffix:
        return stem + ext
    root, sep = remove_suffix(stem)
    return f"{root}{sep or '_'}{suffix}{ext}"
