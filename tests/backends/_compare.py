"""The GPU/CPU numeric contract: how far two cal products of one input may differ.

A GPU computes ``pow``/``exp``/``log10`` with CUDA's libm (1-2 ulp from the host's), its FFTs
with cuFFT, and flushes float32 denormals; every other operation of the kernels is IEEE
round-to-nearest on both sides (no FMA contraction).  So most pixels agree to the bit, and
the rest by a rounding that can still move a threshold decision (a jump, a dropped
resultant, ols_cas22's SNR weighting bin).  The contract (README, "GPU and CPU agreement")
bounds that, over every pixel of the image:

* NaN/finite pattern identical in data, err, var_poisson, var_rnoise, chisq and dumo, on
  every pixel (a device NaN where the CPU has a number is a disagreement, never dropped);
* DQ identical on >= 99.99% of the pixels;
* slopes within 1e-3 sigma (the CPU's err) on >= 99.999% of the pixels good in both
  (no DO_NOT_USE, finite err > 0), and at least 90% of the pixels compared;
* err, var_poisson, var_rnoise, chisq within 2 float16 ulps of the CPU's value (they are
  stored as float16), dumo within that plus 1e-3 sigma, on >= 99.999% of those pixels;
* every pixel that differs is listed by class (``Agreement.classes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpucal.dq import PixelFlag

#: Slopes agree within this many sigma.
PULL_BOUND = 1e-3
#: Fraction of pixels whose DQ may differ.
MAX_DQ_FRACTION = 1e-4
#: Fraction of compared pixels whose slope or secondary arrays may be out of bounds.
MAX_OUT_FRACTION = 1e-5
#: Fraction of the image that must be compared (good in both).
MIN_COMPARED_FRACTION = 0.9
#: float16 ulps allowed on the float16 products.
F16_ULPS = 2
SECONDARY = ("err", "var_poisson", "var_rnoise", "chisq", "dumo")


@dataclass(frozen=True)
class Agreement:
    npix: int
    dq_differ: int  # pixels whose DQ differs
    nan_differ: int  # pixels where one product is NaN and the other is not (any array)
    good_both: int  # pixels without DO_NOT_USE in both, finite err > 0, finite slopes
    max_pull: float  # max |slope_a - slope_b| / err_b over good_both
    median_pull: float
    over: int  # good_both pixels with a pull above PULL_BOUND
    secondary_over: dict[str, int] = field(default_factory=dict)  # per array, pixels out of bounds
    classes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # class -> (y, x), first 20

    @property
    def dq_differ_fraction(self) -> float:
        return self.dq_differ / self.npix

    def violations(self) -> list[str]:
        """The contract's clauses this comparison breaks (empty: it holds)."""
        bad = []
        if self.nan_differ:
            bad.append(f"NaN pattern differs on {self.nan_differ} pixels")
        if self.dq_differ > MAX_DQ_FRACTION * self.npix:
            bad.append(f"DQ differs on {self.dq_differ} pixels (> {MAX_DQ_FRACTION:g})")
        if self.good_both < MIN_COMPARED_FRACTION * self.npix:
            bad.append(f"only {self.good_both} of {self.npix} pixels compared")
        if self.over > MAX_OUT_FRACTION * max(self.good_both, 1):
            bad.append(f"{self.over} slopes beyond {PULL_BOUND:g} sigma (> {MAX_OUT_FRACTION:g})")
        for name, n in self.secondary_over.items():
            if n > MAX_OUT_FRACTION * max(self.good_both, 1):
                bad.append(f"{name} out of bounds on {n} pixels")
        return bad

    def __str__(self) -> str:
        listed = "; ".join(f"{k}: {len(v)}{'+' if len(v) == 20 else ''} e.g. {v[:3]}" for k, v in self.classes.items())
        return (f"{self.npix} pixels: DQ differs on {self.dq_differ} ({self.dq_differ_fraction:.2e}), NaN pattern "
                f"on {self.nan_differ}; {self.good_both} good in both, |dslope|/err max {self.max_pull:.2e}, "
                f"median {self.median_pull:.2e}, {self.over} above {PULL_BOUND:g}; secondary out of bounds "
                f"{self.secondary_over}; classes: {listed or 'none'}")


