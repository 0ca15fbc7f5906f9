"""gpucal's NumPy backend: function for function the same as the CuPy backend.

Every function is vectorised over pixels and works on bounded row blocks where its
temporaries would otherwise scale with K x npix.  See :mod:`gpucal.backends.protocol` for
the signatures and array conventions.
"""

from __future__ import annotations

from cpu_fallback.backend import CpuBackend

__all__ = ["CpuBackend"]
