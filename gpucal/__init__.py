"""gpucal: GPU-accelerated calibration of Roman WFI exposures, Level 1 to Level 2.

The package import is kept light (no asdf, crds or cupy) so that ``strun -h`` is instant;
heavy modules are imported where they are used.
"""

from __future__ import annotations

try:
    from gpucal._version import __version__
except ImportError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