def _get(model: Any, name: str) -> np.ndarray | None:
    try:
        value = model[name]
    except (KeyError, AttributeError):
        return None
    return None if value is None else np.asarray(value)


def _where(mask: np.ndarray, limit: int = 20) -> list[tuple[int, int]]:
    ys, xs = np.nonzero(mask)
    return [(int(y), int(x)) for y, x in zip(ys[:limit], xs[:limit], strict=True)]


def agreement(a: Any, b: Any) -> Agreement:
    """Compare image models (or cal file paths) ``a`` (device) and ``b`` (CPU); ``b``'s err is the unit."""
    import roman_datamodels.datamodels as rdm

    ma, mb = (rdm.open(x) if isinstance(x, str | Path) else x for x in (a, b))
    sa, sb = (np.asarray(m.data, dtype=np.float64) for m in (ma, mb))
    qa, qb = (np.asarray(m.dq, dtype=np.uint32) for m in (ma, mb))
    eb = np.asarray(mb.err, dtype=np.float64)
    classes: dict[str, list[tuple[int, int]]] = {}

    dq_mask = qa != qb
    for bit in PixelFlag:
        differs = ((qa ^ qb) & np.uint32(bit)) != 0
        if differs.any():
            classes[f"dq:{bit.name}"] = _where(differs)

    nan_mask = np.isnan(sa) != np.isnan(sb)
    if nan_mask.any():
        classes["nan:data"] = _where(nan_mask)
    pairs = {name: (_get(ma, name), _get(mb, name)) for name in SECONDARY}
    for name, (x, y) in pairs.items():
        if (x is None) != (y is None):
            raise AssertionError(f"{name} present in only one product")
        if x is not None and y is not None:
            m = np.isnan(x.astype(np.float64)) != np.isnan(y.astype(np.float64))
            if m.any():
                classes[f"nan:{name}"] = _where(m)
                nan_mask |= m

    dnu = np.uint32(PixelFlag.DO_NOT_USE)
    good = ((qa & dnu) == 0) & ((qb & dnu) == 0) & np.isfinite(eb) & (eb > 0) & np.isfinite(sa) & np.isfinite(sb)
    pull_map = np.zeros(sa.shape)
    pull_map[good] = np.abs(sa - sb)[good] / eb[good]
    over_mask = pull_map > PULL_BOUND
    if over_mask.any():
        classes["slope"] = _where(over_mask)
    pull = pull_map[good]

    secondary_over = {}
    for name, (x, y) in pairs.items():
        if x is None or y is None:
            continue
        xf, yf = x.astype(np.float64), y.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            tol = F16_ULPS * np.spacing(np.abs(y).astype(np.float16)).astype(np.float64)
        if name == "dumo":
            tol = tol + PULL_BOUND * np.where(good, eb, 0.0)
        both = good & np.isfinite(xf) & np.isfinite(yf)
        out = both & (np.abs(xf - yf) > tol)
        secondary_over[name] = int(np.count_nonzero(out))
        if out.any():
            classes[f"value:{name}"] = _where(out)

    return Agreement(
        npix=int(qa.size),
        dq_differ=int(np.count_nonzero(dq_mask)),
        nan_differ=int(np.count_nonzero(nan_mask)),
        good_both=int(good.sum()),
        max_pull=float(pull.max()) if pull.size else 0.0,
        median_pull=float(np.median(pull)) if pull.size else 0.0,
        over=int(np.count_nonzero(over_mask)),
        secondary_over=secondary_over,
        classes=classes,
    )
