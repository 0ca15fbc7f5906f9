"""The device backend: the backend protocol on a device runtime (CUDA, or emulated in CI).

Residency.  The pipeline's model carries the backend's arrays from step to step.  On this
backend they are device arrays: the raw ramp goes up once as uint16 (dq_init converts it
there), every later step reads and writes device arrays, and :meth:`DeviceBackend.to_host`
brings the products down once, at the end of the top-level step.  Host arrays given to a
method (a step run on its own from a file) are uploaded, labelled ``input:<name>``.

References.  Arrays read from reference files carry their file's identity
(:func:`gpucal.refs.reference_key`); their device copies stay in a
:class:`ReferenceCache` (least recently used first out) across the exposures of one
process, bounded by a share of the device memory.

Memory.  Before the chain starts, dq_init compares the exposure's working set with the
memory the device has free.  If it does not fit, the exposure runs *streamed*: every
per-pixel step runs over blocks of rows (with a halo of rows where a step looks at
neighbours: saturation growth, jump neighbours), each block uploaded, processed and
downloaded, and the results are identical to a resident run.  refpix (whose FFTs run along
whole amplifier channels, all rows) and the WFI18 transient fit (a fit across rows) run
on the host in that mode.

Every copy goes through the runtime (:class:`gpucal.backends.runtime.TransferLog`), and
each method's device time is accounted under its name (:meth:`device_times`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from gpucal.backends.device import launch
from gpucal.backends.protocol import (
    DQInitResult,
    FlatResult,
    InlTable,
    JumpParams,
    LinearityResult,
    RampFitParams,
    RampFitResult,
    RefpixResult,
    SaturationResult,
)
from gpucal.backends.runtime import DeviceRuntime
from gpucal.errors import GpucalError
from gpucal.readpattern import ReadTiming
from gpucal.refs import reference_key

__all__ = ["DeviceBackend", "ReferenceCache", "DeviceMemoryError", "chain_bytes_per_pixel"]

log = logging.getLogger(__name__)

#: Share of the available device memory an exposure's working set may take.
MEMORY_FRACTION = 0.8
#: Share of the device's total memory the reference cache may hold.
CACHE_FRACTION = 0.5


class DeviceMemoryError(GpucalError):
    """The device ran out of memory (one line for the user, exit status 1)."""


def chain_bytes_per_pixel(nres: int, ncoeff: int = 8) -> int:
    """Device bytes per pixel of a resident exposure: ramp, flags, references, products.

    raw uint16 (2K) while dq_init converts it; float32 data (4K), groupdq (K); a second
    groupdq during saturation growth (K); pixeldq (4); references: saturation (8),
    linearity and inverse-linearity coefficients (2 * 4 * ncoeff), gain and read noise (8),
    mask (4), dark (8), flat (12); ramp-fit products (7 * 4); jump marks (4); the gls
    saturation headroom and level (8); slack for the element-wise temporaries of the image
    steps (16).
    """
    return 2 * nres + 4 * nres + 2 * nres + 4 + 8 + 8 * ncoeff + 8 + 4 + 8 + 12 + 28 + 4 + 8 + 16


class ReferenceCache:
    """Device copies of reference arrays, keyed by file identity, least recently used out.

    Parameters
    ----------
    runtime : DeviceRuntime
        Where the copies live.
    limit : int
        Bytes the cache may hold; an array larger than that is uploaded but not kept.
    """

    def __init__(self, runtime: DeviceRuntime, limit: int) -> None:
        self.rt = runtime
        self.limit = int(limit)
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, host: np.ndarray, label: str) -> Any:
        """The device copy of reference array ``host`` (uploaded on first use)."""
        key = reference_key(host)
        with self._lock:
            if key is not None and key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            dev = self.rt.upload(host, f"reference:{label}")
            if key is not None and dev.nbytes <= self.limit:
                self._evict_to(self.limit - int(dev.nbytes))
                self._entries[key] = dev
            return dev

    def make_room(self, nbytes: int) -> None:
        """Drop least recently used copies until the cache holds at most ``nbytes``."""
        with self._lock:
            self._evict_to(nbytes)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _evict_to(self, nbytes: int) -> None:
        while self._entries and self.nbytes > max(0, nbytes):
            key, _ = self._entries.popitem(last=False)
            log.debug("reference cache: evicted %s", key[0])


def _device_op(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a backend method on the runtime's stream, time it, and turn OOM into one line."""

    @functools.wraps(method)
    def wrapper(self: DeviceBackend, *args: Any, **kwargs: Any) -> Any:
        name = method.__name__
        try:
            with self.rt.active(), self.rt.timed(name):
                result = method(self, *args, **kwargs)
            # device memory the step read and wrote (inputs on the device + results), for
            # its effective bandwidth against the device's copy bandwidth (bench)
            moved = self._device_nbytes(args) + self._device_nbytes(kwargs.values()) + self._device_nbytes((result,))
            self.step_bytes[name] = self.step_bytes.get(name, 0) + moved
            return result
        except Exception as exc:
            self._raise_if_out_of_memory(exc, name)
            raise

    return wrapper


