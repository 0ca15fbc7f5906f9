"""The command line of the preview: ``gpucal preview`` and ``strun --preview``'s hook.

Importing this module imports click only (matplotlib and the models load when used).
"""

from __future__ import annotations

import sys
from typing import Any

import click

__all__ = ["preview", "STRUN_OPTIONS", "check_strun_preview", "strun_previews"]

#: the options ``strun`` gains (``--preview`` off by default)
STRUN_OPTIONS = [
    click.Option(["--preview"], is_flag=True,
                 help="Also write a PNG quick look beside each Level 2 image saved (needs gpucal[preview])."),
    click.Option(["--preview-stretch"], type=click.Choice(["zscale", "asinh"]), default="zscale",
                 show_default=True, help="Stretch of the preview's slope image."),
]


def check_strun_preview(stretch: str | None, distributed: bool) -> None:
    """Before any work: matplotlib is there, and the run is one the previews can follow.

    Raises
    ------
    GpucalError
        matplotlib missing (one line naming the extra), or a distributed run.
    """
    if stretch is None:
        return
    from gpucal.errors import GpucalError
    from gpucal.preview import require_matplotlib

    require_matplotlib()
    if distributed:
        raise GpucalError("--preview works in one process; run `gpucal preview` on the products")


def strun_previews(products: list[Any], stretch: str | None, timings: dict[str, float], error: Any) -> int:
    """Write the previews of a run's products; 0, or the exit status after one error line."""
    if stretch is None:
        return 0
    from gpucal.errors import GpucalError
    from gpucal.preview import preview_products

    try:
        preview_products(products, stretch=stretch, timings=timings)
    except GpucalError as exc:
        error(str(exc))
        return exc.exit_code
    return 0


@click.command()
@click.argument("products", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--stretch", type=click.Choice(["zscale", "asinh"]), default="zscale", show_default=True,
              help="Intensity stretch of the slope image.")
@click.option("-o", "--output", default=None, help="PNG to write (one product only; default: beside it).")
def preview(products: tuple[str, ...], stretch: str, output: str | None) -> None:
    """Write a PNG quick look of cal files: slope image, DQ flags, caption (needs gpucal[preview])."""
    from gpucal.errors import GpucalError
    from gpucal.preview import write_preview

    if output and len(products) > 1:
        raise click.UsageError("--output takes one product")
    for product in products:
        try:
            click.echo(str(write_preview(product, output, stretch=stretch)))
        except GpucalError as exc:
            click.echo(f"gpucal preview: error: {exc}", err=True)
            sys.exit(exc.exit_code)
