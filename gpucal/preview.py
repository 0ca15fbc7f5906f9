"""A quick-look PNG of a Level 2 cal file: the slope image and the DQ flags that matter.

``gpucal preview x_cal.asdf`` (and ``strun ... --preview``) writes ``x_cal.png`` beside the
product: on the left the slope image (DN/s; photom only records the conversion) with an astronomical stretch (``zscale``: IRAF's z-scale limits, linear; ``asinh``:
the asinh stretch over the 0.5-99.5 percentile range), on the right the pixels flagged
SATURATED (red), JUMP_DET (blue) and DO_NOT_USE (grey; a pixel shows the first of its
flags in that order), with their counts.  The caption names the exposure, detector, filter,
exposure type, the software and backend that calibrated it, and the per-step times when
the caller knows them.  Any ImageModel roman_datamodels opens works, romancal's too.
matplotlib is an extra (``pip install 'gpucal[preview]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpucal.dq import PixelFlag
from gpucal.errors import GpucalError, InputFileError

__all__ = ["STRETCHES", "write_preview", "preview_path", "caption_lines", "preview_products", "require_matplotlib"]

log = logging.getLogger(__name__)

STRETCHES = ("zscale", "asinh")
#: (flag, label, RGB) in drawing priority: a pixel shows the first of its flags
_FLAG_COLOURS = (
    (PixelFlag.SATURATED, "saturated", (217, 38, 38)),
    (PixelFlag.JUMP_DET, "jump", (38, 89, 242)),
    (PixelFlag.DO_NOT_USE, "do not use", (140, 140, 140)),
)


def preview_path(product: str | os.PathLike[str]) -> Path:
    """Where the preview of ``product`` goes: beside it, ``.asdf`` replaced by ``.png``."""
    path = Path(product)
    return path.with_suffix(".png")


def _require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise GpucalError("the preview needs matplotlib: pip install 'gpucal[preview]'") from None
    return Figure


def _limits(data: np.ndarray, stretch: str) -> tuple[Any, float, float]:
    """An astropy normalisation of ``data`` for ``stretch`` (finite values only)."""
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return None, 0.0, 1.0
    if stretch == "zscale":
        vmin, vmax = ZScaleInterval().get_limits(finite)
        return None, float(vmin), float(vmax)  # linear between the z-scale limits
    vmin, vmax = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(a=0.1), clip=True), vmin, vmax


def _get(meta: Any, *path: str) -> Any:
    node = meta
    for key in path:
        try:
            node = node[key]
        except (KeyError, TypeError, AttributeError):
            return None
    return node


def caption_lines(model: Any, timings: Mapping[str, float] | None = None, backend: str | None = None) -> list[str]:
    """The caption: exposure, detector, filter, type; software and backend; step times."""
    meta = model.meta
    name = _get(meta, "filename") or "?"
    detector = _get(meta, "instrument", "detector") or "?"
    element = _get(meta, "instrument", "optical_element") or "?"
    exptype = _get(meta, "exposure", "type") or "?"
    lines = [f"{name}   {detector}   {element}   {exptype}"]
    software = f"{_get(meta, 'calibration_software_name') or '?'} {_get(meta, 'calibration_software_version') or ''}"
    used = backend or _get(meta, "gpucal", "backend")
    device = _get(meta, "gpucal", "device")
    where = f", backend {used}" + (f" ({device})" if device else "") if used else ""
    lines.append(f"calibrated by {software.strip()}{where}")
    if timings:
        line = "step times:"
        for key, seconds in timings.items():
            entry = f" {key} {seconds:.2f}s"
            if len(line) + len(entry) > 110:
                lines.append(line)
                line = "           "
            line += entry
        lines.append(line)
    return lines


def write_preview(
    product: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    stretch: str = "zscale",
    timings: Mapping[str, float] | None = None,
    backend: str | None = None,
) -> Path:
    """Write the PNG preview of the cal file ``product`` and return its path.

    Parameters
    ----------
    product : path
        A Level 2 ImageModel file (``*_cal.asdf``), gpucal's or romancal's.
    out : path, optional
        The PNG to write (default: beside ``product``, see :func:`preview_path`).
    stretch : {"zscale", "asinh"}
        The intensity stretch of the slope image.
    timings : mapping of str to float, optional
        Seconds per step, shown in the caption.
    backend : str, optional
        The backend that ran, when not recorded in the file.

    Raises
    ------
    GpucalError
        matplotlib is missing (one line naming the extra), an unknown stretch, a file that
        is not an ImageModel, or the PNG cannot be written (nothing is left half-written).
    """
    if stretch not in STRETCHES:
        raise GpucalError(f"unknown stretch {stretch!r}; choose {' or '.join(STRETCHES)}")
    figure_cls = _require_matplotlib()
    import roman_datamodels.datamodels as rdm

    path = Path(product)
    try:
        model = rdm.open(path)
    except Exception as exc:
        raise InputFileError(f"cannot open {path} as a Roman datamodel: {type(exc).__name__}: {exc}") from None
    with model:
        if type(model).__name__ != "ImageModel":
            raise InputFileError(f"{path} holds a {type(model).__name__}; the preview needs a Level 2 ImageModel")
        data = np.asarray(model.data, dtype=np.float32)
        dq = np.asarray(model.dq, dtype=np.uint32)
        lines = caption_lines(model, timings, backend)
    target = Path(out) if out is not None else preview_path(path)
    fig = figure_cls(figsize=(12.5, 6.8), dpi=100)
    left, right = fig.subplots(1, 2)
    norm, vmin, vmax = _limits(data, stretch)
    limits = {"vmin": vmin, "vmax": vmax} if norm is None else {"norm": norm}
    shown = left.imshow(data, origin="lower", cmap="gray", interpolation="nearest", **limits)
    fig.colorbar(shown, ax=left, fraction=0.046, pad=0.02, label="DN/s")
    left.set_title(f"slope ({stretch}: {vmin:.3g} .. {vmax:.3g})")
    rgb = np.full((*dq.shape, 3), 255, dtype=np.uint8)
    painted = np.zeros(dq.shape, dtype=bool)
    legend = []
    for flag, label, colour in _FLAG_COLOURS:
        hit = (dq & np.uint32(flag)) != 0
        rgb[hit & ~painted] = colour
        painted |= hit
        count = int(np.count_nonzero(hit))
        legend.append((label, colour, count))
    right.imshow(rgb, origin="lower", interpolation="nearest")
    right.set_title("DQ flags")
    from matplotlib.patches import Patch

    total = max(dq.size, 1)
    right.legend(handles=[Patch(color=(c[0] / 255, c[1] / 255, c[2] / 255), label=f"{lab}: {n} ({100.0 * n / total:.2f}%)")
                          for lab, c, n in legend],
                 loc="upper right", fontsize=8, framealpha=0.85)
    for ax in (left, right):
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=8, family="monospace", va="bottom")
    fig.subplots_adjust(bottom=0.12 + 0.02 * len(lines), top=0.94, wspace=0.25)
    _save_atomically(fig, target)
    log.info("Preview written to %s", target)
    return target


def _save_atomically(fig: Any, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gpucal-preview-", suffix=".png", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, target)
    except OSError as exc:
        raise GpucalError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def require_matplotlib() -> None:
    """Fail now, with the one line naming the extra, when matplotlib is missing."""
    _require_matplotlib()


def preview_products(
    products: Iterable[str | os.PathLike[str]],
    *,
    stretch: str = "zscale",
    timings: Mapping[str, float] | None = None,
) -> list[Path]:
    """Previews of the Level 2 images among a run's ``products`` (``*_wcs.asdf`` and
    models that are not ImageModels, e.g. a saved ramp, are passed over)."""
    import roman_datamodels.datamodels as rdm

    written = []
    for product in products:
        path = Path(product)
        if path.suffix != ".asdf" or path.name.endswith("_wcs.asdf"):
            continue
        with rdm.open(path) as model:
            kind = type(model).__name__
        if kind != "ImageModel":
            log.info("No preview of %s: a %s, not a Level 2 image", path.name, kind)
            continue
        written.append(write_preview(path, stretch=stretch, timings=timings))
    return written
