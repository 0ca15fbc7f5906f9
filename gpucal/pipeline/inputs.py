"""Association and ModelLibrary inputs of the exposure pipeline, as romancal 1.1.0 reads them.

romancal's ``open_dataset`` treats a ``.json`` path or a mapping as an association and
calibrates every member of its first product (member ``expname`` relative to the
association file, or to the working directory for a mapping); a ``ModelLibrary`` is
calibrated member by member.  Either way the pipeline returns a library of the calibrated
models, and two (empty, here) libraries in the catalog and segmentation slots.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from gpucal.errors import InputFileError

__all__ = ["ExposureResult", "input_kind", "association_members", "make_library", "library_models"]


class ExposureResult(NamedTuple):
    """What ``ExposurePipeline.run``/``call`` return, in romancal 1.1.0's order.

    ``model`` is the calibrated model (a ModelLibrary for association and library
    inputs); gpucal has no source_catalog step, so ``catalog`` and ``segmentation`` are
    ``None`` (empty libraries for association and library inputs), which is what romancal
    returns when source_catalog is skipped.
    """

    model: Any
    catalog: Any
    segmentation: Any


def input_kind(dataset: Any) -> str:
    """``"asn"`` (JSON path or mapping), ``"library"`` (a ModelLibrary) or ``"single"``."""
    if isinstance(dataset, Mapping):
        return "asn"
    if isinstance(dataset, str | os.PathLike) and str(dataset).lower().endswith(".json"):
        return "asn"
    if any(cls.__name__ in ("ModelLibrary", "AbstractModelLibrary") for cls in type(dataset).__mro__):
        return "library"
    return "single"


def association_members(dataset: Any) -> list[str]:
    """The member files of an association's first product, as absolute paths.

    Raises
    ------
    InputFileError
        Unreadable or malformed association, or one without members.
    """
    if isinstance(dataset, Mapping):
        asn, base, source = dataset, Path.cwd(), "the association"
    else:
        path = Path(os.path.expandvars(os.path.expanduser(str(dataset))))
        source = str(path)
        try:
            asn = json.loads(path.read_text())
        except OSError as exc:
            raise InputFileError(f"cannot read association {source}: {exc.strerror}") from None
        except ValueError as exc:
            raise InputFileError(f"{source} is not a JSON association: {exc}") from None
        base = path.resolve().parent
    try:
        members = asn["products"][0]["members"]
        names = [str(m["expname"]) for m in members]
    except (KeyError, IndexError, TypeError):
        raise InputFileError(f"{source}: an association needs products[0].members[].expname") from None
    if not names:
        raise InputFileError(f"{source}: the association has no members")
    return [str(Path(n) if Path(n).is_absolute() else base / n) for n in names]


def library_models(library: Any) -> list[Any]:
    """Borrow every model of a ModelLibrary (returned unmodified to it afterwards)."""
    models = []
    with library:
        for index, model in enumerate(library):
            models.append(model)
            library.shelve(model, index, modify=False)
    return models


def make_library(models: list[Any]) -> Any:
    """romancal's ``ModelLibrary`` of ``models`` when romancal is installed, else the list."""
    try:
        from romancal.datamodels import ModelLibrary
    except ImportError:  # gpucal runs without romancal: the models themselves
        return list(models)
    return ModelLibrary(list(models))
