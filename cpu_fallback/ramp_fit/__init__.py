"""NumPy ramp fits: ``gls`` (gpucal's own), ``likely`` (Brandt 2024) and ``ols_cas22`` (Casertano 2022).

All take ``(data, groupdq, pixeldq, readnoise, gain, timing, params)`` and return a
:class:`gpucal.backends.protocol.RampFitResult`; ``likely`` and ``ols_cas22`` reproduce
romancal 1.1.0 / stcal 1.20.0 (spec algorithms.md §7.1, §7.2); ``gls`` is gpucal's default
(:mod:`cpu_fallback.ramp_fit.gls`).  All are vectorised over pixels in row blocks.
"""

from cpu_fallback.ramp_fit.gls import fit_gls
from cpu_fallback.ramp_fit.likely import fit_likely
from cpu_fallback.ramp_fit.ols_cas22 import fit_ols_cas22

__all__ = ["fit_gls", "fit_likely", "fit_ols_cas22"]