class DeviceBackend:
    """The backend protocol (:class:`gpucal.backends.protocol.Backend`) on a device runtime.

    Parameters
    ----------
    runtime : DeviceRuntime
        The device: :class:`~gpucal.backends.cupy_backend.CupyRuntime` or
        :class:`~gpucal.backends.emulated.EmulatedRuntime`.
    name : str
        The backend's name, recorded in the output metadata (``gpu``).
    """

    def __init__(
        self, runtime: DeviceRuntime, *, name: str = "gpu") -> None:
        self.rt = runtime
        self.xp = runtime.xp
        self.name = name
        self.device_name = runtime.device_name
        self.cache = ReferenceCache(runtime, int(CACHE_FRACTION * runtime.total_memory()))
        self.streamed = False
        self._chain_row_bytes = 0
        self.step_bytes: dict[str, int] = {}

    # ------------------------------------------------------------------ arrays
    def _dev(self, array: Any, label: str, dtype: Any = None) -> Any:
        """``array`` on the device: device arrays pass through, host arrays are uploaded."""
        if array is None:
            return None
        if self.rt.is_device_array(array):
            return array if dtype is None or array.dtype == np.dtype(dtype) else array.astype(dtype)
        return self.rt.upload(np.asarray(array), f"input:{label}", dtype)

    def _amp33(self, amp33: Any) -> Any:
        """amp33 stays on the host until refpix: it goes up with the ramp's label."""
        if self.rt.is_device_array(amp33):
            return amp33
        return self.rt.upload(np.asarray(amp33), "ramp:amp33", np.uint16)

    def _ref(self, array: Any, label: str) -> Any:
        """A reference array on the device, from the cache when its file was seen before."""
        if array is None or self.rt.is_device_array(array):
            return array
        return self.cache.get(np.ascontiguousarray(array), label)

    def _resident(self, *arrays: Any, factor: float = 2.0) -> bool:
        """Whether a call runs whole-frame on the device (else in row blocks on host data).

        Device inputs stay where they are; host inputs of a streamed exposure go in row
        blocks; other host inputs (a step run on its own) go up whole if they fit.
        """
        if any(self.rt.is_device_array(a) for a in arrays if a is not None):
            return True
        if self.streamed:
            return False
        need = factor * sum(int(np.asarray(a).nbytes) for a in arrays if a is not None)
        return need <= self._available()

    def _available(self) -> int:
        """Bytes an exposure may use: free memory (plus the evictable cache on a real device)."""
        free = self.rt.free_memory()
        if self.rt.kind == "cuda":
            free += self.cache.nbytes
        # the driver reserves local memory (per-thread stacks, e.g. likely's ~3 KB) for every
        # thread the device can hold when a kernel with a stack launches; it is not in the pool
        free -= self.rt.local_memory_reserve()
        return max(0, int(MEMORY_FRACTION * free))

    def to_host(self, model: Any) -> Any:
        """Download every device array of ``model`` (in place), labelled ``product:<name>``."""
        node = getattr(model, "_instance", model)
        for key in list(node.keys()):
            value = node[key]
            if self.rt.is_device_array(value):
                node[key] = self.rt.download(value, f"product:{key}")
        return model

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The runtime's stream made current: every array operation of a step (model
        assembly, counts, checks) is then ordered with the kernels, whatever CuPy's default
        stream is (the legacy null stream, or per-thread default streams).  Running out of
        device memory inside becomes one :class:`DeviceMemoryError` line."""
        try:
            with self.rt.active():
                yield
        except Exception as exc:
            self._raise_if_out_of_memory(exc, "a step")
            raise

    def _raise_if_out_of_memory(self, exc: BaseException, where: str) -> None:
        """Turn the runtime's out-of-memory errors (allocation, kernel launch, pinned host
        buffer, FFT plan) into one line for the user; anything else is left alone."""
        if isinstance(exc, DeviceMemoryError) or not self.rt.is_out_of_memory(exc):
            return
        self.cache.clear()
        message = " ".join(str(exc).split())
        raise DeviceMemoryError(
            f"{self.device_name}: out of device memory in {where} "
            f"({self.rt.free_memory() / 2**30:.1f} GiB free): {type(exc).__name__}: {message}"
        ) from None

    def count_set(self, array: Any, flag: int) -> int:
        """Number of elements of the DQ ``array`` with any bit of ``flag`` set.

        Counted on the device; the count comes back as one explicit 8-byte download
        (``scalar:count_set``), which makes the host wait for the work queued so far.
        """
        if not self.rt.is_device_array(array):
            return int(np.count_nonzero(np.asarray(array) & np.asarray(array).dtype.type(flag)))
        with self.rt.active():
            count = self.xp.count_nonzero(array & array.dtype.type(flag))
            return int(self.rt.download(self.xp.asarray(count, dtype=np.int64), "scalar:count_set"))

    def all_set(self, array: Any, flag: int) -> bool:
        """Whether every element of the DQ ``array`` has a bit of ``flag`` set (one 1-byte download)."""
        if not self.rt.is_device_array(array):
            return bool(((np.asarray(array) & np.asarray(array).dtype.type(flag)) != 0).all())
        with self.rt.active():
            answer = ((array & array.dtype.type(flag)) != 0).all()
            return bool(self.rt.download(answer, "scalar:all_set"))

    @contextlib.contextmanager
    def on_host(self, model: Any) -> Iterator[Any]:
        """Host copies of ``model``'s device arrays for the duration (a mid-pipeline save)."""
        node = getattr(model, "_instance", model)
        saved = {k: node[k] for k in list(node.keys()) if self.rt.is_device_array(node[k])}
        try:
            for key, value in saved.items():
                node[key] = self.rt.download(value, f"product:{key}")
            yield model
        finally:
            for key, value in saved.items():
                node[key] = value

    def device_times(self) -> dict[str, float]:
        """Milliseconds of device time per backend method since the last reset."""
        return self.rt.device_times()

    def device_bytes(self) -> dict[str, int]:
        """Bytes of device arrays each backend method took in and gave back, since the last reset.

        Distinct arrays are counted once per call (an in-place output is the input), so
        this is a lower bound of the memory traffic; bytes / device time is the step's
        effective bandwidth.
        """
        return dict(self.step_bytes)

    def reset_device_times(self) -> None:
        self.rt.reset_times()
        self.step_bytes.clear()

    def _device_nbytes(self, values: Any) -> int:
        seen: dict[int, int] = {}

        def visit(v: Any) -> None:
            if self.rt.is_device_array(v):
                base = v.base if v.base is not None and self.rt.is_device_array(v.base) else v
                seen[id(base)] = max(seen.get(id(base), 0), int(v.nbytes))
            elif isinstance(v, tuple | list):
                for item in v:
                    visit(item)

        for v in values:
            visit(v)
        return sum(seen.values())

    # ------------------------------------------------------------- row blocks
    def _blocked(
        self,
        label: str,
        run: Callable[[list[Any], int], Sequence[Any]],
        arrays: Sequence[np.ndarray | None],
        halo: int = 0,
    ) -> list[np.ndarray | None]:
        """Run ``run(device_blocks, row0)`` over blocks of rows of host ``arrays``.

        Every array has rows on its second-to-last axis.  Each block is uploaded with
        ``halo`` extra rows on both sides (for steps that look at neighbours); only its
        own rows of each output come back.  Returns the host outputs, full frame.
        """
        present = [a for a in arrays if a is not None]
        ny = present[0].shape[-2]
        # blocks sized for the whole chain's working set, so every step cuts the same rows
        per_row = max(3 * sum(a.nbytes // a.shape[-2] for a in present), self._chain_row_bytes)
        rows = max(1, self._available() // max(1, per_row) - 2 * halo)
        rows = min(rows, ny)
        nblocks = -(-ny // rows)
        log.info(
            "%s: %d rows in %d blocks of %d (streamed; device memory too small for the frame)", label, ny, nblocks, rows
        )
        outputs: list[np.ndarray | None] | None = None
        for r0 in range(0, ny, rows):
            r1 = min(ny, r0 + rows)
            lo, hi = max(0, r0 - halo), min(ny, r1 + halo)
            blocks = [None if a is None else self.rt.upload(a[..., lo:hi, :], f"block:{label}") for a in arrays]
            result = list(run(blocks, lo))
            if outputs is None:
                outputs = [None if r is None else np.empty((*r.shape[:-2], ny, r.shape[-1]), r.dtype) for r in result]
            for out, r in zip(outputs, result, strict=True):
                if out is not None:
                    out[..., r0:r1, :] = self.rt.download(r[..., r0 - lo : r1 - lo, :], f"block:{label}")
        assert outputs is not None
        return outputs

    # ----------------------------------------------------------------- steps
    @_device_op
    def dq_init(
        self,
        data: np.ndarray,
        reference_read: np.ndarray | None,
        encoding_offset: int,
        mask_dq: np.ndarray | None,
        guide_window: tuple[int, int, int, int] | None,
        expand_gw_flagging: int,
    ) -> DQInitResult:
        nres, ny, nx = data.shape
        ranges = launch.guide_window_ranges((ny, nx), guide_window, int(expand_gw_flagging))
        mask = mask_dq if mask_dq is not None and mask_dq.shape == (ny, nx) else None
        need = chain_bytes_per_pixel(nres) * ny * nx
        free = self._available()
        self.streamed = not self.rt.is_device_array(data) and need > free
        self._chain_row_bytes = chain_bytes_per_pixel(nres) * nx if self.streamed else 0
        if self.streamed:
            log.warning(
                "Exposure needs ~%.1f GiB of device memory, %.1f GiB available: streaming it in row blocks",
                need / 2**30,
                free / 2**30,
            )
            self.cache.clear()
            data_h, pdq_h = self._blocked(
                "dq_init",
                lambda b, row0: launch.dq_init(self.rt, b[0], b[1], encoding_offset, b[2], ranges, row0=row0),
                [np.asarray(data), reference_read, mask],
            )
            assert data_h is not None and pdq_h is not None
            return DQInitResult(data_h, pdq_h)
        self.cache.make_room(max(0, free - need))
        if self.rt.is_device_array(data):
            raw = data.astype(np.uint16, copy=False)
        else:
            raw = self.rt.upload(np.asarray(data), "ramp", np.uint16)
        ref_read = None if reference_read is None else self.rt.upload(reference_read, "ramp:reference_read", np.uint16)
        return launch.dq_init(self.rt, raw, ref_read, encoding_offset, self._ref(mask, "mask"), ranges)

    @_device_op
    def saturation(
        self,
        data: Any,
        groupdq: Any,
        pixeldq: Any,
        threshold: np.ndarray,
        threshold_dq: np.ndarray,
        timing: ReadTiming,
        n_pix_grow_sat: int,
        backup: int,
    ) -> SaturationResult:
        def run(b: list[Any], row0: int = 0) -> SaturationResult:
            return launch.saturation(self.rt, b[0], b[1], b[2], b[3], b[4], timing, n_pix_grow_sat, backup)

        if self._resident(data, groupdq):
            # the ramp's own flags (resultantdq of the uncal file) go up with the ramp
            gdq = groupdq if self.rt.is_device_array(groupdq) else self.rt.upload(groupdq, "ramp:groupdq", np.uint8)
            return run(
                [
                    self._dev(data, "data"),
                    gdq,
                    self._dev(pixeldq, "pixeldq"),
                    self._ref(threshold, "saturation"),
                    self._ref(threshold_dq, "saturation_dq"),
                ]
            )
        g, p = self._blocked(
            "saturation",
            run,
            [data, groupdq, pixeldq, threshold, threshold_dq],
            halo=max(0, int(n_pix_grow_sat)),
        )
        assert g is not None and p is not None
        return SaturationResult(g, p)

    @_device_op
    def saturation_headroom(
        self, data: Any, groupdq: Any, pixeldq: Any, threshold: np.ndarray, threshold_dq: np.ndarray
    ) -> Any:
        def run(b: list[Any], row0: int = 0) -> tuple[Any]:
            return (launch.saturation_headroom(self.rt, b[0], b[1], b[2], b[3], b[4]),)

        if self._resident(data, groupdq):
            return run(
                [
                    self._dev(data, "data"),
                    self._dev(groupdq, "groupdq"),
                    self._dev(pixeldq, "pixeldq"),
                    self._ref(threshold, "saturation"),
                    self._ref(threshold_dq, "saturation_dq"),
                ]
            )[0]
        (out,) = self._blocked("saturation_headroom", run, [data, groupdq, pixeldq, threshold, threshold_dq])
        return out

    @_device_op
    def refpix(
        self, data: Any, amp33: np.ndarray, pixeldq: Any, gamma: np.ndarray, zeta: np.ndarray, alpha: np.ndarray
    ) -> RefpixResult:
        from gpucal.backends.device import refpix as device_refpix

        if self._resident(data):
            return device_refpix.refpix(
                self.rt,
                self._dev(data, "data"),
                self._amp33(amp33),
                self._dev(pixeldq, "pixeldq"),
                self._ref(gamma, "refpix_gamma"),
                self._ref(zeta, "refpix_zeta"),
                self._ref(alpha, "refpix_alpha"),
            )
        # streamed: refpix needs whole channels (all rows); on the device if the ramp, the
        # coefficients and one resultant's work arrays fit, else on the host
        nres, ny, nx = data.shape
        need = (2 * data.nbytes + 3 * np.asarray(amp33).nbytes + pixeldq.nbytes + 3 * gamma.nbytes
                + device_refpix.bytes_per_resultant(ny, nx))
        if need <= self._available():
            def up(a: Any, dtype: Any = None) -> Any:
                return self.rt.upload(np.asarray(a), "block:refpix", dtype)

            out = device_refpix.refpix(self.rt, up(data), up(amp33, np.uint16), up(pixeldq), up(gamma), up(zeta),
                                       up(alpha))
            return RefpixResult(self.rt.download(out.data, "block:refpix"),
                                self.rt.download(out.amp33, "block:refpix"))
        from cpu_fallback.refpix import refpix as host_refpix

        log.info("refpix: device memory too small for whole channels; corrected on the host")
        return host_refpix(data, amp33, pixeldq, gamma, zeta, alpha)

    @_device_op
    def dark_decay(self, data: Any, timing: ReadTiming, amplitude: float, time_constant: float, sca: int) -> Any:
        nres, ny, nx = data.shape
        if self._resident(data):
            return launch.dark_decay(self.rt, self._dev(data, "data"), timing, amplitude, time_constant, sca)
        (out,) = self._blocked(
            "dark_decay",
            lambda b, row0: (
                launch.dark_decay(self.rt, b[0], timing, amplitude, time_constant, sca, row0=row0, frame_ny=ny),
            ),
            [data],
        )
        return out

    @_device_op
    def wfi18_transient(self, data: Any, groupdq: Any, timing: ReadTiming, mask_rows: bool) -> tuple[Any, Any, bool]:
        if self._resident(data, groupdq):
            from gpucal.backends.device import wfi18

            return wfi18.wfi18_transient(
                self.rt, self._dev(data, "data"), self._dev(groupdq, "groupdq"), timing, mask_rows
            )
        from cpu_fallback.wfi18 import wfi18_transient as host_wfi18

        log.info("wfi18_transient: streamed exposure, fitted on the host")
        return host_wfi18(data, groupdq, timing, mask_rows)

    @_device_op
    def linearity(
        self,
        data: Any,
        groupdq: Any,
        pixeldq: Any,
        lin_coeffs: np.ndarray,
        ilin_coeffs: np.ndarray | None,
        lin_dq: np.ndarray,
        inl: InlTable | None,
        timing: ReadTiming,
    ) -> LinearityResult:
        def run(b: list[Any], row0: int = 0) -> LinearityResult:
            return launch.linearity(self.rt, b[0], b[1], b[2], b[3], b[4], b[5], inl, timing)

        if self._resident(data, groupdq):
            return run(
                [
                    self._dev(data, "data"),
                    self._dev(groupdq, "groupdq"),
                    self._dev(pixeldq, "pixeldq"),
                    self._ref(lin_coeffs, "linearity"),
                    self._ref(ilin_coeffs, "inverselinearity"),
                    self._ref(lin_dq, "linearity_dq"),
                ]
            )
        d, g, p = self._blocked("linearity", run, [data, groupdq, pixeldq, lin_coeffs, ilin_coeffs, lin_dq])
        assert d is not None and g is not None and p is not None
        return LinearityResult(d, g, p)

    @_device_op
    def linearity_threshold(
        self, data: Any, groupdq: Any, headroom: Any, lin_coeffs: np.ndarray | None, lin_dq: np.ndarray | None
    ) -> Any:
        def run(b: list[Any], row0: int = 0) -> tuple[Any]:
            return (launch.linearity_threshold(self.rt, b[0], b[1], b[2], b[3], b[4]),)

        if self._resident(data, groupdq, headroom):
            return run(
                [
                    self._dev(data, "data"),
                    self._dev(groupdq, "groupdq"),
                    self._dev(headroom, "headroom"),
                    self._ref(lin_coeffs, "linearity"),
                    self._ref(lin_dq, "linearity_dq"),
                ]
            )[0]
        (out,) = self._blocked("linearity_threshold", run, [data, groupdq, headroom, lin_coeffs, lin_dq])
        return out

    @_device_op
    def jump(
        self, data: Any, groupdq: Any, readnoise: np.ndarray, gain: np.ndarray, timing: ReadTiming, params: JumpParams
    ) -> Any:
        def run(b: list[Any], row0: int = 0, mode: int | None = None) -> tuple[Any]:
            return (launch.jump(self.rt, b[0], b[1], b[2], b[3], timing, params, mode=mode),)

        if self._resident(data, groupdq):
            return run(
                [
                    self._dev(data, "data"),
                    self._dev(groupdq, "groupdq"),
                    self._ref(readnoise, "readnoise"),
                    self._ref(gain, "gain"),
                ]
            )[0]
        # the search mode is decided over the whole frame, not per block
        mode = launch.frame_search_mode(np.asarray(groupdq))
        (g,) = self._blocked(
            "jump",
            lambda b, row0: run(b, row0, mode),
            [data, groupdq, readnoise, gain],
            halo=1 if params.flag_4_neighbors else 0,
        )
        return g

    @_device_op
    def ramp_fit(
        self,
        data: Any,
        groupdq: Any,
        pixeldq: Any,
        readnoise: np.ndarray,
        gain: np.ndarray,
        timing: ReadTiming,
        algorithm: str,
        params: RampFitParams,
        saturation_level: Any = None,
    ) -> RampFitResult:
        with_level = saturation_level is not None

        def run(b: list[Any], row0: int = 0) -> RampFitResult:
            level = b[5] if with_level else None
            return launch.ramp_fit(self.rt, b[0], b[1], b[2], b[3], b[4], timing, algorithm, params, level)

        if self._resident(data, groupdq):
            arrays = [
                self._dev(data, "data"),
                self._dev(groupdq, "groupdq"),
                self._dev(pixeldq, "pixeldq"),
                self._ref(readnoise, "readnoise"),
                self._ref(gain, "gain"),
            ]
            if with_level:
                arrays.append(self._dev(saturation_level, "saturation_level"))
            return run(arrays)
        blocks = [data, groupdq, pixeldq, readnoise, gain] + ([saturation_level] if with_level else [])
        return RampFitResult._make(self._blocked("ramp_fit", run, blocks))

    @_device_op
    def uniform_slope(self, data: Any, timing: ReadTiming) -> Any:
        if self._resident(data):
            return launch.uniform_slope(self.rt, self._dev(data, "data"), timing)
        (out,) = self._blocked("uniform_slope", lambda b, row0: (launch.uniform_slope(self.rt, b[0], timing),), [data])
        return out

    @_device_op
    def dark_current(self, slope: Any, dq: Any, dark_slope: np.ndarray, dark_dq: np.ndarray) -> tuple[Any, Any]:
        from gpucal.backends.device import image

        if self._resident(slope, dq):
            return image.dark_current(
                self.rt,
                self._dev(slope, "data"),
                self._dev(dq, "dq"),
                self._ref(dark_slope, "dark"),
                self._ref(dark_dq, "dark_dq"),
            )
        from cpu_fallback.image import _science_area

        dark = _science_area(dark_slope, slope.shape, "dark_slope")
        ddq = _science_area(dark_dq, dq.shape, "dark dq")
        s, q = self._blocked("dark_current", lambda b, r: image.dark_current(self.rt, *b), [slope, dq, dark, ddq])
        return s, q

    @_device_op
    def flatfield(
        self,
        data: Any,
        err: Any,
        var_poisson: Any,
        var_rnoise: Any,
        dumo: Any,
        dq: Any,
        flat: np.ndarray,
        flat_err: np.ndarray,
        flat_dq: np.ndarray,
        include_var_flat: bool,
    ) -> FlatResult:
        from gpucal.backends.device import image

        def run(b: list[Any], row0: int = 0) -> FlatResult:
            return image.flatfield(self.rt, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], include_var_flat)

        if self._resident(data, dq):
            return run(
                [
                    self._dev(data, "data"),
                    self._dev(err, "err"),
                    self._dev(var_poisson, "var_poisson"),
                    self._dev(var_rnoise, "var_rnoise"),
                    self._dev(dumo, "dumo"),
                    self._dev(dq, "dq"),
                    self._ref(flat, "flat"),
                    self._ref(flat_err, "flat_err"),
                    self._ref(flat_dq, "flat_dq"),
                ]
            )
        return FlatResult._make(
            self._blocked("flatfield", run, [data, err, var_poisson, var_rnoise, dumo, dq, flat, flat_err, flat_dq])
        )
