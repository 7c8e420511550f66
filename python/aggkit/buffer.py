"""Client updates collected one at a time, kept in memory or spilled to disk, aggregated once.

A server receives its clients' updates one by one. :class:`UpdateBuffer` holds them in one
preallocated ``(n_max, d)`` block, either in memory or in a memory-mapped file under
``spill_dir``, so that a round of ``n x d`` values larger than memory can still be aggregated:
the rules read the block in place (the Rust core takes the mapping as it takes any array), the
operating system pages it in and out, and the result is bit-identical to the in-memory call
on the stored rows. Coordinate-wise rules walk the coordinates in tiles of all rows, so they
read every page once and need ``O(n x tile + d)`` memory of their own; Krum, Multi-Krum,
Bulyan and the other rules on pairwise distances read the block once per pass over their
distance matrix (once for ``n <= 128``) and hold the ``n x n`` distances. Pipelines with a
pre-aggregator (``"nnm>trimmed_mean"``, ``"clipping>mean"``, ...) build the transformed inputs
in memory: ``m x d`` values (Perturb more), so they do not bound memory.

>>> import numpy as np, aggkit
>>> with aggkit.UpdateBuffer((3,), np.float32, n_max=4) as buf:
...     for update in ([1, 2, 3], [2, 3, 4], [100, -100, 5]):
...         _ = buf.append(np.asarray(update, np.float32))
...     buf.aggregate("median")
array([2., 2., 4.], dtype=float32)
"""

from __future__ import annotations

import contextlib
import errno
import math
import mmap
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from aggkit import _params
from aggkit._numpy._input import as_array, compute_dtype, half_format
from aggkit.errors import InvalidParameterError, ShapeError, empty_input_error
from aggkit.registry import Rounds, Rule, Selection
from aggkit.registry import rule as make_rule

#: The updates and the aggregates: float32 or float64 arrays.
Floats = npt.NDArray[np.floating[Any]]

__all__ = ["MAX_UPDATES", "UpdateBuffer"]

#: The most updates one buffer holds: the core's limit on rows.
MAX_UPDATES = 2**32 - 1

_WHO = "UpdateBuffer"


def _shape(shape: Any) -> tuple[int, ...]:
    """The shape of one update: an int or a sequence of ints, each ``>= 0``."""
    dims = (shape,) if not isinstance(shape, Sequence) or isinstance(shape, str | bytes) else shape
    return tuple(_params.count(s, "shape", _WHO) for s in dims)


def _dtype(dtype: Any) -> np.dtype[Any]:
    what = "float16, bfloat16 (ml_dtypes), float32 or float64"
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError as e:
        hint = " (bfloat16 needs ml_dtypes: pass ml_dtypes.bfloat16)" if dtype == "bfloat16" else ""
        raise TypeError(f"{_WHO}: dtype must be {what}, got {dtype!r}{hint}") from e
    if dt not in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
        if half_format(dt) != "bfloat16" or dt.byteorder == ">":
            raise TypeError(f"{_WHO}: dtype must be {what} in native byte order, got {dt}")
    return dt


