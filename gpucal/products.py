"""Product sets: the products of one input appear in the output folder together or not at all.

Every file gpucal writes goes first into a hidden *set folder* beside its final place,
``<out>/.gpucal-<pid>-<start>-<host>-<random>/``, named after the process that owns it
(process id, its start time in clock ticks since boot, host name).  One input's products
(the cal file, its wcs partner, intermediate products) are all written there under their
final names, and then *committed*:

1. ``MANIFEST`` is written into the set folder (temporary name, fsync, rename): the names
   to install and the *planned names this run did not produce* (the wcs partner of a fully
   saturated exposure, a step that was short-cut), which must not survive beside the new
   set.  Before the manifest exists the set is not committed: the old products are
   untouched and the set folder is garbage.  From then on the set is committed and is only
   ever rolled forward.
2. The old *primary* product (the cal file) is removed.
3. Each partner is renamed into place (``os.replace``, same filesystem, atomic), and each
   planned name that was not produced is removed.
4. The primary is renamed into place, **last**.
5. The set folder is removed.

Invariant: whenever the primary file exists in the output folder, every other product of
its set there is from the same commit (step 2 removes the old primary before any partner
changes; step 4 brings the new one only after all partners are in place).  A reader or a
resume that keys on the primary (the cal file) is never confused; a partner without its
primary is the trace of an interrupted commit and is replaced by the next commit.

Commits and recovery in one folder take an exclusive ``flock`` on the folder, so they are
serialised among processes.  Before each commit, and once when a run starts writing into a
folder, set folders of **dead** owners (same host; the process id is gone or was started at
another time) are recovered: a committed set (with ``MANIFEST``) is rolled forward (each
step is idempotent; a name already moved is skipped), anything else is deleted.  Set
folders of live processes, of other hosts, and hidden names gpucal did not make are left
alone.  Because a dead committed set is rolled forward before any later commit in that
folder, an older set can never be completed over a newer one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpucal.errors import GpucalError

__all__ = [
    "TEMP_PREFIX",
    "ProductSet",
    "owned_tempdir",
    "recover_folder",
    "folder_lock",
    "owner_tag",
    "is_owner_alive",
]

log = logging.getLogger(__name__)

TEMP_PREFIX = ".gpucal-"
MANIFEST = "MANIFEST"
_TAG_RE = re.compile(r"^\.gpucal-(?P<pid>\d+)-(?P<start>\d+)-(?P<host>[A-Za-z0-9_.]+)-[A-Za-z0-9_]+$")


# ----------------------------------------------------------------------------- owners
def _process_start(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or 0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return 0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def owner_tag() -> str:
    """``<pid>-<start>-<host>`` of this process (the middle of its set folders' names)."""
    pid = os.getpid()
    return f"{pid}-{_process_start(pid)}-{_host()}"


def is_owner_alive(name: str) -> bool | None:
    """Whether the process that made set folder ``name`` still runs.

    Returns None where that cannot be known (another host, or not one of gpucal's names).
    """
    match = _TAG_RE.match(name)
    if match is None or match.group("host") != _host():
        return None
    pid, start = int(match.group("pid")), int(match.group("start"))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    current = _process_start(pid)
    # the same pid started at another time is another process (pid reuse)
    return not (start and current and current != start)


def owned_tempdir(parent: Path) -> Path:
    """A new hidden folder in ``parent`` named after this process (see the module doc)."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{owner_tag()}-", dir=parent))


# ----------------------------------------------------------------------------- locking
@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` itself (no lock file left behind).

    Where the filesystem does not support it the block runs unlocked (logged at DEBUG).
    """
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        log.debug("cannot open %s to lock it: %s", folder, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.debug("flock unsupported on %s: %s", folder, exc)
        yield
    finally:
        os.close(fd)  # releases the lock


# ------------------------------------------------------------------------------ commit
def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_manifest(setdir: Path, install: list[str], remove: list[str], primary: str) -> None:
    tmp = setdir / (MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"primary": primary, "install": install, "remove": remove}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, setdir / MANIFEST)
    _fsync_dir(setdir)


def _roll_forward(setdir: Path) -> None:
    """Steps 2-5 of a commit whose manifest exists; idempotent (see the module doc)."""
    folder = setdir.parent
    manifest = json.loads((setdir / MANIFEST).read_text())
    primary = str(manifest["primary"])
    if (setdir / primary).exists():  # the primary not yet installed: steps 2-4
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / primary)
        for name in manifest["remove"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)
        for name in manifest["install"]:
            if name != primary and (setdir / name).exists():
                os.replace(setdir / name, folder / name)
        os.replace(setdir / primary, folder / primary)
        _fsync_dir(folder)
    shutil.rmtree(setdir, ignore_errors=True)


