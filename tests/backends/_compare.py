"""Agreement of two cal products (issue 5, item 5): DQ flags and slopes in sigma."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucal.dq import PixelFlag

#: Slopes agree within this many sigma (issue 5 item 5).
PULL_BOUND = 1e-3


@dataclass(frozen=True)
class Agreement:
    npix: int
    dq_differ: int  # pixels whose DQ differs
    good_both: int  # pixels without DO_NOT_USE in both, finite err > 0
    max_pull: float  # max |slope_a - slope_b| / err_b over good_both
    median_pull: float
    over: int  # good_both pixels with a pull above PULL_BOUND

    @property
    def dq_differ_fraction(self) -> float:
        return self.dq_differ / self.npix

    def __str__(self) -> str:
        return (f"{self.npix} pixels: DQ differs on {self.dq_differ} ({self.dq_differ_fraction:.2e}); "
                f"{self.good_both} good in both, |dslope|/err max {self.max_pull:.2e}, "
                f"median {self.median_pull:.2e}, {self.over} above {PULL_BOUND:g}")


def _arrays(model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(model.data, dtype=np.float64), np.asarray(model.dq, dtype=np.uint32),
            np.asarray(model.err, dtype=np.float64))


def agreement(a: Any, b: Any) -> Agreement:
    """Compare image models (or cal file paths) ``a`` and ``b``; ``b``'s err is the unit."""
    import roman_datamodels.datamodels as rdm

    models = [rdm.open(x) if isinstance(x, str | Path) else x for x in (a, b)]
    (sa, qa, _), (sb, qb, eb) = (_arrays(m) for m in models)
    dnu = np.uint32(PixelFlag.DO_NOT_USE)
    good = ((qa & dnu) == 0) & ((qb & dnu) == 0) & np.isfinite(eb) & (eb > 0) & np.isfinite(sa) & np.isfinite(sb)
    pull = np.abs(sa - sb)[good] / eb[good]
    return Agreement(
        npix=int(qa.size),
        dq_differ=int(np.count_nonzero(qa != qb)),
        good_both=int(good.sum()),
        max_pull=float(pull.max()) if pull.size else 0.0,
        median_pull=float(np.median(pull)) if pull.size else 0.0,
        over=int(np.count_nonzero(pull > PULL_BOUND)),
    )
