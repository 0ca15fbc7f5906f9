"""gpucal: GPU-accelerated calibration of Roman WFI exposures, Level 1 to Level 2.

The package import is kept light (no asdf, crds or cupy) so that ``strun -h`` is instant;
heavy modules are imported where they are used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpucal.work import FileRecord

try:
    from gpucal._version import __version__
except ImportError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "calibrate_many"]


def calibrate_many(paths: Iterable[str | os.PathLike[str]], client: Any = None, **kwargs: Any) -> list[FileRecord]:
    """Calibrate many exposures, on a Dask cluster when ``client`` is given; return their records.

    See :func:`gpucal.scale.run.calibrate_many` (imported on first use, so ``import gpucal``
    stays light).
    """
    from gpucal.scale.run import calibrate_many as _calibrate_many

    return _calibrate_many(paths, client, **kwargs)
