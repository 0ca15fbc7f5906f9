"""Parameter files as stpipe reads and writes them: ASDF (``step_config-1.0.0`` and the
legacy layout), the same tree as YAML, and INI/configobj files.

Each is returned as ``(class name or None, values)`` where ``values`` holds the top-level
parameters and, for a pipeline, ``values["steps"] = {step: {param: value}}``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from gpucal.errors import ParameterError

__all__ = ["read_parameter_file", "write_parameter_file", "is_parameter_file", "adapt_file_values"]

log = logging.getLogger(__name__)

# stpipe entries of a parameter file that are not parameters (its generic parameters,
# pre_hooks ... output_use_model, are gpucal parameters too: hooks given here are refused)
_STPIPE_GENERIC = {"config_file", "name", "class"}
# romancal steps gpucal does not run (the cal file is gpucal's product)
_NOT_IN_GPUCAL = {"source_catalog", "tweakreg"}

_ASDF_MAGIC = b"#ASDF"
_IGNORED = {"class", "name"}


def is_parameter_file(path: str) -> bool:
    p = Path(path)
    return p.is_file() and p.suffix.lower() in (".asdf", ".yaml", ".yml", ".cfg", ".ini")


def _from_tree(tree: dict[str, Any], source: str) -> tuple[str | None, dict[str, Any]]:
    if not isinstance(tree, dict):
        raise ParameterError(f"{source}: not a parameter file")
    cls = tree.get("class")
    params = tree.get("parameters", {}) or {}
    if not isinstance(params, dict):
        raise ParameterError(f"{source}: 'parameters' must be a mapping")
    values = {k: v for k, v in params.items() if k != "steps"}
    steps: dict[str, dict[str, Any]] = {}
    raw_steps = tree.get("steps", params.get("steps"))
    if isinstance(raw_steps, list):  # step_config-1.0.0
        for entry in raw_steps:
            name = entry.get("name")
            if not name:
                raise ParameterError(f"{source}: a step entry has no name")
            steps[_step_key(name)] = dict(entry.get("parameters", {}) or {})
    elif isinstance(raw_steps, dict):  # legacy nested mapping
        for name, entry in raw_steps.items():
            sub = entry.get("parameters", entry) if isinstance(entry, dict) else {}
            steps[_step_key(name)] = {k: v for k, v in sub.items() if k not in _IGNORED}
    for key in list(values):
        if key in _IGNORED:
            values.pop(key)
    if steps:
        values["steps"] = steps
    return (str(cls) if cls else None), values


def _step_key(name: str) -> str:
    # romancal's parameter files name the ramp-fit and flat steps by class alias
    return {"ramp_fit": "rampfit", "flat_field": "flatfield", "dark": "dark_current"}.get(name, name)


def _parse_ini(text: str, source: str) -> dict[str, Any]:
    root: dict[str, Any] = {}
    stack: list[dict[str, Any]] = [root]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            depth = len(line) - len(line.lstrip("["))
            name = line.strip("[]").strip()
            if depth < 1 or depth > len(stack):
                raise ParameterError(f"{source}:{lineno}: bad section nesting")
            del stack[depth:]
            section: dict[str, Any] = {}
            stack[-1][name] = section
            stack.append(section)
            continue
        if "=" not in line:
            raise ParameterError(f"{source}:{lineno}: expected 'name = value'")
        key, value = (part.strip() for part in line.split("=", 1))
        stack[-1][key] = value.strip("'\"")
    tree: dict[str, Any] = {"class": root.pop("class", None)}
    root.pop("name", None)
    steps = root.pop("steps", {})
    tree["parameters"] = root
    tree["steps"] = {name: sub for name, sub in steps.items()}
    return tree


def read_parameter_file(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """Read a parameter file; raise :class:`ParameterError` with one line if unusable."""
    path = Path(path)
    source = str(path)
    try:
        head = path.read_bytes()[:5]
    except OSError as exc:
        raise ParameterError(f"cannot read parameter file {source}: {exc.strerror}") from None
    if head == _ASDF_MAGIC:
        import asdf

        try:
            with asdf.open(path, lazy_load=False) as af:
                tree = {k: _plain(v) for k, v in af.tree.items() if k not in ("asdf_library", "history")}
        except Exception as exc:
            raise ParameterError(f"cannot read ASDF parameter file {source}: {exc}") from None
        return _from_tree(tree, source)
    text = path.read_text(errors="replace")
    if path.suffix.lower() in (".cfg", ".ini"):
        return _from_tree(_parse_ini(text, source), source)
    import yaml

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"cannot parse YAML parameter file {source}: {exc}") from None
    return _from_tree(tree, source)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_parameter_file(path: str | Path, class_path: str, name: str, values: dict[str, Any],
                         steps: dict[str, tuple[str, dict[str, Any]]] | None = None) -> None:
    """Write an ASDF parameter file in stpipe's ``step_config-1.0.0`` layout."""
    import asdf

    tree: dict[str, Any] = {"class": class_path, "name": name, "parameters": dict(values)}
    if steps:
        tree["steps"] = [
            {"class": cls, "name": key, "parameters": dict(vals)} for key, (cls, vals) in steps.items()
        ]
    asdf.AsdfFile(tree).write_to(str(path))


def adapt_file_values(step_cls: Any, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Fit a parameter file's values to ``step_cls`` as stpipe would read them.

    stpipe's generic parameters that do nothing here are dropped, as are romancal's
    source_catalog and tweakreg steps (not part of gpucal); any other parameter gpucal
    does not know is dropped with a warning naming it.  The command line stays strict.
    """

    def fit(cls: Any, vals: dict[str, Any], where: str) -> dict[str, Any]:
        known = {f.name for f in dataclasses.fields(cls)}
        out = {}
        for key, value in vals.items():
            if key in known:
                out[key] = value
            elif key not in _STPIPE_GENERIC:
                log.warning("%s: parameter %s%s is not used by gpucal; ignored", source, where, key)
        return out

    out = fit(step_cls.Params, {k: v for k, v in values.items() if k != "steps"}, "")
    step_defs = getattr(step_cls, "step_defs", None)
    if step_defs is not None and values.get("steps"):
        steps: dict[str, dict[str, Any]] = {}
        for name, vals in values["steps"].items():
            if name in step_defs:
                steps[name] = fit(step_defs[name].Params, vals, f"steps.{name}.")
            elif name in _NOT_IN_GPUCAL:
                log.info("%s: step %s is not part of gpucal; its parameters are ignored", source, name)
            else:
                log.warning("%s: unknown step %s; ignored", source, name)
        out["steps"] = steps
    return out
