"""Step parameters: one frozen dataclass per step, feeding the Python API, ``strun``
options and ``-h``.

Values given as text (command line, INI/YAML parameter files) are parsed as stpipe's
configobj validation does: booleans accept true/false/yes/no/on/off/1/0 in any case,
numbers are parsed, ``None`` clears an optional value, choices are enforced.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from gpucal.errors import ParameterError

__all__ = ["param", "StepParams", "param_fields", "parse_value", "build_params", "describe_default"]

_TRUE = {"true", "yes", "on", "1", "t", "y"}
_FALSE = {"false", "no", "off", "0", "f", "n"}


def param(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its help text (and allowed values) for ``-h``."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class StepParams:
    """Parameters every step and pipeline has (stpipe's common set, plus ``backend``)."""

    skip: bool = param(False, "Skip this step (ignored when the step runs on its own).")
    save_results: bool = param(False, "Save the result of this step to a file.")
    output_file: str | None = param(None, "Base name for the output file (turns save_results on).")
    output_dir: str | None = param(None, "Directory for output files (created if missing).")
    output_ext: str = param(".asdf", "Extension of output files.")
    suffix: str | None = param(None, "Suffix of the output file name (replaces a known suffix of the input).")
    input_dir: str | None = param(None, "Directory prefixed to a relative input file name.")
    backend: str = param(
        "auto", "Array backend: auto (GPU when usable, else CPU), gpu or cpu.", choices=("auto", "gpu", "cpu")
    )
    # stpipe's generic parameters (romancal's parameter files and scripts set them)
    pre_hooks: tuple[str, ...] = param((), "stpipe hooks run before the step: gpucal refuses any (run them yourself).")
    post_hooks: tuple[str, ...] = param((), "stpipe hooks run after the step: gpucal refuses any (run them yourself).")
    update_version: bool = param(False, "Update an input written with an older datamodel schema to the current one.")
    search_output_file: bool = param(True, "Take output_file from the enclosing pipeline when this step has none.")
    output_use_model: bool = param(False, "Name the output after the model's meta.filename, not the input file.")
    output_use_index: bool = param(
        True, "stpipe: index names of multi-model results (gpucal returns one model per input: no index)."
    )


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def param_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields of a params class, in declaration order."""
    return list(dataclasses.fields(cls))


def _base_types(hint: Any) -> tuple[tuple[type, ...], bool]:
    """(concrete types, optional?) of a type hint such as ``int``, ``str | None``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        concrete = tuple(a for a in args if a is not type(None))
        return concrete, len(concrete) != len(args)
    return (hint,), False


def parse_value(name: str, value: Any, hint: Any, choices: tuple[str, ...] | None = None) -> Any:
    """Convert ``value`` (text or a Python value) to the type of the parameter ``name``.

    Raises
    ------
    ParameterError
        When the value cannot be converted or is not one of ``choices``.
    """
    concrete, optional = _base_types(hint)
    if name.startswith("override_") and hasattr(value, "meta") and hasattr(value, "_instance"):
        return value  # an opened reference datamodel, as stpipe accepts (checked when used)
    if value is None or (optional and isinstance(value, str) and value.strip() in ("None", "none", "")):
        if optional:
            return None
        raise ParameterError(f"parameter {name!r} needs a value")
    out: Any = value
    kind = concrete[0]
    try:
        if kind is bool:
            if isinstance(value, bool):
                out = value
            elif isinstance(value, int | float) and value in (0, 1):
                out = bool(value)
            elif isinstance(value, str) and value.strip().lower() in _TRUE:
                out = True
            elif isinstance(value, str) and value.strip().lower() in _FALSE:
                out = False
            else:
                raise ValueError
        elif kind is int:
            if isinstance(value, bool):
                raise ValueError
            out = int(value) if not isinstance(value, str) else int(value.strip(), 0)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        elif kind is str:
            out = str(value)
        elif typing.get_origin(kind) is tuple:  # configobj string_list: a list or "a, b"
            items = value.split(",") if isinstance(value, str) else list(value)
            out = tuple(str(v).strip() if isinstance(v, str) else v for v in items if not (isinstance(v, str) and not v.strip()))
    except (TypeError, ValueError):
        raise ParameterError(f"parameter {name!r}: {value!r} is not a valid {kind.__name__}") from None
    if choices is not None and out is not None and out not in choices:
        raise ParameterError(f"parameter {name!r}: {out!r} is not one of {', '.join(choices)}")
    return out


def build_params(cls: type, values: dict[str, Any] | None = None, *, base: Any = None) -> Any:
    """Instantiate ``cls`` from ``base`` (or defaults) with ``values`` parsed onto it.

    Raises
    ------
    ParameterError
        For an unknown parameter name or an invalid value.
    """
    values = dict(values or {})
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParameterError(f"{cls.__name__.removesuffix('Params')}: unknown parameter(s) {', '.join(unknown)}")
    parsed = {
        name: parse_value(name, val, hints[name], known[name].metadata.get("choices")) for name, val in values.items()
    }
    if base is None:
        return cls(**parsed)
    return dataclasses.replace(base, **parsed)


def describe_default(value: Any) -> str:
    """How a default is shown by ``-h`` (stpipe omits None and empty defaults)."""
    if value is None or value == "" or value == ():
        return ""
    return f" [default={value}]"