def recover_folder(folder: Path) -> list[str]:
    """Recover the set folders of dead gpucal processes in ``folder`` (lock held by the caller).

    Returns the names of the folders dealt with (for the log).
    """
    done: list[str] = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return done
    for name in names:
        path = folder / name
        if not path.is_dir() or path.is_symlink() or is_owner_alive(name) is not False:
            continue
        if (path / MANIFEST).is_file():
            try:
                _roll_forward(path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("could not complete the interrupted commit in %s: %s", path, exc)
                continue
            log.warning("completed the interrupted commit of a dead run (%s)", path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed the temporary folder of a dead run: %s", path)
        done.append(name)
    return done


class ProductSet:
    """The products of one input, staged in set folders and committed together.

    Parameters
    ----------
    planned : list of Path, optional
        Every name this input's run may write (from :func:`gpucal.preflight.plan_outputs`).
        Planned names not produced are removed at commit, so no older product survives
        beside the new set.
    protected : list of Path, optional
        Inputs and references: a product is never installed over one of them.
    """

    def __init__(self, planned: list[Path] | None = None, protected: list[Path] | None = None) -> None:
        self.planned = [Path(p) for p in planned or []]
        self.protected = [Path(p) for p in protected or []]
        self._sets: dict[Path, Path] = {}  # output folder -> its set folder
        self._staged: dict[Path, Path] = {}  # final path -> staged file
        self.primary: Path | None = None
        self.committed: list[Path] = []

    def staged_path(self, final: Path) -> Path:
        """Where the product ``final`` is written before the commit."""
        final = Path(final)
        folder = final.parent
        if final in self._staged:
            raise GpucalError(f"two products of one run would both be {final}")
        setdir = self._sets.get(folder)
        if setdir is None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                setdir = owned_tempdir(folder)
            except OSError as exc:
                raise GpucalError(f"cannot write into {folder}: {exc.strerror or exc}") from None
            self._sets[folder] = setdir
        staged = setdir / final.name
        self._staged[final] = staged
        return staged

    def stage(self, model: Any, final: Path, primary: bool = False) -> Path:
        """Write ``model`` for ``final`` into the set folder (through ``gpucal.io``)."""
        from gpucal import io as gio

        final = Path(final)
        staged = self.staged_path(final)
        gio.save_model(model, staged)
        if primary:
            self.primary = final
        return final

    def commit(self) -> list[Path]:
        """Install every staged product (see the module doc); return the final paths."""
        if not self._staged:
            self.abandon()
            return []
        self._refuse_protected()
        primary = self.primary or list(self._staged)[-1]
        planned_by_folder: dict[Path, set[str]] = {}
        for path in self.planned:
            planned_by_folder.setdefault(path.parent, set()).add(path.name)
        # folders other than the primary's first: they are each a set of their own
        folders = sorted(self._sets, key=lambda f: f == primary.parent)
        for folder in folders:
            setdir = self._sets[folder]
            names = [p.name for p in self._staged if p.parent == folder]
            lead = primary.name if folder == primary.parent else names[-1]
            # stale partners go only when a new primary comes: a commit of intermediates
            # alone (the main product not saved) leaves the previous set as it is
            absent = sorted(planned_by_folder.get(folder, set()) - set(names)) if self.primary else []
            with folder_lock(folder):
                recover_folder(folder)
                try:
                    _write_manifest(setdir, names, absent, lead)
                except OSError as exc:
                    raise GpucalError(f"cannot write into {folder}: {exc.strerror or exc}") from None
                try:
                    _roll_forward(setdir)
                except BaseException:
                    # a signal between two renames: finish them (quick), then go on failing
                    _roll_forward(setdir)
                    raise
            del self._sets[folder]
            self.committed += [folder / n for n in names]
            for name in names:
                log.info("Saved model in %s", folder / name)
        self._staged.clear()
        return self.committed

    def abandon(self) -> None:
        """Drop every staged product (nothing of this set reaches the output folder)."""
        for setdir in self._sets.values():
            shutil.rmtree(setdir, ignore_errors=True)
        self._sets.clear()
        self._staged.clear()

    def _refuse_protected(self) -> None:
        for final in self._staged:
            for other in self.protected:
                if _same_file(final, other):
                    self.abandon()
                    raise GpucalError(f"refusing to write {final}: it is the input or reference file {other}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError as exc:
        return exc.errno == errno.ELOOP