class UpdateBuffer:
    """``n_max`` client updates of one ``shape`` and ``dtype``, appended one at a time.

    Parameters
    ----------
    shape : int or tuple of int
        The shape of one update (a flat model of ``d`` parameters: ``d`` or ``(d,)``).
    dtype : float16, bfloat16, float32 or float64, default float32
        The storage dtype. An update is accepted if it converts to it exactly (float16 and
        float32 into float64, float16 into float32); a float64 update is refused by a
        float32 buffer rather than rounded silently. A half-precision buffer (numpy float16,
        ml_dtypes' bfloat16) takes half the memory or disk of float32: the mean, median,
        trimmed mean, Krum and Multi-Krum read it in place, a block of coordinates at a time;
        the other rules widen it to a float32 copy in memory first.
    n_max : int
        The most updates one round can hold (the block is allocated for them up front).
    spill_dir : str or path, optional
        Keep the block in a memory-mapped file created in this directory instead of in memory.
        The file's blocks are reserved when the buffer is created (``posix_fallocate``), so a
        full disk is reported then, not as a crash when an update is written. The file is
        unlinked as soon as it is mapped: it never outlives the process, even one that is
        killed, and its blocks are freed when the buffer is closed (:meth:`close`, the ``with``
        block, or garbage collection) and no view of it is left.

    Notes
    -----
    A spilled block does not stay in the process's resident memory: each append unmaps the
    pages it wrote, and while a rule reads the block its pages are unmapped every
    :attr:`RELEASE_PERIOD` seconds (they stay in the kernel's page cache, which the system
    reclaims as it needs, and in the file). A ``spill_dir`` on tmpfs (``/dev/shm``, and ``/tmp``
    on some systems) keeps the file in memory, as shared memory, whatever the buffer unmaps:
    give a directory on a disk. :meth:`append` may be called from several threads at once.
    :meth:`clear` empties the buffer for the next round without giving its memory or file back.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        dtype: Any = np.float32,
        *,
        n_max: int,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._shape = _shape(shape)
        self._dtype = _dtype(dtype)
        self._n_max = _params.positive(n_max, "n_max", _WHO)
        if self._n_max > MAX_UPDATES:
            raise InvalidParameterError(
                f"{_WHO}: n_max must be at most {MAX_UPDATES} (the core's row limit), got {self._n_max}"
            )
        directory = spill_directory(spill_dir, _WHO)
        d = math.prod(self._shape)
        nbytes = self._n_max * d * self._dtype.itemsize
        self._lock = threading.Lock()
        # Row i and its weight are written before _count becomes i + 1: the one commit point.
        self._count = 0
        self._w = np.zeros(self._n_max, np.float64)
        self._has_w = np.zeros(self._n_max, bool)
        self._path: Path | None = None
        self._data: Floats
        if directory is None:
            try:
                self._data = np.empty((self._n_max, d), self._dtype)
            except (MemoryError, ValueError) as e:
                raise MemoryError(
                    f"{_WHO}: {self._n_max} updates of {d} {self._dtype} values ({nbytes} bytes) do "
                    f"not fit in memory; pass spill_dir= to keep them in a file ({e})"
                ) from None
        else:
            self._data = self._spill(directory, d, nbytes)

    def _spill(self, directory: Path, d: int, nbytes: int) -> Floats:
        shape = (self._n_max, d)
        if nbytes == 0:  # nothing to store (d = 0): no file needed
            return np.empty(shape, self._dtype)
        try:
            fd, name = tempfile.mkstemp(prefix="aggkit-updates-", suffix=".bin", dir=directory)
        except OSError as e:
            raise InvalidParameterError(
                f"{_WHO}: cannot create a file in spill_dir {directory}: {e}"
            ) from None
        self._path = Path(name)
        try:
            try:
                _reserve(fd, nbytes, directory)
            finally:
                os.close(fd)
            data = np.memmap(name, dtype=self._dtype, mode="r+", shape=shape)
        except BaseException:
            self._remove()
            raise
        # The mapping keeps the file's blocks; without a name, nothing is left behind even if
        # the process is killed. Where a mapped file cannot be unlinked, close() removes it.
        try:
            os.unlink(name)
            self._path = None
        except OSError:
            pass
        return data

    # ------------------------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one update."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The storage dtype (that of the aggregates)."""
        return self._dtype

    @property
    def n_max(self) -> int:
        """The capacity, in updates."""
        return self._n_max

    @property
    def spilled(self) -> bool:
        """Whether the updates are kept in a (nameless, memory-mapped) file."""
        return isinstance(self.__dict__.get("_data"), np.memmap)

    def __len__(self) -> int:
        """The number of updates appended since creation or the last :meth:`clear`."""
        return self._count

    def __repr__(self) -> str:
        where = "a file" if self.spilled else "memory"
        return (
            f"{_WHO}(shape={self._shape}, dtype={self._dtype}, n_max={self._n_max}, "
            f"len={self._count}, in {where})"
        )

    def append(self, update: Any, weight: float | None = None) -> int:
        """Store one client's update (copied); return its index among this round's updates.

        ``weight`` (finite, ``>= 0``) is the client's weight for rules that take weights; give
        one for every update or for none. Values are stored as they are, NaN and ``inf``
        included: the rule's ``nonfinite`` policy decides about them.
        """
        if isinstance(update, list | tuple):
            raise TypeError(f"{_WHO}.append takes one update as an array, got a {type(update).__name__}")
        a = as_array(update, f"{_WHO}.append: update")
        compute_dtype(a.dtype, f"{_WHO}.append: update")  # floating point only
        if not np.can_cast(a.dtype, self._dtype, "safe"):
            raise TypeError(
                f"{_WHO}.append: update has dtype {a.dtype}, which does not convert exactly to the "
                f"buffer's {self._dtype}; convert it explicitly or create a {a.dtype} buffer"
            )
        if a.shape != self._shape:
            raise ShapeError(f"{_WHO}.append: update has shape {a.shape}, the buffer's is {self._shape}")
        w = None if weight is None else _params.nonnegative(weight, "weight", f"{_WHO}.append")
        with self._lock:
            data = self._block()
            if self._count == self._n_max:
                raise InvalidParameterError(
                    f"{_WHO}.append: the buffer is full (n_max={self._n_max}); aggregate and clear() "
                    "it, or create it with a larger n_max"
                )
            i = self._count
            data[i] = a.reshape(-1)
            self._w[i], self._has_w[i] = (0.0, False) if w is None else (w, True)
            self._count = i + 1
            row = data.shape[1] * data.itemsize
            self._release(i * row, (i + 1) * row)
        return i

    def rows(self) -> Floats:
        """The appended updates as a read-only ``(len, *shape)`` view (no copy).

        A view of the block as it is: after :meth:`clear` and new appends it shows the new rows.
        """
        view = self._block()[: self._count].reshape((self._count, *self._shape))
        view.flags.writeable = False
        return view

    def weights(self) -> npt.NDArray[np.float64] | None:
        """The appended weights as float64, or ``None`` if none were given."""
        with self._lock:
            self._block()
            return self._weights()

    def _weights(self) -> npt.NDArray[np.float64] | None:
        given = self._has_w[: self._count]
        if not given.any():
            return None
        if not given.all():
            missing = int(np.argmin(given))
            raise InvalidParameterError(
                f"{_WHO}: weights were given for some updates but not for update {missing}; give "
                "one for every update or for none"
            )
        return self._w[: self._count].copy()

    @overload
    def aggregate(
        self,
        rule: str | Rule | Rounds,
        /,
        *,
        return_selection: Literal[False] = ...,
        reference: Any = ...,
        ids: Sequence[Any] | None = ...,
        **params: Any,
    ) -> Floats: ...
    @overload
    def aggregate(
        self,
        rule: str | Rule | Rounds,
        /,
        *,
        return_selection: Literal[True],
        reference: Any = ...,
        ids: Sequence[Any] | None = ...,
        **params: Any,
    ) -> tuple[Floats, Selection | None]: ...
    def aggregate(
        self,
        rule: str | Rule | Rounds,
        /,
        *,
        return_selection: bool = False,
        reference: Any = None,
        ids: Sequence[Any] | None = None,
        **params: Any,
    ) -> Any:
        """Aggregate the appended updates with ``rule``.

        ``rule`` is a name with its ``params``, a rule object, or a rule across rounds
        (``rule.rounds()``, whose state this round then updates). ``reference`` is the server's
        own update, for rules that use one (FLTrust); ``ids`` names the client of each appended
        update, in order, for rules across rounds that keep a state per client (FoolsGold).

        The rule reads the stored block in place; the result has the buffer's shape and dtype and
        is bit-identical to ``rule(np.stack(updates))``. Weights given to :meth:`append` go to
        rules that take weights (and are refused by the others). With ``return_selection=True``
        the result is ``(output, selection)``: which inputs a selection rule kept (``None`` for
        the others).
        """
        r: Rule | Rounds
        if isinstance(rule, Rounds):
            if params:
                raise InvalidParameterError(
                    f"{_WHO}.aggregate: parameters {sorted(params)} cannot be applied to {rule!r}"
                )
            r = rule
        else:
            r = make_rule(rule, **params)
        with self._lock:
            block = self._block()
            if self._count == 0:
                raise empty_input_error(f"{_WHO}.aggregate")
            x = block[: self._count]
            with self._releasing():
                if isinstance(r, Rounds):
                    out, selection = r.aggregate(x, weights=self._weights(), reference=reference, ids=ids)
                else:
                    out, selection = r.aggregate(x, weights=self._weights(), reference=reference)
        out = np.asarray(out).reshape(self._shape)
        return (out, selection) if return_selection else out

    #: Seconds between two releases of a spilled block's resident pages while a rule reads it.
    RELEASE_PERIOD = 0.05

    def _release(self, start: int | None = None, stop: int | None = None) -> None:
        """Unmap the resident pages of bytes ``start:stop`` of a spilled block (all without bounds).

        They stay in the page cache, written back to the file in time: the next read maps them
        again. A shared file mapping loses nothing (``MADV_DONTNEED``), and the process's
        resident memory no longer grows with the file.
        """
        mm = getattr(self.__dict__.get("_data"), "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        try:
            if start is None or stop is None:
                mm.madvise(mmap.MADV_DONTNEED)
                return
            page = mmap.PAGESIZE
            lo = start // page * page
            hi = min(-(-stop // page) * page, len(mm))
            if hi > lo:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):
            # only advice: locked memory (mlockall) or a mapping that refuses it keeps its pages
            pass

    @contextlib.contextmanager
    def _releasing(self) -> Any:
        """While a rule reads a spilled block, unmap its resident pages periodically.

        Every :attr:`RELEASE_PERIOD` seconds (the rule has released the GIL), and once more at
        the end: the resident memory a spilled round adds stays of the order of what the rule
        reads in one period.
        """
        if not self.spilled:
            yield
            return
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.RELEASE_PERIOD):
                self._release()

        t = threading.Thread(target=loop, name="aggkit-release", daemon=True)
        try:
            t.start()
            yield
        finally:
            stop.set()
            if t.is_alive():
                t.join()
            self._release()

    def clear(self) -> None:
        """Forget the appended updates (the memory or file is kept for the next round)."""
        with self._lock:
            self._block()
            self._count = 0

    def close(self) -> None:
        """Release the block and delete the spill file (idempotent)."""
        with self._lock:
            # The mapping is unmapped when the last view of it goes (a view from rows() stays
            # readable); the file's name goes now, its blocks with the mapping.
            self.__dict__.pop("_data", None)
            self._count = 0
            self._remove()

    def _block(self) -> Floats:
        data = self.__dict__.get("_data")
        if data is None:
            raise InvalidParameterError(f"{_WHO}: the buffer is closed")
        return data  # type: ignore[no-any-return]

    def _remove(self) -> None:
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def __enter__(self) -> UpdateBuffer:
        self._block()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if "_lock" in self.__dict__:
            self.close()


def spill_directory(value: Any, who: str) -> Path | None:
    """``spill_dir`` checked: ``None``, or an existing directory (an empty name is refused)."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{who}: spill_dir must be a path, got {type(value).__name__}")
    if str(value) == "" or not Path(value).is_dir():
        raise InvalidParameterError(f"{who}: spill_dir must be an existing directory, got {value!r}")
    return Path(value)


def _reserve(fd: int, nbytes: int, directory: Path) -> None:
    """Give the file ``nbytes`` of allocated blocks, or raise ``MemoryError`` saying why.

    Writing through a mapping to a sparse file whose disk has filled kills the process
    (``SIGBUS``); blocks reserved up front cannot run out later.
    """
    free = shutil.disk_usage(directory).free
    fallocate = getattr(os, "posix_fallocate", None)
    try:
        if fallocate is None:  # no posix_fallocate (macOS): check the space, then size the file
            if nbytes > free:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.ftruncate(fd, nbytes)
        else:
            fallocate(fd, 0, nbytes)
    except (OSError, OverflowError) as e:
        raise MemoryError(
            f"{_WHO}: cannot reserve {nbytes} bytes in {directory} ({free} bytes free): {e}"
        ) from None
