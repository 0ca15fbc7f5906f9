"""Reference-file selection through the real CRDS client, offline, from a cache gpucal writes.

Neither the GPU machines nor the developer machines can reach the CRDS server, so gpucal
can write a complete, self-consistent CRDS cache for observatory ``roman`` itself
(:func:`build_local_cache`) and then ask the unmodified ``crds`` client for best references
from it (:func:`best_references`).

Cache layout (crds 14, "instrument" sub-directory mode, selected by the tag file
``config/roman/ref_cache_subdir_mode``)::

    $CRDS_PATH/mappings/roman/roman_NNNN.pmap, roman_wfi_NNNN.imap, roman_wfi_<reftype>_NNNN.rmap
    $CRDS_PATH/references/roman/wfi/<reference basenames>
    $CRDS_PATH/config/roman/server_config          (what crds loads when not connected)
    $CRDS_PATH/config/roman/ref_cache_subdir_mode  ("instrument")

Every mapping carries a ``sha1sum`` header entry, which crds verifies on load: it is the
SHA-1 of the file's UTF-8 text with every line that contains ``sha1sum`` left out.
Selection keys follow crds's own template rmaps (``crds/roman/specs/wfi_<reftype>.rmap``),
with USEAFTER on ``ROMAN.META.EXPOSURE.START_TIME``.

Offline operation (see :func:`offline_environment`)::

    CRDS_PATH=<cache root>
    CRDS_SERVER_URL=https://crds-serverless-mode.stsci.edu   # any URL containing "serverless"
    CRDS_CONTEXT=roman_NNNN.pmap
    CRDS_MODE=local
    CRDS_READONLY_CACHE=1
    CRDS_OBSERVATORY=roman

and ``CRDS_PATH_SINGLE`` / ``CRDS_MAPPATH*`` / ``CRDS_REFPATH*`` / ``CRDS_CFGPATH*`` unset
(they take precedence over ``CRDS_PATH``).

What crds does that matters here (crds 14.0.3):

* ``CRDS_SERVER_URL`` is read once, when ``crds`` is imported (default: the serverless
  URL above). A server URL containing "serverless" makes every JSON-RPC call fail at once
  without touching the network; crds then loads ``server_config`` from the cache
  (connected=False). Any other URL is contacted with a socket timeout of
  ``CRDS_CLIENT_TIMEOUT_SECONDS`` (default 3600 s); :func:`best_references` caps it at
  :data:`MAX_NETWORK_TIMEOUT_S` for the duration of its call.
* When neither server nor ``server_config`` is available crds logs a FATAL error and calls
  ``sys.exit(-1)`` (status 255); :func:`best_references` turns that into
  :class:`~gpucal.errors.ReferenceFileError`.
* crds memoises its configuration, the server info, the context name and every loaded
  mapping (by basename) for the life of the process, and its config items write their
  defaults into ``os.environ`` (``CRDS_MODE``, ``CRDS_CLIENT_TIMEOUT_SECONDS``, ...).
  :func:`best_references` therefore re-points crds (server URL, memo caches, reference
  sub-directory mode) whenever the relevant ``CRDS_*`` variables differ from its last call,
  so the environment in force at each call is the one honoured.
* A reference type the rules do not know, or whose rmap has no match, is a crds lookup
  error (here a ``ReferenceFileError``); a type declared ``N/A`` in the rules (see
  ``not_applicable`` in :func:`build_local_cache`) comes back as ``"N/A"``.
* ``crds.core.crds_cache_locking.get_cache_lock`` is a deprecated no-op in crds 14; calls
  into crds are serialised with a process-wide lock instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import pprint
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpucal.errors import ReferenceFileError

__all__ = [
    "CacheEntry",
    "MAX_NETWORK_TIMEOUT_S",
    "SELECTION_KEYS",
    "SERVERLESS_URL",
    "best_references",
    "build_local_cache",
    "crds_info",
    "offline_environment",
]

log = logging.getLogger(__name__)

OBSERVATORY = "roman"
INSTRUMENT = "wfi"
#: The server URL crds itself defaults to; "serverless" in a URL disables all RPC calls.
SERVERLESS_URL = "https://crds-serverless-mode.stsci.edu"
#: Upper bound (s) on crds's per-request socket timeout while :func:`best_references` runs.
MAX_NETWORK_TIMEOUT_S = 30

_DETECTOR = "ROMAN.META.INSTRUMENT.DETECTOR"
_OPTICAL_ELEMENT = "ROMAN.META.INSTRUMENT.OPTICAL_ELEMENT"
_EXPOSURE_TYPE = "ROMAN.META.EXPOSURE.TYPE"
_USEAFTER_KEY = "ROMAN.META.EXPOSURE.START_TIME"
_ENTRY_FIELD = {_DETECTOR: "detector", _OPTICAL_ELEMENT: "optical_element", _EXPOSURE_TYPE: "exposure_type"}

#: Match keys per reference type, as in crds's template rmaps ``crds/roman/specs``.
SELECTION_KEYS: dict[str, tuple[str, ...]] = {
    "mask": (_DETECTOR,),
    "saturation": (_DETECTOR,),
    "refpix": (_DETECTOR,),
    "darkdecaysignal": (),
    "linearity": (_DETECTOR,),
    "inverselinearity": (_DETECTOR,),
    "integralnonlinearity": (_DETECTOR,),
    "readnoise": (_DETECTOR, _EXPOSURE_TYPE),
    "gain": (_DETECTOR,),
    "dark": (_DETECTOR, _EXPOSURE_TYPE),
    "distortion": (_DETECTOR, _OPTICAL_ELEMENT),
    "photom": (_DETECTOR,),
    "flat": (_DETECTOR, _OPTICAL_ELEMENT),
    "apcorr": (_DETECTOR,),
    "epsf": (_DETECTOR, _OPTICAL_ELEMENT),
}

# Variables that change where or how crds looks things up; a change triggers a re-point.
_ENV_KEYS = (
    "CRDS_PATH",
    "CRDS_PATH_SINGLE",
    "CRDS_MAPPATH",
    "CRDS_MAPPATH_SINGLE",
    "CRDS_REFPATH",
    "CRDS_REFPATH_SINGLE",
    "CRDS_CFGPATH",
    "CRDS_CFGPATH_SINGLE",
    "CRDS_SERVER_URL",
    "CRDS_CONTEXT",
    "CRDS_MODE",
    "CRDS_OBSERVATORY",
    "CRDS_READONLY_CACHE",
)
_GENERATED_BY = "generated by gpucal.crds_local"
_VALUE_RE = re.compile(r"[A-Z0-9_\-*|]+|N/A")
_FILE_RE = re.compile(r"[A-Za-z0-9._\-]{1,128}")

_lock = threading.Lock()
_last_env: tuple[str | None, ...] | None = None
_last_context: str | None = None


@dataclass(frozen=True)
class CacheEntry:
    """One reference file and the conditions under which CRDS should select it.

    Parameters
    ----------
    reftype : str
        CRDS reference type, a key of :data:`SELECTION_KEYS` (e.g. ``"flat"``).
    path : Path
        The reference file (ASDF); copied or hard-linked into the cache under its basename.
    detector, optical_element, exposure_type : str or None
        Match values (``"WFI01"``, ``"F158"``, ``"WFI_IMAGE"``; ``"A|B"`` matches either).
        Used only where the reftype selects on that key; ``None`` there means "any".
    useafter : str
        ISO date-time from which the file applies (``roman.meta.exposure.start_time``).
    """

    reftype: str
    path: Path
    detector: str | None = None
    optical_element: str | None = None
    exposure_type: str | None = None
    useafter: str = "2020-01-01T00:00:00"


def build_local_cache(
    cache_root: str | os.PathLike[str],
    entries: Iterable[CacheEntry],
    context_serial: int = 1,
    *,
    not_applicable: Iterable[str] = (),
) -> str:
    """Write a CRDS cache for ``roman`` that the crds client can use with no server.

    Parameters
    ----------
    cache_root : path-like
        The cache root (``CRDS_PATH``); created if missing. Existing files of the same
        names are replaced.
    entries : iterable of CacheEntry
        The reference files and their selection conditions.
    context_serial : int
        Serial ``NNNN`` of the mappings written (``roman_NNNN.pmap`` ...), 0-9999.
    not_applicable : iterable of str
        Reference types the rules declare ``N/A`` for WFI (best references give ``"N/A"``).

    Returns
    -------
    str
        The pipeline mapping's name, e.g. ``"roman_0001.pmap"``; also the server
        config's latest context.

    Raises
    ------
    ReferenceFileError
        An unknown reftype, a missing or badly named file, an invalid match value or
        date, or two files for the same conditions.
    """
    if not 0 <= int(context_serial) <= 9999:
        raise ReferenceFileError(f"CRDS context serial must be 0-9999, not {context_serial!r}")
    serial = f"{int(context_serial):04d}"
    root = Path(cache_root).resolve()
    map_dir = root / "mappings" / OBSERVATORY
    ref_dir = root / "references" / OBSERVATORY / INSTRUMENT
    cfg_dir = root / "config" / OBSERVATORY
    for directory in (map_dir, ref_dir, cfg_dir):
        directory.mkdir(parents=True, exist_ok=True)

    rules = _collect_rules(entries)
    na_types = sorted({_check_reftype(name) for name in not_applicable} - set(rules))
    _install_references(rules, ref_dir)

    imap_name = f"{OBSERVATORY}_{INSTRUMENT}_{serial}.imap"
    pmap_name = f"{OBSERVATORY}_{serial}.pmap"
    imap_selector: dict[str, str] = dict.fromkeys(na_types, "N/A")
    for reftype, matches in sorted(rules.items()):
        rmap_name = f"{OBSERVATORY}_{INSTRUMENT}_{reftype}_{serial}.rmap"
        _write(map_dir / rmap_name, _rmap_text(rmap_name, reftype, matches))
        imap_selector[reftype] = rmap_name
    imap_header = {
        "derived_from": _GENERATED_BY,
        "instrument": INSTRUMENT.upper(),
        "mapping": "INSTRUMENT",
        "name": imap_name,
        "observatory": OBSERVATORY.upper(),
        "parkey": ("REFTYPE",),
    }
    _write(map_dir / imap_name, _mapping_text(imap_header, _dict_text(sorted(imap_selector.items()))))
    pmap_header = {
        "derived_from": _GENERATED_BY,
        "mapping": "PIPELINE",
        "name": pmap_name,
        "observatory": OBSERVATORY.upper(),
        "parkey": ("ROMAN.META.INSTRUMENT.NAME",),
    }
    _write(map_dir / pmap_name, _mapping_text(pmap_header, _dict_text([(INSTRUMENT.upper(), imap_name)])))

    _write(cfg_dir / "server_config", pprint.pformat(_server_config(pmap_name, map_dir)) + "\n")
    _write(cfg_dir / "ref_cache_subdir_mode", "instrument")
    _write(cfg_dir / "bad_files.txt", "")
    _forget_crds_state()  # crds memoises mappings by basename: a rebuilt cache must be re-read
    log.info("Wrote CRDS cache %s with context %s (%d reference types)", root, pmap_name, len(imap_selector))
    return pmap_name


def offline_environment(cache_root: str | os.PathLike[str], context: str) -> dict[str, str]:
    """Environment variables that make crds select references from `cache_root` alone.

    Parameters
    ----------
    cache_root : path-like
        A cache written by :func:`build_local_cache` (or synced by crds).
    context : str
        The pipeline mapping to use, e.g. ``"roman_0001.pmap"``.

    Returns
    -------
    dict of str to str
        ``CRDS_PATH``, ``CRDS_SERVER_URL`` (serverless: no network call is ever made),
        ``CRDS_CONTEXT``, ``CRDS_MODE=local``, ``CRDS_READONLY_CACHE=1`` (crds never writes
        to the cache) and ``CRDS_OBSERVATORY=roman``. The ``*_SINGLE`` and per-area path
        variables must additionally be unset, since they override ``CRDS_PATH``.
    """
    return {
        "CRDS_PATH": str(Path(cache_root).resolve()),
        "CRDS_SERVER_URL": SERVERLESS_URL,
        "CRDS_CONTEXT": context,
        "CRDS_MODE": "local",
        "CRDS_READONLY_CACHE": "1",
        "CRDS_OBSERVATORY": OBSERVATORY,
    }


def best_references(parameters: Mapping[str, object], reftypes: Sequence[str]) -> dict[str, str]:
    """Ask the crds client for the best references of one exposure.

    Parameters
    ----------
    parameters : mapping of str to object
        Flattened CRDS parameters, ``model.get_crds_parameters()`` (keys such as
        ``"roman.meta.instrument.detector"``); values that are not str/int/float/bool
        are dropped by crds.
    reftypes : sequence of str
        Reference types wanted, e.g. ``("dark", "flat")``.

    Returns
    -------
    dict of str to str
        Reftype to the absolute path of the cached file, or ``"N/A"`` where the rules
        say the type does not apply.

    Raises
    ------
    ReferenceFileError
        On any crds failure (lookup error, missing rules or server config, crds calling
        ``sys.exit``) or a selected file missing from the cache; one line naming the
        reftypes, the context and ``CRDS_PATH``, and crds's reason.
    """
    global _last_context
    wanted = [str(name).lower() for name in reftypes]
    if not wanted:
        return {}
    with _lock:
        errors: list[str] = []
        try:
            _follow_environment()
            import crds
            from crds.core import heavy_client

            _check_context()
            with _crds_errors_into(errors), _bounded_network_timeout():
                found = crds.getreferences(dict(parameters), reftypes=wanted, observatory=OBSERVATORY)
                _last_context = str(heavy_client.get_processing_mode(OBSERVATORY)[1])
        except ReferenceFileError:
            raise
        except (Exception, SystemExit) as exc:  # crds raises many types and may sys.exit
            raise ReferenceFileError(_failure(wanted, _describe(exc, errors))) from exc
    result: dict[str, str] = {}
    for reftype in wanted:
        value = str(found.get(reftype, "NOT FOUND: not returned by crds"))
        if "n/a" in value.lower():
            result[reftype] = "N/A"
        elif value.startswith("NOT FOUND"):
            raise ReferenceFileError(_failure([reftype], value))
        elif not os.path.isfile(value):
            raise ReferenceFileError(_failure([reftype], f"selected {os.path.basename(value)} is not in the cache"))
        else:
            result[reftype] = value
    log.debug("CRDS best references (%s): %s", _last_context, result)
    return result


def crds_info() -> tuple[str, str]:
    """Return the crds package version and the context crds uses under the current environment.

    Returns
    -------
    tuple of (str, str)
        For ``meta.ref_file.crds.version`` and ``meta.ref_file.crds.context``; the context
        is the one of the last :func:`best_references` call when the environment has not
        changed since, otherwise it is resolved now (reading the cache's server config).

    Raises
    ------
    ReferenceFileError
        When crds cannot determine a context (no server and no usable cache).
    """
    import crds

    global _last_context
    with _lock:
        if _last_context is None or _env_fingerprint() != _last_env:
            errors: list[str] = []
            try:
                _follow_environment()
                from crds.core import heavy_client

                with _crds_errors_into(errors):
                    _last_context = str(heavy_client.get_processing_mode(OBSERVATORY)[1])
            except (Exception, SystemExit) as exc:
                raise ReferenceFileError(_failure([], _describe(exc, errors))) from exc
        return str(crds.__version__), _last_context


# --------------------------------------------------------------------------- cache writing


def _check_reftype(reftype: str) -> str:
    name = str(reftype).lower()
    if name not in SELECTION_KEYS:
        raise ReferenceFileError(
            f"reftype {reftype!r} is not supported by the local CRDS cache ({', '.join(SELECTION_KEYS)})"
        )
    return name


def _match_value(value: str | None, what: str) -> str:
    if value is None:
        return "N/A"
    text = str(value).strip().upper().rstrip("|")
    if not _VALUE_RE.fullmatch(text):
        raise ReferenceFileError(f"invalid CRDS match value {value!r} for {what}")
    return text


def _useafter(value: str | dt.datetime) -> str:
    try:
        when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ReferenceFileError(f"invalid useafter {value!r}: {exc}") from exc
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _collect_rules(entries: Iterable[CacheEntry]) -> dict[str, dict[tuple[str, ...], dict[str, Path]]]:
    """Group entries as {reftype: {match tuple: {useafter: source path}}}."""
    rules: dict[str, dict[tuple[str, ...], dict[str, Path]]] = {}
    for entry in entries:
        reftype = _check_reftype(entry.reftype)
        source = Path(entry.path)
        if not source.is_file():
            raise ReferenceFileError(f"reference file for {reftype} not found: {source}")
        if not _FILE_RE.fullmatch(source.name):
            raise ReferenceFileError(f"reference file name {source.name!r} is not usable by CRDS")
        key = tuple(_match_value(getattr(entry, _ENTRY_FIELD[k]), k) for k in SELECTION_KEYS[reftype])
        dates = rules.setdefault(reftype, {}).setdefault(key, {})
        date = _useafter(entry.useafter)
        if date in dates and dates[date] != source:
            raise ReferenceFileError(
                f"two {reftype} files for {key} useafter {date}: {dates[date].name}, {source.name}"
            )
        dates[date] = source
    return rules


def _install_references(rules: Mapping[str, Mapping[tuple[str, ...], Mapping[str, Path]]], ref_dir: Path) -> None:
    sources: dict[str, Path] = {}
    for matches in rules.values():
        for dates in matches.values():
            for source in dates.values():
                known = sources.setdefault(source.name, source)
                if known.resolve() != source.resolve():
                    raise ReferenceFileError(f"two different reference files named {source.name}: {known}, {source}")
    for name, source in sources.items():
        target = ref_dir / name
        if target.exists():
            if target.samefile(source):
                continue
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def _rmap_text(name: str, reftype: str, matches: Mapping[tuple[str, ...], Mapping[str, Path]]) -> str:
    header = {
        "classes": ("Match", "UseAfter"),
        "derived_from": _GENERATED_BY,
        "file_ext": ".asdf",
        "filekind": reftype.upper(),
        "filetype": reftype.upper(),
        "instrument": INSTRUMENT.upper(),
        "ld_tpn": f"{INSTRUMENT}_{reftype}_ld.tpn",
        "mapping": "REFERENCE",
        "name": name,
        "observatory": OBSERVATORY.upper(),
        "parkey": (SELECTION_KEYS[reftype], (_USEAFTER_KEY,)),
        "suffix": reftype,
        "text_descr": reftype,
        "tpn": f"{INSTRUMENT}_{reftype}.tpn",
    }
    lines = ["Match({"]
    for key, dates in sorted(matches.items()):
        shown = repr(key[0]) if len(key) == 1 else repr(key)
        lines.append(f"    {shown} : UseAfter({{")
        lines.extend(f"        {date!r} : {source.name!r}," for date, source in sorted(dates.items()))
        lines.append("    }),")
    lines.append("})")
    return _mapping_text(header, "\n".join(lines))


def _dict_text(items: Iterable[tuple[str, str]]) -> str:
    return "\n".join(["{", *(f"    {key!r} : {value!r}," for key, value in items), "}"])


def _mapping_text(header: Mapping[str, object], selector: str) -> str:
    """Render a mapping with the ``sha1sum`` crds verifies (SHA-1 of all other lines)."""
    head = [f"    {key!r} : {value!r}," for key, value in sorted(header.items())]
    text = "\n".join(["header = {", *head, "}", "", f"selector = {selector}", ""])
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    head.append(f"    'sha1sum' : {digest!r},")
    head.sort()
    return "\n".join(["header = {", *head, "}", "", f"selector = {selector}", ""])


def _server_config(pmap_name: str, map_dir: Path) -> dict[str, object]:
    """The ``server_config`` crds loads when not connected (a Python literal)."""
    return {
        "observatory": OBSERVATORY,
        "operational_context": pmap_name,
        "latest_context": pmap_name,
        "edit_context": pmap_name,
        "versions_context": pmap_name,
        "bad_files": "",
        "bad_files_list": [],
        "force_remote_mode": False,
        "mappings": sorted(path.name for path in map_dir.iterdir() if path.suffix in (".pmap", ".imap", ".rmap")),
        "server": SERVERLESS_URL,
        "last_synced": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "crds_version": {"str": "gpucal local cache"},
    }


def _write(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


# --------------------------------------------------------------------------- crds state


def _env_fingerprint() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in _ENV_KEYS)


def _forget_crds_state() -> None:
    global _last_env, _last_context
    with _lock:
        _last_env = None
        _last_context = None


def _follow_environment() -> None:
    """Re-point crds at the current environment if it changed since the last call.

    crds reads ``CRDS_SERVER_URL`` only at import and memoises its config, server info,
    context and loaded mappings per process; all of these are refreshed here.
    """
    global _last_env, _last_context
    fingerprint = _env_fingerprint()
    if fingerprint == _last_env:
        return
    from crds.client import api
    from crds.core import config, utils

    utils.clear_function_caches()
    config.CRDS_REF_SUBDIR_MODE = "None"  # re-read the cache's tag file
    api.set_crds_server(os.environ.get("CRDS_SERVER_URL") or SERVERLESS_URL)
    # crds writes defaults for its config items into os.environ; fingerprint after that.
    config.get_crds_processing_mode()
    _last_env = _env_fingerprint()
    _last_context = None
    log.debug("crds re-pointed: CRDS_PATH=%s CRDS_SERVER_URL=%s", os.environ.get("CRDS_PATH"), api.get_crds_server())


@contextlib.contextmanager
def _bounded_network_timeout() -> Iterator[None]:
    """Cap crds's per-request socket timeout at MAX_NETWORK_TIMEOUT_S for one call."""
    name = "CRDS_CLIENT_TIMEOUT_SECONDS"
    before = os.environ.get(name)
    try:
        current = int(before) if before else MAX_NETWORK_TIMEOUT_S
    except ValueError:
        current = MAX_NETWORK_TIMEOUT_S
    os.environ[name] = str(min(current, MAX_NETWORK_TIMEOUT_S))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class _ErrorCollector(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(level=logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _crds_errors_into(sink: list[str]) -> Iterator[None]:
    """Collect the ERROR/FATAL messages crds logs (logger "CRDS", not propagated).

    crds's own console handler is detached meanwhile (romancal does the same): its
    messages, tracebacks included, would otherwise break the one-line error contract;
    what matters reaches the user through gpucal's error message.
    """
    handler = _ErrorCollector(sink)
    crds_logger = logging.getLogger("CRDS")
    consoles = [h for h in crds_logger.handlers if isinstance(h, logging.StreamHandler)]
    for console in consoles:
        crds_logger.removeHandler(console)
    crds_logger.addHandler(handler)
    # crds also prints some tracebacks itself (traceback.print_exc when it cannot fetch a
    # context's mappings); gpucal's own handlers and progress bar keep the real stderr
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            yield
    finally:
        crds_logger.removeHandler(handler)
        for console in consoles:
            crds_logger.addHandler(console)
        if printed.getvalue().strip():
            log.debug("crds printed: %s", printed.getvalue())


def _check_context() -> None:
    """A pinned ``CRDS_CONTEXT`` that is not in the cache, with no server to fetch it from,
    is named in one line (crds would fail deep inside with a traceback)."""
    from crds.client import api
    from crds.core import config

    context = os.environ.get("CRDS_CONTEXT")
    if not context or not context.endswith(".pmap") or "serverless" not in str(api.get_crds_server()):
        return
    where = Path(config.locate_mapping(context, OBSERVATORY))
    if where.is_file() or not where.parent.is_dir():  # no cache at all: crds says what is missing
        return
    cached = sorted(p.name for p in where.parent.glob("*.pmap"))
    raise ReferenceFileError(
        f"CRDS_CONTEXT={context} is not in the CRDS cache (CRDS_PATH={os.environ.get('CRDS_PATH', '(unset)')}; "
        f"contexts there: {', '.join(cached) or 'none'}) and no CRDS server is configured to fetch it"
    )


def _describe(exc: BaseException, errors: Sequence[str]) -> str:
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 1
        reason = errors[-1] if errors else "no reason logged"
        return f"crds exited (status {code % 256}): {reason}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _failure(reftypes: Sequence[str], reason: str) -> str:
    what = f"reference type(s) {', '.join(reftypes)}" if reftypes else "the context"
    context = _last_context or os.environ.get("CRDS_CONTEXT") or "(latest in cache)"
    return (
        f"CRDS could not select {what} (context {context}, "
        f"CRDS_PATH={os.environ.get('CRDS_PATH', '(unset)')}): {reason}"
    )
