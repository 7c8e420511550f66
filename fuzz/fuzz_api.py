#!/usr/bin/env python
"""Fuzz aggkit's public numpy API with adversarial inputs, layouts and parameters.

One function, :func:`one_input`, turns a stream of choices into one call of the public API (a
rule, a pre-aggregator, a pipeline, a rule by name, CrossMax, DETOX or a monoid reduction) and
checks what comes back against what the project promises (README, docs/conventions.md):

- the call returns, or raises an ``aggkit.AggkitError``, a ``MemoryError``, or a ``TypeError``
  that aggkit raises itself (wrong dtypes and types). Anything else is a finding: pyo3's
  ``PanicException``, ``SystemError``, numpy's ``LinAlgError``, a bare ``ValueError`` or
  ``OverflowError``, a ``TypeError`` from deep inside numpy or the core's argument parsing;
- a call returns within ``--hang-seconds`` (5 s; every rule with super-linear cost is bounded by
  ``aggkit.set_work_limit``, which the harness lowers to ``WORK_LIMIT``);
- a result has the input's trailing shape and dtype, and no input is ever written to (checked
  after refusals too); inputs aggkit must refuse (integer dtypes, masked arrays, ...) are refused;
- where tests/reference.py has a slow reference, the result agrees with it bitwise or within the
  tolerance of the family's test file, on the inputs those tests draw from; the bounded influence
  of tests/test_invariants.py holds for the rules that promise it; unanimity, determinism.

The choices come from atheris's ``FuzzedDataProvider`` (coverage-guided) or from a seeded
``random.Random`` (numpy only: what CI runs). See fuzz/README.md for the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import dis
import faulthandler
import functools
import hashlib
import importlib
import itertools
import math
import os
import random
import re
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_SECONDS = 5.0  # a call slower than this is a finding
HARD_SECONDS = 30.0  # a call still running after this is reported and the process ends
WORK_LIMIT = 2 * 10**8  # aggkit.set_work_limit while fuzzing: about 0.2 s of the costliest rules
MEMORY_HEADROOM_MB = 4096  # address space allowed beyond the start-up size (MemoryError past it)

# Filled by _load(): aggkit is imported late so that atheris can instrument it.
aggkit: Any = None
ref: Any = None
_AGGKIT_DIR = ""


def _load() -> None:
    """Import aggkit (with every lazily imported numpy module) and tests/reference.py."""
    global aggkit, ref, _AGGKIT_DIR
    if aggkit is not None:
        return
    aggkit = importlib.import_module("aggkit")
    for mod in ("aggkit._numpy", "aggkit.monoid", "aggkit.errors", "aggkit._params"):
        importlib.import_module(mod)
    _AGGKIT_DIR = os.path.dirname(os.path.abspath(aggkit.__file__)) + os.sep
    tests = os.path.join(ROOT, "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    ref = importlib.import_module("reference")
    aggkit.set_work_limit(WORK_LIMIT)


# ---------------------------------------------------------------------------------------------
# Where choices come from


class _RandomDraw:
    """Choices from a seeded ``random.Random`` (the random driver)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def seed(self) -> int:
        return self.rng.getrandbits(32)


class _AtherisDraw:
    """Choices from atheris's ``FuzzedDataProvider``; an exhausted input gives the first option."""

    def __init__(self, fdp: Any) -> None:
        self.fdp = fdp

    def int(self, lo: int, hi: int) -> int:
        return int(self.fdp.ConsumeIntInRange(lo, hi))

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[self.fdp.ConsumeIntInRange(0, len(seq) - 1)]

    def chance(self, p: float) -> bool:
        return bool(self.fdp.ConsumeProbability() > 1.0 - p)

    def seed(self) -> int:
        return int(self.fdp.ConsumeUInt(4))


# ---------------------------------------------------------------------------------------------
# Values, shapes and layouts

TIES = (-2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 3.0)
_NAN_BITS = {2: (0x7C01, 0xFE00, 0x7DFF), 4: (0x7F800001, 0xFFC00000, 0x7FBFFFFF)}
_NAN_BITS[8] = (0x7FF0000000000001, 0xFFF8000000000000, 0x7FF7FFFFFFFFFFFF)


@functools.cache
def _pool(dt: np.dtype) -> np.ndarray:
    """Values an attacker sends: signed zeros, subnormals, the dtype's limits, ±inf, NaN payloads."""
    fi = np.finfo(dt)
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 1e-320, 5e-324, -5e-324, 1e-310, 2.2250738585072014e-308]
    vals += [float(fi.tiny), -float(fi.tiny), float(fi.smallest_subnormal), float(fi.max), -float(fi.max)]
    vals += [float(fi.max) / 2, 1e308, -1e308, 1.7e308, 3.4e38, -3.4e38, 1e38, 1e20, -1e20, 1e-30, 1e-45]
    vals += [2.0**1000, -(2.0**1000), 2.0**-1000, 65504.0, 6e-8, 1.0 + float(fi.eps), 1.0 - float(fi.epsneg)]
    vals += [math.inf, -math.inf, math.nan, -math.nan]
    with np.errstate(all="ignore"):
        a = np.array(vals, dtype=np.float64).astype(dt)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    return np.concatenate([a, np.array(_NAN_BITS[dt.itemsize], dtype=uint).view(dt)])


FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
BAD_DTYPES = ("int8", "int32", "int64", "uint64", "bool", "complex64", "complex128", "object", "longdouble")
BAD_DTYPES += ("U3", "datetime64[s]", "timedelta64[s]", "V8")

# layouts of a valid (n, *shape) float array; the last ones need two or more axes
LAYOUTS = ("c", "c", "c", "fortran", "transposed", "strided_rows", "negative", "unaligned", "readonly")
LAYOUTS += ("broadcast_row", "big_endian", "list_rows", "list_rows_strided", "tuple_rows", "nested_list")
LAYOUTS += ("nested_tuple", "array_like", "subclass", "memmap_like")
LAYOUTS_2D = ("strided_cols", "broadcast_col", "matrix")
# inputs every rule must refuse
INVALID = ("bad_dtype", "bad_dtype", "masked", "zero_d", "str", "bytes", "none", "ragged", "ragged_arrays")
INVALID += ("mixed_list", "mixed_dtypes", "generator", "dict", "set", "nested_numpy_ints", "object_rows")


@dataclass
class Input:
    """One fuzzed ``x`` and what is known about it."""

    x: Any  # what the call receives
    arr: np.ndarray | None  # its values as one plain (n, *shape) array, when valid
    valid: bool  # a float input of one shape: the rules must not refuse it *as an input*
    layout: str
    mode: str = "-"
    honest: list[int] | None = None  # rows drawn honest (mode honest_junk)
    junk_kinds: frozenset[str] = frozenset()
    watch: list[tuple[Any, bytes]] = field(default_factory=list)  # (object, bytes before)
    source: str = ""  # Python that rebuilds x (for reports)

    @property
    def n(self) -> int:
        """The number of inputs (0 for an invalid ``x``)."""
        return 0 if self.arr is None else int(self.arr.shape[0])

    @property
    def dtype(self) -> np.dtype | None:
        """The dtype a result must have."""
        return None if self.arr is None else self.arr.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one input, which a result must have."""
        return () if self.arr is None else tuple(self.arr.shape[1:])


def _fingerprint(obj: Any) -> bytes:
    """Bytes that change when ``obj`` (an array, or nested sequences of numbers) is written to."""
    if isinstance(obj, np.ndarray):
        return obj.dtype.str.encode() + repr(obj.shape).encode() + np.ascontiguousarray(obj).tobytes()
    return repr(obj).encode()


def _watch(inp: Input, *objs: Any) -> None:
    for o in objs:
        inp.watch.append((o, _fingerprint(o)))


def _values(
    draw: Any, n: int, shape: tuple[int, ...], dt: np.dtype
) -> tuple[np.ndarray, str, list[int] | None, frozenset[str]]:
    """An ``(n, *shape)`` array of ``dt``: its values, how they were drawn, the honest rows."""
    rng = np.random.default_rng(draw.seed())
    d = math.prod(shape)
    mode = draw.pick(("normal", "ties", "pool", "mixed", "honest_junk", "honest_junk", "constant", "wide"))
    honest, kinds = None, frozenset()
    with np.errstate(all="ignore"):
        if mode == "normal":
            a = (rng.standard_normal((n, d)) * draw.pick((1.0, 1.0, 1e-3, 1e3))).astype(dt)
        elif mode == "ties":
            a = rng.choice(np.array(TIES), (n, d)).astype(dt)
        elif mode == "pool":
            a = rng.choice(_pool(dt), (n, d))
        elif mode == "mixed":
            a = rng.standard_normal((n, d)).astype(dt)
            if a.size:
                for _ in range(draw.int(1, 4)):
                    a.flat[rng.integers(a.size)] = rng.choice(_pool(dt))
        elif mode == "constant":
            row = rng.choice(_pool(dt), d) if draw.chance(0.3) else rng.standard_normal(d).astype(dt)
            a = np.repeat(row[None], n, axis=0)
        elif mode == "wide":
            a = (rng.standard_normal((n, d)) * np.exp2(rng.integers(-60, 61, (n, 1)))).astype(dt)
        else:  # honest rows and junk rows (tests/strategies.py's junk), shuffled
            junk = draw.int(0, min(6, max(n - 1, 0)))
            h = n - junk
            if draw.chance(0.7):
                good = rng.standard_normal((h, d)).astype(dt)
            else:
                good = rng.choice(np.array(TIES), (h, d)).astype(dt)
            big = float(np.finfo(dt).max) / 4
            bad = np.zeros((junk, d), dt)
            used = set()
            for r in range(junk):
                kind = draw.pick(("huge", "nan", "inf", "-inf", "mixed", "flip"))
                used.add(kind)
                if kind == "huge":
                    bad[r] = draw.pick((big, -big))
                elif kind == "nan":
                    bad[r] = np.nan
                elif kind == "inf":
                    bad[r] = np.inf
                elif kind == "-inf":
                    bad[r] = -np.inf
                elif kind == "flip":
                    bad[r] = -1000 * good[0] if h else 1.0
                else:
                    bad[r] = rng.choice(np.array([np.nan, np.inf, -np.inf, big, -big]), d)
            a = np.concatenate([good, bad])
            perm = rng.permutation(n)
            a = a[perm]
            honest = sorted(int(i) for i in np.flatnonzero(perm < h))
            kinds = frozenset(used)
    return np.ascontiguousarray(a.reshape((n, *shape)), dtype=dt), mode, honest, kinds


def _shape(draw: Any) -> tuple[int, ...]:
    r = draw.int(0, 9)
    if r == 0:
        return ()
    if r == 1:
        return (draw.int(1, 4), draw.int(0, 4))
    return (draw.int(1, 6),) if draw.chance(0.7) else (draw.int(0, 16),)


def _count(draw: Any) -> int:
    return draw.int(1, 12) if draw.chance(0.75) else draw.int(0, 40)


class _ArrayLike:
    """An object with ``__array__`` only (what pandas and friends look like to numpy)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.a if dtype is None else self.a.astype(dtype)

    def __repr__(self) -> str:
        return "_ArrayLike(a)"


class _Sub(np.ndarray):
    """A numpy subclass (read as a plain array)."""


def _layout(draw: Any, a: np.ndarray, inp: Input) -> tuple[Any, np.ndarray, str]:
    """``a`` in a fuzzed memory layout: the object, the values it holds, Python that builds it."""
    options = LAYOUTS + (LAYOUTS_2D if a.ndim == 2 else ())
    lay = draw.pick(options)
    inp.layout = lay
    if lay == "fortran":
        return np.asfortranarray(a), a, "np.asfortranarray(a)"
    if lay == "transposed":
        axes = tuple(reversed(range(a.ndim)))
        return np.ascontiguousarray(a.transpose(axes)).transpose(axes), a, "a.T.copy().T"
    if lay == "strided_rows":
        big = np.zeros((2 * a.shape[0] + 1, *a.shape[1:]), a.dtype)
        big[1::2] = a
        _watch(inp, big)
        return big[1::2], a, "big = np.zeros((2 * n + 1, *a.shape[1:]), a.dtype); big[1::2] = a; big[1::2]"
    if lay == "strided_cols":
        big = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
        big[:, ::2] = a
        _watch(inp, big)
        return big[:, ::2], a, "big = np.zeros((n, 2 * d), a.dtype); big[:, ::2] = a; big[:, ::2]"
    if lay == "negative":
        return a[::-1].copy()[::-1], a, "a[::-1].copy()[::-1]"
    if lay == "unaligned":
        raw = b"\0" + a.tobytes()
        u = np.frombuffer(raw, dtype=a.dtype, offset=1).reshape(a.shape)
        return u, a, "np.frombuffer(b'\\0' + a.tobytes(), a.dtype, offset=1).reshape(a.shape)"
    if lay == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r, a, "a.copy() made read-only"
    if lay == "broadcast_row":
        b = np.broadcast_to(a[:1], a.shape) if a.shape[0] else a
        return b, np.array(b), "np.broadcast_to(a[:1], a.shape)"
    if lay == "broadcast_col":
        b = np.broadcast_to(a[:, :1], a.shape) if a.shape[1] else a
        return b, np.array(b), "np.broadcast_to(a[:, :1], a.shape)"
    if lay == "big_endian":
        b = a.astype(a.dtype.newbyteorder(">"))
        return b, b, "a.astype(a.dtype.newbyteorder('>'))"
    if lay == "list_rows":
        return [a[i] for i in range(a.shape[0])], a, "[a[i] for i in range(n)]"
    if lay == "list_rows_strided":
        big = np.zeros((a.shape[0], 2, *a.shape[1:]), a.dtype)
        big[:, 1] = a
        _watch(inp, big)
        rows = [big[i, 1] for i in range(a.shape[0])]
        if a.ndim >= 2 and a.shape[-1] > 1:
            big2 = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
            big2[..., ::2] = a
            _watch(inp, big2)
            rows = [big2[i, ..., ::2] for i in range(a.shape[0])]
        return rows, a, "rows that are strided views"
    if lay == "tuple_rows":
        return tuple(a[i].copy() for i in range(a.shape[0])), a, "tuple(a[i].copy() for i in range(n))"
    if lay in ("nested_list", "nested_tuple"):
        lst = a.tolist()
        if lay == "nested_tuple" and isinstance(lst, list):
            lst = tuple(lst)
        return lst, np.asarray(lst), "a.tolist()" if lay == "nested_list" else "tuple(a.tolist())"
    if lay == "array_like":
        return _ArrayLike(a), a, "_ArrayLike(a)  # __array__ only"
    if lay == "subclass":
        return a.view(_Sub), a, "a.view(np.ndarray subclass)"
    if lay == "memmap_like":  # a view of a bigger base that shares memory
        base = np.zeros(a.size + 3, a.dtype)
        base[3:] = a.reshape(-1)
        _watch(inp, base)
        return base[3:].reshape(a.shape), a, "a view at offset 3 of a bigger array"
    if lay == "matrix":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return np.matrix(a), a, "np.matrix(a)"
    inp.layout = "c"
    return a, a, "a"


def _invalid(draw: Any, a: np.ndarray, inp: Input) -> tuple[Any, str]:
    kind = draw.pick(INVALID)
    inp.layout = kind
    if kind == "bad_dtype":
        dt = draw.pick(BAD_DTYPES)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                b = a.astype(dt)
            except (TypeError, ValueError):
                b = np.zeros(a.shape, dt)
        return b, f"a.astype({dt!r})"
    if kind == "masked":
        return np.ma.masked_array(a, mask=np.zeros(a.shape, bool)), "np.ma.masked_array(a)"
    if kind == "zero_d":
        return a.dtype.type(1.5), "a.dtype.type(1.5)"
    if kind == "str":
        return "abc", "'abc'"
    if kind == "bytes":
        return a.tobytes(), "a.tobytes()"
    if kind == "none":
        return None, "None"
    if kind == "ragged":
        return [[1.0, 2.0], [3.0]], "[[1.0, 2.0], [3.0]]"
    if kind == "ragged_arrays":
        return [np.zeros(3, a.dtype), np.zeros(2, a.dtype)], "[np.zeros(3), np.zeros(2)]"
    if kind == "mixed_list":
        return [np.zeros(2, a.dtype), 3.0], "[np.zeros(2), 3.0]"
    if kind == "mixed_dtypes":
        return [np.zeros(2, np.float32), np.zeros(2, np.float64)], "[np.zeros(2, f4), np.zeros(2, f8)]"
    if kind == "generator":
        return (r for r in a), "(r for r in a)"
    if kind == "dict":
        return {"w": a}, "{'w': a}"
    if kind == "set":
        return {1.0, 2.0}, "{1.0, 2.0}"
    if kind == "nested_numpy_ints":  # typed integers keep their dtype (Python ints read as float64)
        return [[np.int64(1), np.int64(2)], [np.int64(3), np.int64(4)], [np.int64(5), np.int64(6)]], (
            "[[np.int64(1), np.int64(2)], [np.int64(3), np.int64(4)], [np.int64(5), np.int64(6)]]"
        )
    return np.array([object(), object()], dtype=object), "np.array([object(), object()])"


def make_input(draw: Any, kind: str = "rows") -> Input:
    """Draw ``x``: an ``(n, *shape)`` float array in some layout, or an input every rule refuses.

    ``kind`` is ``"rows"`` (a rule's inputs), ``"logits"`` (CrossMax's ``(..., N, C)``) or
    ``"segments"`` (a monoid reduction's elements, any number of axes).
    """
    dt = draw.pick(FLOAT_DTYPES if draw.chance(0.9) else FLOAT_DTYPES[:2])
    if kind == "logits":
        b, n, c = draw.int(0, 3), draw.int(0, 9), draw.int(0, 6)
        full = {0: (n, c), 1: (b, n, c), 2: (b, n, c), 3: (draw.int(1, 2), b, n, c)}[draw.int(0, 3)]
        a, mode, _, _ = _values(draw, math.prod(full[:-1]), (c,), dt)
        a = a.reshape(full)
    else:
        n = _count(draw)
        a, mode, honest, kinds = _values(draw, n, _shape(draw), dt)
    inp = Input(x=None, arr=None, valid=True, layout="c", mode=mode)
    if kind == "rows":
        inp.honest, inp.junk_kinds = honest, kinds
    if draw.chance(0.08):
        inp.x, src = _invalid(draw, a, inp)
        inp.valid, inp.arr, inp.honest = False, None, None
        _watch(inp, a)
        if isinstance(inp.x, np.ndarray | list):
            _watch(inp, inp.x)
    else:
        inp.x, inp.arr, src = _layout(draw, a, inp)
        if isinstance(inp.x, list | tuple):
            _watch(inp, inp.x, *[r for r in inp.x if isinstance(r, np.ndarray)])
        elif isinstance(inp.x, np.ndarray):
            _watch(inp, inp.x)
        if inp.layout == "array_like":
            _watch(inp, inp.x.a)
    inp.source = _array_source(a) + f"x = {src}  # layout {inp.layout}, values {inp.mode}"
    return inp


def _array_source(a: np.ndarray) -> str:
    head = f"a = np.frombuffer(bytes.fromhex('{a.tobytes().hex()}'), {a.dtype.str!r}).reshape({a.shape})\n"
    if a.size > 2048:
        head = f"a = <{a.shape} {a.dtype} array, too large to print>\n"
    with np.printoptions(threshold=200, floatmode="unique", linewidth=100):
        return head + "# a = " + repr(a).replace("\n", "\n#     ") + "\n"


# ---------------------------------------------------------------------------------------------
# Parameters

INT_POOL: tuple[Any, ...] = (-1, -(2**63), 0, 1, 2, 3, 7, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64)
INT_POOL += (2**64 - 1, 10**30, 10**400, 1.0, 2.5, math.nan, math.inf, True, False, None, "1", b"1")
INT_POOL += (np.int64(1), np.uint64(2**64 - 1), np.int8(-1), np.bool_(True), np.float64(2.0), 1 + 0j, [1])
FLOAT_POOL: tuple[Any, ...] = (0.0, -0.0, 1e-320, 5e-324, 0.5, 1.0, 2.0, 10.0, 100.0, 1e9, 1e308)
FLOAT_POOL += (math.inf, -math.inf, math.nan, -1.0, 0, 1, 2**64, 10**400, True, None, "1.0", np.float32(0.5))
FLOAT_POOL += (np.float16(1.0), np.float64(math.nan), np.longdouble(2.0), 1 + 0j, [1.0])
BAD_CHOICES: tuple[Any, ...] = ("", "MEAN", "robust ", None, 1, b"mean", ["mean"], "nan")


def _int(draw: Any, lo: int, hi: int, p: float = 0.85) -> Any:
    """Mostly an int in ``[lo, hi]`` (when not empty), else anything from ``INT_POOL``."""
    if lo <= hi and draw.chance(p):
        return draw.int(lo, hi)
    return draw.pick(INT_POOL)


def _float(draw: Any, good: Sequence[float], p: float = 0.85) -> Any:
    return draw.pick(good) if draw.chance(p) else draw.pick(FLOAT_POOL)


def _choice(draw: Any, options: Sequence[str], p: float = 0.93) -> Any:
    return draw.pick(options) if draw.chance(p) else draw.pick(BAD_CHOICES)


def _flag(draw: Any) -> Any:
    return draw.pick((True, False)) if draw.chance(0.9) else draw.pick((0, 1, np.bool_(True), None, 2, "yes"))


def _weights(draw: Any, n: int, integer: bool = False) -> Any:
    """Per-input weights: none, valid ones, or adversarial ones."""
    r = draw.int(0, 9)
    if r <= 3:
        return None
    rng = np.random.default_rng(draw.seed())
    if r <= 7:
        w = rng.integers(0, 5, n).tolist() if integer or draw.chance(0.5) else rng.uniform(0, 10, n).tolist()
        if n and not any(w):
            w[0] = 1
        return w
    bad = draw.int(0, 13)
    if bad == 0:
        return [0.0] * n
    if bad == 1:
        return [1e308] * n
    if bad == 2:
        return [5e-324] * n
    if bad == 3:
        return [1.0] * (n + 1)
    if bad == 4:
        return np.ones((n, 1))
    if bad == 5:
        return [True] * n
    if bad == 6:
        return ["1"] * n
    if bad == 7:
        return np.ones(n, np.float32)
    if bad == 8:
        return [-1.0] + [1.0] * (n - 1)
    if bad == 9:
        return [math.nan] * n
    if bad == 10:
        return [math.inf] + [1.0] * (n - 1)
    if bad == 11:
        return 1.0
    if bad == 12:
        return np.ones(n, np.int64)
    return [10**400] * n


def _plain_weights(w: Any, n: int, integer: bool = False) -> list[float] | None:
    """``w`` if the references can take it as it is, else None.

    That is a list of ``n`` finite numbers ``>= 0`` (ints for ``integer``), not all zero, the largest
    in ``[2**-500, 2**500]`` (aggkit rescales others by a power of two).
    """
    if not isinstance(w, list) or len(w) != n or not n:
        return None
    kinds = (int,) if integer else (int, float)
    if not all(type(v) in kinds and 0 <= v < 2**500 for v in w):
        return None
    top = max(w)
    return w if 2.0**-500 <= top <= 2.0**500 else None


def _f_range(rule: str, n: int) -> int:
    """The largest ``f`` the rule accepts at ``n`` (``-1``: none)."""
    if rule in ("krum", "multi_krum"):
        return (n - 3) // 2
    if rule == "bulyan":
        return (n - 3) // 4
    if rule == "bulyan_detox":
        return (n - 3) // 3
    if rule in ("nnm",):
        return n - 1
    if rule == "arc":
        return n
    return (n - 1) // 2


# ---------------------------------------------------------------------------------------------
# Calls


class Finding(Exception):
    """Something aggkit promises did not hold (an atheris crash)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"[{kind}] {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class Call:
    """One call of the public API: how to make it, how to write it, how to check its result."""

    target: str
    fn: Callable[[], Any]
    code: str
    check: Callable[[Any], None] | None = None
    deterministic: bool = True
    must_fail: bool = False  # the input is one aggkit must refuse


def _kw(params: dict[str, Any]) -> str:
    with np.printoptions(threshold=50, floatmode="unique"):
        return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _same(a: Any, b: Any, bits: bool = False) -> bool:
    """Equal as ``np.testing.assert_array_equal`` compares (NaN equals NaN, ``-0.0 == +0.0``).

    ``bits``: the same bits (signed zeros apart), any NaN still equal to any NaN: what the tests
    that compare ``.view(np.uint32)`` and the conventions promise for order statistics and sums.
    """
    a, b = _native(np.asarray(a)), _native(np.asarray(b))
    if a.shape != b.shape:
        return False
    if a.dtype != b.dtype:
        b = b.astype(a.dtype)
    nan = np.isnan(a) & np.isnan(b)
    if bits and a.dtype.kind == "f":
        eq = a.view(f"u{a.itemsize}") == b.view(f"u{b.itemsize}")
    else:
        eq = a == b
    return bool(np.all(nan | eq))


def _fail_unless(ok: bool, kind: str, msg: str) -> None:
    _S.checks[kind] += 1
    if not ok:
        raise Finding(kind, msg)


def _close(got: Any, want: Any, rtol: float, atol: float, what: str) -> None:
    _S.checks["reference"] += 1
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise Finding("reference", f"{what}: got shape {got.shape}, want {want.shape}")
    with np.errstate(invalid="ignore"):
        bad = ~(
            (got == want)
            | (np.isnan(got) & np.isnan(want))
            | (np.abs(got - want) <= atol + rtol * np.abs(want))
        )
    if bad.any():
        i = tuple(int(k[0]) for k in np.nonzero(bad))
        raise Finding(
            "reference",
            f"{what}: got {got[i]!r} at {i}, want {want[i]!r} (rtol={rtol}, atol={atol}); "
            f"got {got!r}, want {want!r}",
        )


def _tame(a: np.ndarray | None, dtypes: Sequence[Any] = (np.float32, np.float64)) -> bool:
    """What tests/strategies.py's ``matrices`` draws: finite, |v| <= 1e6, no subnormals."""
    if a is None or a.dtype.newbyteorder("=") not in [np.dtype(t) for t in dtypes] or a.ndim < 1:
        return False
    v = np.abs(a.astype(np.float64))
    return bool(np.all(np.isfinite(v) & (v <= 1e6) & ((v == 0) | (v >= np.finfo(a.dtype).tiny))))


def _native(a: np.ndarray) -> np.ndarray:
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _flat(a: np.ndarray) -> np.ndarray:
    return _native(a).reshape(a.shape[0], -1)


def _ref_ok(fn: Callable[[], Any]) -> Any:
    """The reference's answer, or None where it cannot compute one (Python float overflow)."""
    try:
        with np.errstate(all="ignore"):
            return fn()
    except (OverflowError, ZeroDivisionError):
        return None


def _bounded(inp: Input, out: np.ndarray, case_f: int, how: str, averaging: bool, distance: bool) -> None:
    """tests/test_invariants.py's ``test_bounded_influence`` for one result.

    Applies when the input is honest rows drawn like the test's (finite, float32/float64) plus at
    most ``case_f`` junk rows (only junk far from every honest row for Krum and Multi-Krum).
    """
    if inp.arr is None or inp.honest is None or not inp.honest:
        return
    if inp.n - len(inp.honest) > case_f or (how in ("select", "coordinate_far") and "flip" in inp.junk_kinds):
        return
    honest = _flat(inp.arr)[inp.honest]
    if not _tame(honest):
        return
    if distance:
        small = np.sqrt(np.finfo(honest.dtype).tiny) * 1e3
        if not np.all((honest == 0) | (np.abs(honest) > small)):
            return
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    o = _native(np.asarray(out)).reshape(-1)
    if how == "select":
        _fail_unless(any(_same(o, r) for r in honest), "bounded", f"Krum returned a non-honest row {o!r}")
        return
    if how == "widened":
        w = hi - lo
        lo, hi = lo - w, hi + w
    elif how == "diameter":
        hd = honest.astype(np.float64)
        diam = max(float(np.linalg.norm(p - q)) for p in hd for q in hd)
        lo, hi = lo - diam * (1 + 1e-6), hi + diam * (1 + 1e-6)
    if averaging and honest.dtype == np.float64:
        lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
    ok = bool(np.all((lo <= o) & (o <= hi)))
    _fail_unless(ok, "bounded", f"output {o!r} outside the honest range [{lo!r}, {hi!r}] ({how})")


def _unanimous(inp: Input, out: np.ndarray, averaging: bool) -> None:
    """tests/test_invariants.py's ``test_unanimity``: n copies of v give v."""
    if inp.mode != "constant" or not _tame(inp.arr) or inp.n == 0:
        return
    v = _flat(inp.arr)[0]
    o = _native(np.asarray(out)).reshape(-1)
    if averaging and v.dtype == np.float64:
        _close(o, v, 4e-16 * inp.n, 0.0, "unanimity")
    else:
        _fail_unless(_same(o, v), "unanimity", f"{o!r} != {v!r}")


def _policy(draw: Any, options: Sequence[str] = ("robust", "raise", "propagate")) -> Any:
    return _choice(draw, options)


def _simple_call(target: str, fn: Callable[..., Any], inp: Input, params: dict[str, Any], **kw: Any) -> Call:
    return Call(target, lambda: fn(inp.x, **params), f"aggkit.{target}(x, {_kw(params)})", **kw)


def _t_mean(draw: Any, inp: Input) -> Call:
    p = {"weights": _weights(draw, inp.n), "nonfinite": _policy(draw)}

    def check(out: Any) -> None:
        a, w = inp.arr, p["weights"]
        if not _std(a) or p["nonfinite"] not in ("robust", "propagate"):
            return
        if w is not None and _plain_weights(w, inp.n) is None:
            return
        want = _ref_ok(lambda: ref.mean(_native(a), w, p["nonfinite"]))
        if want is not None:  # tests/test_mean.py: bitwise (signed zeros included)
            _fail_unless(_same(out, want, bits=True), "reference", f"mean: got {out!r}, reference {want!r}")
        _unanimous(inp, out, True)

    return _simple_call("mean", aggkit.mean, inp, p, check=check)


def _finite_f(a: np.ndarray | None) -> bool:
    return a is not None and a.dtype.kind == "f" and a.dtype.itemsize in (4, 8) and bool(np.isfinite(a).all())


def _std(a: np.ndarray | None) -> bool:
    """float32 or float64 (the dtypes the references model bit for bit)."""
    return a is not None and a.dtype.kind == "f" and a.dtype.itemsize in (4, 8) and a.ndim >= 1


def _t_median(draw: Any, inp: Input) -> Call:
    p = {"even": _choice(draw, ("mean", "lower", "upper")), "weights": _weights(draw, inp.n, integer=True)}
    p["nonfinite"] = _policy(draw)

    def check(out: Any) -> None:
        a = inp.arr
        if not _std(a) or p["nonfinite"] not in ("robust", "propagate"):
            return
        if p["weights"] is None:
            want = ref.median(_native(a), p["even"], p["nonfinite"])
        elif _plain_weights(p["weights"], inp.n, integer=True) and p["nonfinite"] == "robust":
            want = ref.weighted_median(_native(a), p["weights"], p["even"])
        else:
            return
        _fail_unless(_same(out, want, bits=True), "reference", f"median: got {out!r}, reference {want!r}")
        if p["weights"] is None and p["nonfinite"] == "robust":
            _bounded(inp, out, (inp.n - 1) // 2, "coordinate", False, False)
            _unanimous(inp, out, False)

    return _simple_call("median", aggkit.median, inp, p, check=check)


def _t_trimmed_mean(draw: Any, inp: Input) -> Call:
    p = {"f": _int(draw, 0, _f_range("trimmed_mean", inp.n)), "weights": _weights(draw, inp.n, integer=True)}
    p["nonfinite"] = _policy(draw)

    def check(out: Any) -> None:
        a, f = inp.arr, p["f"]
        if not _std(a) or p["nonfinite"] not in ("robust", "propagate"):
            return
        if p["weights"] is None:
            want = ref.trimmed_mean(_native(a), f, p["nonfinite"])
            _fail_unless(
                _same(out, want, bits=True), "reference", f"trimmed_mean: got {out!r}, reference {want!r}"
            )
            if p["nonfinite"] == "robust":
                _bounded(inp, out, f, "coordinate", True, False)
                _unanimous(inp, out, True)
        elif _plain_weights(p["weights"], inp.n, integer=True) and _tame(a) and p["nonfinite"] == "robust":
            tol = 1e-5 if _native(a).dtype == np.float32 else 1e-12
            want = ref.weighted_trimmed_mean(_native(a), p["weights"], f)
            _close(out, want, tol, tol * float(np.abs(a).max(initial=0.0)), "weighted trimmed_mean")

    return _simple_call("trimmed_mean", aggkit.trimmed_mean, inp, p, check=check)


def _t_meamed(draw: Any, inp: Input) -> Call:
    p = {"f": _int(draw, 0, _f_range("meamed", inp.n)), "nonfinite": _policy(draw)}

    def check(out: Any) -> None:
        a = inp.arr
        if _finite_f(a):
            want = ref.closest_to_median(_native(a), inp.n - p["f"])
            _fail_unless(_same(out, want), "reference", f"meamed: got {out!r}, reference {want!r}")
        if p["nonfinite"] == "robust":
            _bounded(inp, out, p["f"], "widened", True, False)
            _unanimous(inp, out, True)

    return _simple_call("meamed", aggkit.meamed, inp, p, check=check)


def _krum_scores_close(a: np.ndarray, f: int, scores: np.ndarray) -> list[float] | None:
    """tests/test_krum.py's score comparison; the reference scores, or None if not comparable."""
    if not _tame(a):
        return None
    x = _flat(a)
    want = _ref_ok(lambda: ref.krum_scores(x, f))
    if want is None:
        return None
    rtol = 1e-5 if x.dtype == np.float32 else 1e-12
    _close(scores, want, rtol, float(np.finfo(x.dtype).tiny) * x.size, "krum scores")
    return list(want)


def _t_krum(draw: Any, inp: Input) -> Call:
    p = {"f": _int(draw, 0, _f_range("krum", inp.n)), "nonfinite": _policy(draw)}
    p["return_selection"] = draw.pick((False, True, True, 0, 1, None))

    def check(res: Any) -> None:
        if not p["return_selection"]:
            _fail_unless(isinstance(res, np.ndarray), "result", f"krum returned {type(res).__name__}")
            return
        out, sel = res
        x = _flat(inp.arr)
        i = int(sel.indices[0])
        best = min(range(inp.n), key=lambda j: _rank(float(sel.scores[j]), j))
        _fail_unless(i == best, "reference", f"krum chose {i}, the (score, index) order gives {best}")
        if np.isfinite(sel.scores[i]) or p["nonfinite"] == "propagate":
            o = _native(out).reshape(-1)
            _fail_unless(
                bool(np.array_equal(o, x[i], equal_nan=True)), "reference", f"krum output is not input {i}"
            )
            _fail_unless(
                _same(o, x[i], bits=True), "copy", f"krum output differs from input {i} in the sign of a zero"
            )
        _krum_scores_close(inp.arr, p["f"], sel.scores)
        if p["nonfinite"] == "robust":
            _bounded(inp, out, p["f"], "select", False, True)
            _unanimous(inp, out, False)

    return Call("krum", lambda: aggkit.krum(inp.x, **p), f"aggkit.krum(x, {_kw(p)})", check)


def _rank(score: float, i: int) -> tuple[int, float, int]:
    """``(score, index)``; a NaN score (only under ``nonfinite="propagate"``) first, as numpy's argmin.

    tests/test_krum.py's ``test_nonfinite_policies``: Krum under ``"propagate"`` selects the NaN input.
    """
    return (0, 0.0, i) if math.isnan(score) else (1, score, i)


def _mean_in_order(rows: np.ndarray) -> np.ndarray:
    """tests/test_krum.py's Multi-Krum output: each coordinate averaged in row order."""
    return np.array([ref.average(rows[:, j], rows.dtype) for j in range(rows.shape[1])], dtype=rows.dtype)


def _t_multi_krum(draw: Any, inp: Input) -> Call:
    n = inp.n
    p = {"f": _int(draw, 0, _f_range("krum", n)), "m": None if draw.chance(0.4) else _int(draw, 1, n)}
    p["weights"] = None if draw.chance(0.5) else _weights(draw, n)
    p["nonfinite"] = _policy(draw)
    p["return_selection"] = draw.pick((True, True, False))

    def check(res: Any) -> None:
        if not p["return_selection"]:
            return
        out, sel = res
        x, f = _flat(inp.arr), p["f"]
        m = n - f if p["m"] is None else int(p["m"])
        order = sorted(range(n), key=lambda i: _rank(float(sel.scores[i]), i))[:m]
        _fail_unless(
            sel.indices.tolist() == order, "reference", f"multi_krum kept {sel.indices}, want {order}"
        )
        if _std(inp.arr) and p["nonfinite"] != "raise":
            w = p["weights"]
            if w is None:
                want = _mean_in_order(x[order])
            elif _plain_weights(w, n):
                want = _ref_ok(lambda: ref.mean(x[order], [w[i] for i in order], "propagate"))
            else:
                want = None
            if want is not None:
                _fail_unless(
                    _same(out.reshape(-1), want), "reference", f"multi_krum: got {out!r}, want {want!r}"
                )
        scores = _krum_scores_close(inp.arr, f, sel.scores)
        if scores is not None:
            s = sorted(scores)
            if m == n or s[m] - s[m - 1] > 1e-3 * max(abs(s[m]), 1.0):
                want_set = sorted(ref.multi_krum(x, f, m)[1])
                _fail_unless(
                    sorted(order) == want_set, "reference", f"multi_krum set {order}, reference {want_set}"
                )
        if p["nonfinite"] == "robust" and p["weights"] is None and m <= n - f:
            _bounded(inp, out, f, "coordinate_far", True, True)
            _unanimous(inp, out, True)

    return Call("multi_krum", lambda: aggkit.multi_krum(inp.x, **p), f"aggkit.multi_krum(x, {_kw(p)})", check)


def _t_bulyan(draw: Any, inp: Input) -> Call:
    variant = _choice(draw, ("paper", "paper", "detox"))
    hi = _f_range("bulyan_detox" if variant == "detox" else "bulyan", inp.n)
    p = {
        "f": _int(draw, 0, hi),
        "variant": variant,
        "clamp": _flag(draw),
        "nonfinite": _policy(draw, ("robust", "raise")),
    }
    p["return_selection"] = draw.pick((True, False))

    def check(res: Any) -> None:
        out, sel = res if p["return_selection"] else (res, None)
        a, f = inp.arr, p["f"]
        if variant == "paper" and _tame(a, (np.float64,)) and inp.n <= 15:
            want, chosen = ref.bulyan(_flat(a), f, bool(p["clamp"]))
            if sel is not None:
                _fail_unless(
                    sel.indices.tolist() == chosen,
                    "reference",
                    f"bulyan chose {sel.indices}, reference {chosen}",
                )
            _fail_unless(
                _same(out.reshape(-1), want), "reference", f"bulyan: got {out!r}, reference {want!r}"
            )
        if variant == "paper" and p["clamp"] is True and p["nonfinite"] == "robust":
            _bounded(inp, out, f, "widened", True, True)
            _unanimous(inp, out, True)

    return Call("bulyan", lambda: aggkit.bulyan(inp.x, **p), f"aggkit.bulyan(x, {_kw(p)})", check)


def _t_geometric_median(draw: Any, inp: Input) -> Call:
    p = {"weights": _weights(draw, inp.n), "nu": _float(draw, (1e-6, 1e-3, 0.1, 1.0, 1e-300))}
    p["maxiter"] = _int(draw, 1, 200)
    p["ftol"] = _float(draw, (1e-10, 0.0, 1e-3, 1.0))
    p["init"] = _choice(draw, ("median", "mean", "zero"))
    p["nonfinite"] = _policy(draw)
    p["return_info"] = draw.pick((False, True))

    def check(res: Any) -> None:
        out, info = res if p["return_info"] else (res, None)
        if info is None or p["weights"] is not None or not _tame(inp.arr, (np.float64,)):
            return
        x = _flat(inp.arr)
        w = np.asarray(info.weights, np.float64)
        if w.sum() > 0:
            _close(
                out.reshape(-1), (w[:, None] * x).sum(0) / w.sum(), 1e-12, 1e-12, "geometric median weights"
            )

    return _simple_call("geometric_median", aggkit.geometric_median, inp, p, check=check)


def _center(draw: Any, inp: Input) -> Any:
    r = draw.int(0, 12)
    shape = inp.shape
    if r <= 5:
        return None
    if r <= 7:
        return np.random.default_rng(draw.seed()).standard_normal(shape)
    if r == 8 and inp.n:
        return np.array(_native(inp.arr[0])) if inp.arr is not None else None
    return draw.pick(
        (
            np.zeros(math.prod(shape) + 1),
            np.full(shape, np.nan),
            "abc",
            [[1.0, "a"]],
            object(),
            1 + 2j,
            np.zeros(shape, np.int64),
            1.0,
            np.full(shape, 1e308),
            np.zeros((1, *shape)),
            [math.inf] * math.prod(shape),
        )
    )


def _t_centered_clipping(draw: Any, inp: Input) -> Call:
    p = {"tau": _float(draw, (0.0, 0.5, 10.0, 1e9, 100.0)), "iters": _int(draw, 0, 4)}
    p["center"] = _center(draw, inp)
    p["nonfinite"] = _policy(draw)

    def check(out: Any) -> None:
        c, tau = p["center"], p["tau"]
        if not _tame(inp.arr) or not isinstance(p["iters"], int) or p["iters"] > 3:
            return
        if c is not None and not (
            isinstance(c, np.ndarray) and c.dtype == np.float64 and c.shape == inp.shape
        ):
            return
        if c is not None and not _tame(c.reshape(1, -1)):
            return
        if not isinstance(tau, float) or not math.isfinite(tau):
            return
        x = _flat(inp.arr)
        want = _ref_ok(
            lambda: ref.centered_clipping(x, tau, p["iters"], None if c is None else c.reshape(-1))
        )
        if want is None:
            return
        tol = 1e-5 if x.dtype == np.float32 else 1e-9
        scale = (
            1 + float(np.abs(x).max(initial=0.0)) + (0.0 if c is None else float(np.abs(c).max(initial=0.0)))
        )
        _close(out.reshape(-1), want.astype(x.dtype), tol, tol * scale, "centered_clipping")

    return _simple_call("centered_clipping", aggkit.centered_clipping, inp, p, check=check)


def _t_cc_state(draw: Any, inp: Input) -> Call:
    p = {"tau": _float(draw, (0.5, 10.0, 100.0)), "iters": _int(draw, 0, 3), "nonfinite": _policy(draw)}

    def run() -> Any:
        state = aggkit.CenteredClippingState(**p)
        first = state(inp.x)
        second, sel = state.aggregate(inp.x)
        again = aggkit.CenteredClipping(**p)(inp.x, center=first)
        state.reset()
        return first, second, sel, again, state(inp.x)

    def check(res: Any) -> None:
        first, second, sel, again, restarted = res
        _fail_unless(sel is None and _same(second, again), "rounds", "round 2 is not clipping from round 1")
        _fail_unless(_same(restarted, first), "rounds", "reset() did not start over from zero")

    code = f"s = aggkit.CenteredClippingState({_kw(p)}); s(x); s.aggregate(x); s.reset(); s(x)"
    return Call("CenteredClippingState", run, code, check)


def _t_fltrust(draw: Any, inp: Input) -> Call:
    p = {"reference": _center(draw, inp), "nonfinite": _policy(draw)}
    if p["reference"] is None:
        p["reference"] = np.random.default_rng(draw.seed()).standard_normal(inp.shape)

    def check(out: Any) -> None:
        g0 = p["reference"]
        if not _tame(inp.arr) or p["nonfinite"] != "robust":
            return
        if not (isinstance(g0, np.ndarray) and g0.dtype == np.float64 and g0.shape == inp.shape):
            return
        x = _flat(inp.arr)
        g = g0.reshape(-1)
        norms = np.linalg.norm(x.astype(np.float64), axis=1)
        gn = float(np.linalg.norm(g))
        cos = np.where(norms > 0, x @ g / np.where(norms > 0, norms, 1.0) / max(gn, 1e-300), 0.0)
        if np.any(np.abs(cos) < 1e-6):  # near the trust's kink at 0: rounding decides
            return
        want = _ref_ok(lambda: ref.fltrust(x, g))
        if want is None:
            return
        tol = 1e-5 if x.dtype == np.float32 else 1e-9
        _close(out.reshape(-1), want.astype(x.dtype), tol, tol * (1 + gn), "fltrust")
        _fail_unless(
            float(np.linalg.norm(np.asarray(out, np.float64))) <= gn * (1 + 1e-5) + 1e-30,
            "bounded",
            "fltrust's output is longer than the reference",
        )

    return _simple_call("fltrust", aggkit.fltrust, inp, p, check=check)


def _t_foolsgold(draw: Any, inp: Input) -> Call:
    p: dict[str, Any] = {
        "kappa": _float(draw, (1.0, 0.5, 3.0)),
        "nonfinite": _policy(draw, ("robust", "raise")),
    }
    if draw.chance(0.3):
        p["clip"] = _float(draw, (1.0, 0.0, 1e3))
    if draw.chance(0.4) and inp.arr is not None:
        p["history"] = np.random.default_rng(draw.seed()).standard_normal(inp.arr.shape)
    elif draw.chance(0.1):
        p["history"] = draw.pick(("abc", [None], np.zeros((inp.n + 1, 2)), [object()] * max(inp.n, 1)))

    def check(out: Any) -> None:
        h = p.get("history")
        if not _tame(inp.arr) or (h is not None and not isinstance(h, np.ndarray)):
            return
        if p["nonfinite"] != "robust" or "clip" in p:
            return
        if not (isinstance(p["kappa"], float) and 1e-6 <= p["kappa"] <= 1e6):
            return  # the reference's weights kappa l lose bits where they are subnormal
        x = _flat(inp.arr)
        want = _ref_ok(lambda: ref.foolsgold(x, None if h is None else h.reshape(len(x), -1), p["kappa"]))
        if want is None:
            return
        w_got = aggkit.foolsgold(inp.x, **p, return_info=True)[1].weights
        if not np.allclose(np.asarray(w_got), want[1], rtol=1e-9, atol=1e-9):
            return  # ill-conditioned weights (near-parallel histories): compared in tests/
        tol = 1e-5 if x.dtype == np.float32 else 1e-9
        _close(
            out.reshape(-1),
            want[0].astype(x.dtype),
            tol,
            tol * (1 + float(np.abs(x).max(initial=0))),
            "foolsgold",
        )

    return _simple_call("foolsgold", aggkit.foolsgold, inp, p, check=check)


def _t_foolsgold_state(draw: Any, inp: Input) -> Call:
    ids = (
        list(range(inp.n))
        if draw.chance(0.7)
        else draw.pick(([0] * max(inp.n, 1), ["a"], [[1]] * max(inp.n, 1)))
    )

    def run() -> Any:
        state = aggkit.FoolsGold().rounds()
        first, _ = state.aggregate(inp.x, ids=ids)
        second, _ = state.aggregate(inp.x, ids=ids)
        hist = [state.histories[k] for k in ids]
        return first, second, hist

    def check(res: Any) -> None:
        if not _tame(inp.arr):
            return
        x = _flat(inp.arr).astype(np.float64)
        _, _, hist = res
        _fail_unless(
            all(np.array_equal(h, 2 * r) for h, r in zip(hist, x, strict=True)),
            "rounds",
            "FoolsGoldState's history after two rounds is not twice the update",
        )

    return Call(
        "FoolsGoldState", run, f"s = aggkit.FoolsGold().rounds(); s.aggregate(x, ids={ids!r}) twice", check
    )


def _t_dnc(draw: Any, inp: Input) -> Call:
    p = {
        "f": _int(draw, 0, max(_f_range("dnc", inp.n), 0)),
        "b": _int(draw, 1, 20) if draw.chance(0.5) else 10000,
        "niters": _int(draw, 1, 6),
        "c": _float(draw, (1.0, 0.5, 0.0, 2.0)),
        "seed": _int(draw, 0, 5),
        "nonfinite": _policy(draw, ("robust", "raise")),
    }

    def check(out: Any) -> None:
        if not _tame(inp.arr) or p["nonfinite"] != "robust":
            return
        if not all(isinstance(p[k], int) for k in ("f", "b", "niters", "seed")):
            return
        x = _flat(inp.arr)
        # the same draws: a twin with the same seed
        twin = aggkit.DnC(f=p["f"], b=p["b"], niters=p["niters"], c=p["c"], seed=p["seed"])
        got, sel = twin(x), None
        del sel
        _fail_unless(
            _same(got, out.reshape(-1), bits=True), "determinism", "dnc with one seed gave two answers"
        )

    return _simple_call("dnc", aggkit.dnc, inp, p, check=check)


def _subset_ref(name: str, a: np.ndarray, f: int) -> np.ndarray | None:
    """The slow reference of a subset rule where it decides the same subsets (no near ties)."""
    x = _flat(a).astype(np.float64)
    n = len(x)
    if math.comb(n, f) > 300 or x.shape[1] == 0:
        return None
    if name == "mda":
        d = [[ref.sq_distance(x[i], x[j]) for j in range(n)] for i in range(n)]
        diams = sorted(
            max((d[i][j] for i, j in itertools.combinations(s, 2)), default=0.0)
            for s in itertools.combinations(range(n), n - f)
        )
        if len(diams) > 1 and diams[1] - diams[0] <= 1e-9 * max(diams[0], 1e-300):
            return None
        return ref.mda(x, f)[0]
    if name == "smea":
        tops = []
        for s in itertools.combinations(range(n), n - f):
            c = x[list(s)] - x[list(s)].mean(axis=0)
            tops.append(np.linalg.eigvalsh(c.T @ c)[-1])
        tops.sort()
        if len(tops) > 1 and not tops[0] < tops[1] * (1 - 1e-6):
            return None
        return ref.smea(x, f)[0]
    return ref.caf(x, f)


def _t_subset(name: str) -> Callable[[Any, Input], Call]:
    def build(draw: Any, inp: Input) -> Call:
        p: dict[str, Any] = {"f": _int(draw, 0, _f_range(name, inp.n))}
        if name in ("mda", "smea"):
            p["max_subsets"] = _int(draw, 1, 10**5, 0.3) if draw.chance(0.3) else 10**5
        if name == "monna":
            p["idx"] = _int(draw, 0, max(inp.n - 1, 0))
        p["nonfinite"] = _policy(draw, ("robust", "raise"))
        fn = getattr(aggkit, name)

        def check(out: Any) -> None:
            a, f = inp.arr, p["f"]
            if name == "mda" and p["nonfinite"] == "robust":
                _bounded(inp, out, f, "diameter", True, True)
            if name in ("mda", "smea", "caf") and _tame(a, (np.float64,)) and inp.n <= 10:
                if name == "caf" and bool(np.all(a == np.round(a))):
                    # tests/test_subsets.py draws no ties: on integer data the filtered weight can land
                    # exactly on n - 2f, where rounding decides the stop (xfail in test_fuzz_regressions).
                    return
                want = _ref_ok(lambda: _subset_ref(name, a, f))
                if want is not None:
                    rtol = 1e-9 if name == "smea" else 1e-6
                    _close(out.reshape(-1), want, rtol, rtol * (1 + float(np.abs(a).max(initial=0.0))), name)
            if name in ("mda", "smea", "caf"):
                _unanimous(inp, out, True)

        return _simple_call(name, fn, inp, p, check=check)

    return build


def _t_sign_vote(draw: Any, inp: Input) -> Call:
    p = {"nonfinite": _policy(draw)}

    def check(out: Any) -> None:
        a = inp.arr
        if not _std(a) or p["nonfinite"] == "raise":
            return
        x = _flat(a).astype(np.float64)
        s = np.sign(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0))
        want = np.sign(s.sum(axis=0))
        if p["nonfinite"] == "propagate":
            want[np.isnan(x).any(axis=0)] = np.nan
        o = np.asarray(out, np.float64).reshape(-1)
        ok = bool(np.all((o == want) | (np.isnan(o) & np.isnan(want))))
        _fail_unless(ok, "reference", f"sign_vote: got {o!r}, want {want!r}")

    return _simple_call("sign_vote", aggkit.sign_vote, inp, p, check=check)


def _t_preagg(name: str) -> Callable[[Any, Input], Call]:
    def build(draw: Any, inp: Input) -> Call:
        n = inp.n
        if name in ("nnm", "arc"):
            p: dict[str, Any] = {"f": _int(draw, 0, _f_range(name, n))}
        elif name == "clipping":
            p = {"c": _float(draw, (0.0, 1.0, 2.0, 1e-300, 1e300))}
        elif name == "bucketing":
            p = {"s": _int(draw, 1, 5), "seed": _int(draw, 0, 2**32, 0.9)}
        else:
            p = {"b": _float(draw, (0.0, 0.5, 1.0, 1e30)), "noise": _choice(draw, ("gaussian", "uniform"))}
            p["seed"] = _int(draw, 0, 2**32, 0.9)
        cls = {
            "nnm": "NNM",
            "arc": "ARC",
            "clipping": "Clipping",
            "bucketing": "Bucketing",
            "perturb": "Perturb",
        }[name]

        def run() -> Any:
            return getattr(aggkit, cls)(**p)(inp.x)

        def check(out: Any) -> None:
            a = inp.arr
            m = -(-n // int(p["s"])) if name == "bucketing" else n
            want_shape = (m, *inp.shape)
            _fail_unless(
                out.shape == want_shape, "shape", f"{cls} returned shape {out.shape}, want {want_shape}"
            )
            _fail_unless(out.dtype == inp.dtype, "dtype", f"{cls} returned {out.dtype} for {inp.dtype}")
            if name in ("nnm", "arc") and _tame(a, (np.float64,)):
                want = (ref.nnm if name == "nnm" else ref.arc)(_flat(a), p["f"])
                tol = 1e-6 * (1 + float(np.abs(a).max(initial=0.0)))
                _close(_flat(out), want, 1e-6, tol, cls)
            if name == "clipping" and _tame(a) and isinstance(p["c"], float) and math.isfinite(p["c"]):
                norms = np.linalg.norm(_flat(out).astype(np.float64), axis=1)
                bound = p["c"] * (1 + 1e-6 if _native(a).dtype == np.float32 else 1 + 1e-12) + 1e-300
                _fail_unless(bool(np.all(norms <= bound)), "clipping", f"norms {norms} above c={p['c']}")
            if name == "perturb" and p["b"] == 0 and _std(a):
                _fail_unless(
                    bool(np.array_equal(out, a, equal_nan=True)), "perturb", "b=0 changed the inputs"
                )

        return Call(
            cls, run, f"aggkit.{cls}({_kw(p)})(x)", check, deterministic=name in ("nnm", "arc", "clipping")
        )

    return build


STAGES = ("nnm", "arc", "clipping", "bucketing", "perturb")
PIPE_RULES = (
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "krum",
    "multi_krum",
    "sign_vote",
    "geometric_median",
)


def _t_pipeline(draw: Any, inp: Input) -> Call:
    stages = [draw.pick(STAGES) for _ in range(draw.int(0, 3))] + [draw.pick(PIPE_RULES)]
    if draw.chance(0.05):
        stages = draw.pick(([], ["median", "nnm"], ["nnm"], ["bogus"], [3], "nnm>median", [None]))
    f = _int(draw, 0, max((inp.n - 3) // 2, 0))
    shared: dict[str, Any] = {"f": f} if draw.chance(0.8) else {}
    if draw.chance(0.2):
        shared["c"] = _float(draw, (1.0, 2.0))
    if draw.chance(0.1):
        shared["bogus"] = 1
    by = draw.pick(("name", "function", "object"))
    named = isinstance(stages, list) and all(isinstance(s, str) for s in stages)
    spec = ">".join(stages) if named else stages

    def run() -> Any:
        if by == "name":
            return aggkit.rule(spec, **shared)(inp.x)
        if by == "function":
            return aggkit.pipeline(*stages, **shared)(inp.x)
        # objects built by name, then handed to the constructor
        return aggkit.Pipeline(list(aggkit.pipeline(*stages, **shared).stages))(inp.x)

    code = {"name": f"aggkit.rule({spec!r}, {_kw(shared)})(x)"}
    code["function"] = f"aggkit.pipeline(*{stages!r}, {_kw(shared)})(x)"
    code["object"] = f"aggkit.Pipeline(list(aggkit.pipeline(*{stages!r}, {_kw(shared)}).stages))(x)"
    return Call(
        "pipeline", run, code[by], deterministic=not any(s in ("bucketing", "perturb") for s in stages)
    )


def _rule_param(draw: Any, key: str, n: int) -> Any:
    """A value for a rule parameter named ``key`` (mostly valid at ``n`` inputs)."""
    gen: dict[str, Callable[[], Any]] = {
        "f": lambda: _int(draw, 0, max((n - 3) // 4, 0)),
        "m": lambda: _int(draw, 1, max(n, 1)),
        "q": lambda: _int(draw, 0, max(n // 3, 0)),
        "r": lambda: _int(draw, 1, 1) if draw.chance(0.5) else draw.pick((1, 3, 5, 2, -1)),
        "idx": lambda: _int(draw, 0, max(n - 1, 0)),
        "iters": lambda: _int(draw, 0, 3),
        "maxiter": lambda: _int(draw, 1, 50),
        "max_subsets": lambda: _int(draw, 1, 10**5),
        "tau": lambda: _float(draw, (0.5, 10.0, 100.0)),
        "nu": lambda: _float(draw, (1e-6, 0.1)),
        "ftol": lambda: _float(draw, (1e-10, 0.0)),
        "even": lambda: _choice(draw, ("mean", "lower", "upper")),
        "nonfinite": lambda: _policy(draw),
        "variant": lambda: _choice(draw, ("paper", "detox")),
        "init": lambda: _choice(draw, ("median", "mean", "zero")),
        "clamp": lambda: _flag(draw),
        "stages": lambda: draw.pick(
            (
                [aggkit.Clipping(), aggkit.Median()],
                [aggkit.NNM(f=0), aggkit.Mean()],
                ["clipping", "median"],
                [],
            )
        ),
    }
    return gen[key]() if key in gen else draw.pick(INT_POOL)


def _t_rule_by_name(draw: Any, inp: Input) -> Call:
    names = [*aggkit.list_rules(), "bogus", "", "median>", ">median", "nnm>nnm", "Median", "nnm>krum"]
    name = draw.pick(names)
    cls = aggkit.registry.rule_class(name)
    takes = [f.name for f in dataclasses.fields(cls) if f.init] if cls is not None else ["f"]
    params: dict[str, Any] = {}
    for key in takes:
        required = key in ("f", "q", "stages")
        if (required and draw.chance(0.95)) or draw.chance(0.3):
            params[key] = _rule_param(draw, key, inp.n)
    if draw.chance(0.05):
        params[draw.pick(("f", "m", "tau", "bogus"))] = 1  # one the rule may not take
    weights = _weights(draw, inp.n) if draw.chance(0.3) else None
    how = draw.pick(("call", "aggregate", "rounds"))

    def run() -> Any:
        r = aggkit.rule(name, **params)
        if how == "call":
            return r(inp.x)
        if how == "aggregate":
            return r.aggregate(inp.x, weights=weights)[0]
        rounds = r.rounds()
        out = rounds.aggregate(inp.x, weights=weights)[0]
        rounds.reset()
        return out

    code = f"aggkit.rule({name!r}, {_kw(params)})" + {
        "call": "(x)",
        "aggregate": f".aggregate(x, weights={weights!r})",
    }.get(how, f".rounds().aggregate(x, weights={weights!r})")
    # rules that draw random numbers (bucketing_cc, dnc) repeat themselves only with a seed
    unseeded = "seed" in takes and params.get("seed") is None
    return Call("rule", run, code, deterministic=how != "rounds" and not unseeded)


def _t_crossmax(draw: Any, inp: Input) -> Call:
    z = inp.arr
    nd = 0 if z is None else z.ndim
    p: dict[str, Any] = {}
    reducer = _choice(draw, ("kth", "kth", "median"))
    if reducer != "kth" or draw.chance(0.8):
        p["reducer"] = reducer
    if reducer == "kth":
        nn = z.shape[-2] if nd >= 2 else 3
        p["k"] = None if draw.chance(0.2) else _int(draw, 2, max(nn, 2))
    elif draw.chance(0.1):
        p["k"] = 3
    else:
        p["even"] = _choice(draw, ("lower", "upper", "mean"))
    p["nonfinite"] = _policy(draw)
    if draw.chance(0.25) and nd >= 2:
        pd, cd = draw.int(-nd, nd - 1), draw.int(-nd, nd - 1)
        if draw.chance(0.8):
            pd, cd = (pd, cd) if pd % nd != cd % nd else (-2, -1)
        p["predictor_dim"], p["class_dim"] = pd, cd
    elif draw.chance(0.03):
        p["predictor_dim"] = draw.pick(INT_POOL)

    def check(out: Any) -> None:
        pd, cd = p.get("predictor_dim", -2) % nd, p.get("class_dim", -1) % nd
        batch = [z.shape[i] for i in range(nd) if i not in (pd, cd)]
        want_shape = (*batch, z.shape[cd])
        _fail_unless(out.shape == want_shape, "shape", f"crossmax shape {out.shape}, want {want_shape}")
        _fail_unless(out.dtype == z.dtype, "dtype", f"crossmax dtype {out.dtype}, want {z.dtype}")
        if not _std(z) or p["nonfinite"] == "raise" or z.size == 0:
            return
        v = np.abs(_native(z)[np.isfinite(z)].astype(np.float64))
        if not np.all((v <= 1e4) & ((v == 0) | (v >= np.finfo(z.dtype).tiny))):
            return  # tests/test_crossmax.py draws finite logits within 1e4 (plus NaN and ±inf)
        moved = np.moveaxis(_native(z), (pd, cd), (-2, -1))
        z3 = moved.reshape(-1, moved.shape[-2], moved.shape[-1])
        kw = {k: v for k, v in p.items() if k in ("k", "reducer", "even", "nonfinite")}
        want = ref.crossmax(z3, **kw)
        got = np.asarray(out).reshape(want.shape)
        if kw.get("even") == "mean":
            fin = np.abs(want[np.isfinite(want)])
            _close(got, want, 1e-6, 1e-6 * float(fin.max(initial=1.0)), "crossmax")
        else:
            _fail_unless(_same(got, want), "reference", f"crossmax: got {got!r}, reference {want!r}")

    return Call("crossmax", lambda: aggkit.crossmax(inp.x, **p), f"aggkit.crossmax(x, {_kw(p)})", check)


def _t_segment_reduce(draw: Any, inp: Input) -> Call:
    a = inp.arr
    nd = 1 if a is None else max(a.ndim, 1)
    axis = draw.int(-nd, nd - 1) if draw.chance(0.3) else 0
    if draw.chance(0.03):
        axis = draw.pick(INT_POOL)
    rows = (
        0 if a is None or a.ndim == 0 or not isinstance(axis, int) or not -nd <= axis < nd else a.shape[axis]
    )
    rng = np.random.default_rng(draw.seed())
    sets = draw.int(1, 6)
    cuts = np.sort(rng.integers(0, rows + 1, sets - 1))
    ptr = np.concatenate([[0], cuts, [rows]]).astype(np.int64)
    index = np.repeat(np.arange(sets), np.diff(ptr))
    p: dict[str, Any] = {"op": _choice(draw, ("sum", "mean", "prod", "max", "min", "logsumexp"))}
    how = draw.int(0, 9)
    if how <= 4:
        p["index"] = index.tolist() if draw.chance(0.5) else index
    elif how <= 8:
        p["ptr"] = ptr.tolist() if draw.chance(0.5) else ptr
    else:
        bad = draw.pick(
            ("unsorted", "negative", "huge", "float", "2d", "short", "both", "neither", "uint", "ptr0")
        )
        if bad == "unsorted":
            p["index"] = index[::-1].copy()
        elif bad == "negative":
            p["index"] = index - 1
        elif bad == "huge":
            p["index"] = (
                [*index.tolist()[:-1], draw.pick((2**31, 2**40, 2**62, 2**63 - 1, 2**63, 2**64))]
                if rows
                else [2**40]
            )
        elif bad == "float":
            p["index"] = index.astype(np.float64)
        elif bad == "2d":
            p["ptr"] = ptr[None]
        elif bad == "short":
            p["index"] = index[1:]
        elif bad == "both":
            p["index"], p["ptr"] = index, ptr
        elif bad == "uint":
            p["index"] = index.astype(np.uint64) + np.uint64(2**63) * np.uint64(draw.int(0, 1))
        elif bad == "ptr0":
            p["ptr"] = ptr + 1
    if draw.chance(0.3):
        p["dim_size"] = (
            _int(draw, sets, sets + 3, 0.7) if draw.chance(0.9) else draw.pick((2**20, 2**40, 2**62, -1))
        )
    if axis != 0:
        p["axis"] = axis
    if draw.chance(0.2):
        p["empty"] = _float(draw, (0.0, -1.0, 1e308, math.nan))

    def check(out: Any) -> None:
        if not _std(a) or not isinstance(axis, int) or ("index" in p and "ptr" in p):
            return
        pp = ptr
        if "index" in p:
            idx = np.asarray(p["index"])
            if idx.dtype.kind not in "iu" or not np.array_equal(idx, index):
                return
            used = int(index.max()) + 1 if index.size else 0  # without dim_size: max(index) + 1 sets
            pp = ptr[: used + 1]
        size = p.get("dim_size", len(pp) - 1)
        if isinstance(size, int) and size > len(pp) - 1:
            pp = np.concatenate([pp, np.full(size - len(pp) + 1, pp[-1])])
        x2 = np.moveaxis(_native(a), axis, 0)
        x2 = x2.reshape(x2.shape[0], math.prod(x2.shape[1:]))
        want_shape = list(a.shape)
        want_shape[axis] = len(pp) - 1
        _fail_unless(
            list(out.shape) == want_shape, "shape", f"segment_reduce shape {out.shape}, want {want_shape}"
        )
        _fail_unless(out.dtype == a.dtype, "dtype", f"segment_reduce dtype {out.dtype}, want {a.dtype}")
        empty = p.get("empty")
        if empty is not None and not isinstance(empty, float | int):
            return
        with np.errstate(all="ignore"):
            want = ref.segment_reduce(x2, pp, p["op"], empty)
        got = np.moveaxis(np.asarray(out), axis, 0).reshape(want.shape)
        if p["op"] == "logsumexp":
            # tests/test_monoid.py: rtol 4 eps. A result near 0 from operands near 1 (cancellation in
            # m + log1p(exp(-|a - b|))) is off by a few ulps of the operands in both: atol for that.
            eps = float(np.finfo(a.dtype).eps)
            fin = np.abs(x2[np.isfinite(x2)])
            _close(
                got,
                want,
                4 * eps,
                4 * eps * max(1.0, float(fin.max(initial=0.0))),
                "segment_reduce logsumexp",
            )
            _fail_unless(bool(np.array_equal(np.isnan(got), np.isnan(want))), "reference", "logsumexp NaN")
        else:
            _fail_unless(
                _same(_native(got), want, bits=True),
                "reference",
                f"segment_reduce: got {got!r}, reference {want!r}",
            )

    return Call(
        "segment_reduce",
        lambda: aggkit.monoid.segment_reduce(inp.x, **p),
        f"aggkit.monoid.segment_reduce(x, {_kw(p)})",
        check,
    )


def _t_tree_schedule(draw: Any, inp: Input) -> Call:
    rows = _int(draw, 0, 40, 0.9)
    sizes = [draw.int(0, 5) for _ in range(draw.int(1, 5))]
    ptr = [0, *itertools.accumulate(sizes)]
    p: dict[str, Any] = {}
    if draw.chance(0.5):
        p["ptr"] = ptr if draw.chance(0.9) else [0, _int(draw, 0, 2**20, 0.5)]
    else:
        p["rows"] = ptr[-1] if draw.chance(0.9) else rows
        p["index"] = [i for i, k in enumerate(sizes) for _ in range(k)]
    if draw.chance(0.3):
        p["dim_size"] = _int(draw, len(sizes), len(sizes) + 2, 0.8)
    if draw.chance(0.5):
        p["pad"] = _choice(draw, ("none", "zeros_dense", "identity"))

    def check(s: Any) -> None:
        if "ptr" in p and p["ptr"] is ptr and "dim_size" not in p:
            want = sum(k - 1 for k in sizes if k)
            if p.get("pad", "none") == "none":
                _fail_unless(s.combines == want, "tree", f"{s.combines} combines, want {want}")

    return Call(
        "tree_schedule",
        lambda: aggkit.monoid.tree_schedule(**p),
        f"aggkit.monoid.tree_schedule({_kw(p)})",
        check,
    )


def _detox_redundant(draw: Any, inp: Input, r: int) -> None:
    """Replace ``x`` by DETOX's setting: groups of ``r`` whose honest members send the same vector.

    ``g`` contiguous groups (``n = g r``); then some members are Byzantine (sign flip or NaN).
    """
    g = draw.int(1, 8)
    n = g * r
    dt = inp.dtype if inp.dtype is not None and inp.dtype.kind == "f" else np.dtype(np.float64)
    a, _, _, _ = _values(draw, g, (draw.int(0, 6),), _native(np.zeros(0, dt)).dtype)
    a = np.repeat(a, r, axis=0)
    for i in np.random.default_rng(draw.seed()).permutation(n)[: draw.int(0, n)]:
        a[i] = -a[i] if draw.chance(0.5) else np.nan
    inp.x, inp.arr, inp.valid, inp.layout, inp.honest = a, a, True, "c", None
    inp.watch = [(a, _fingerprint(a))]
    inp.source = _array_source(a) + f"x = a  # rows redundant in groups of r={r}"


def _t_detox(draw: Any, inp: Input) -> Call:
    r = _int(draw, 1, 5) if draw.chance(0.9) else draw.pick((3, 1, 5))
    if isinstance(r, int) and r % 2 == 0 and draw.chance(0.8):
        r += 1
    if type(r) is int and 1 <= r <= 7 and draw.chance(0.7):
        _detox_redundant(draw, inp, r)
    preset = draw.pick(("detox", "detox", "detox", "detox_median", "detox_multikrum", "detox_bulyan"))
    n = inp.n
    p: dict[str, Any] = {"q": _int(draw, 0, max(n // 3, 0)), "r": r}
    if draw.chance(0.3):
        p["buckets"] = None if draw.chance(0.2) else _int(draw, 1, 6)
    if preset == "detox":
        if draw.chance(0.4):
            p["inner"] = draw.pick(
                ("mean", "median", None, "krum", aggkit.Median(), "bogus", 3, "trimmed_mean")
            )
        if draw.chance(0.4):
            p["outer"] = draw.pick(
                ("median", "mean", aggkit.TrimmedMean(f=1), "krum", "geometric_median", None, "bogus")
            )
        if draw.chance(0.3):
            p["vote"] = _choice(draw, ("exact", "approx"))
            p["atol"], p["rtol"] = _float(draw, (0.0, 1e-6, 1.0)), _float(draw, (1e-5, 0.0, 0.5))
        if draw.chance(0.4):
            p["no_majority"] = _choice(draw, ("drop", "median", "raise", "reference"))
        if draw.chance(0.2):
            d = math.prod(inp.shape) if inp.arr is not None else 1
            p["segments"] = draw.pick(
                ([0, d], [0, d // 2, d], [], [d], [d, 0], [0, -1, d], "ab", [0.5, d], None, [0, d + 1])
            )
        if draw.chance(0.3):
            p["groups"] = _groups(draw, n, r)
        if draw.chance(0.3):
            p["rng"] = draw.pick((0, 1, None, -1, "x", 2**70, 1.5, np.random.default_rng(0)))
        p["return_info"] = draw.pick((False, True))
    fn = getattr(aggkit, preset)
    return Call(preset, lambda: fn(inp.x, **p), f"aggkit.{preset}(x, {_kw(p)})", deterministic="rng" not in p)


def _groups(draw: Any, n: int, r: Any) -> Any:
    """DETOX ``groups=``: a valid assignment of ``n`` inputs to groups of ``r``, or a bad one."""
    n = n if isinstance(n, int) and 0 <= n <= 64 else 6
    rr = r if type(r) is int and 0 < r <= 7 else 3
    g = n // rr
    if draw.int(0, 9) <= 3 and g:
        return np.random.default_rng(draw.seed()).permutation(g * rr).reshape(g, rr)
    options: tuple[Callable[[], Any], ...] = (
        lambda: "contiguous",
        lambda: "random",
        lambda: "bogus",
        lambda: None,
        lambda: [[0, 1, 2]],
        lambda: np.zeros((g, rr), np.int64),
        lambda: np.arange(n, dtype=np.float64).reshape(-1, 1),
        lambda: np.arange(n).reshape(1, -1),
        lambda: [[-1, 0, 1]],
        lambda: np.array([[2**40, 0, 1]]),
        lambda: np.empty((0, rr), np.int64),
        lambda: np.arange(n, dtype=np.uint64).reshape(-1, 1) + np.uint64(2**63),
    )
    return draw.pick(options)()


def _t_detox_helpers(draw: Any, inp: Input) -> Call:
    which = draw.pick(
        ("effective_f", "expected_corrupted_groups", "contiguous_groups", "random_groups", "data_assignment")
    )
    n, r, q = _int(draw, 1, 40), _int(draw, 1, 7), _int(draw, 0, 40)
    if isinstance(r, int) and isinstance(n, int) and draw.chance(0.7) and r > 0:
        n = r * draw.int(1, 8)
    args: dict[str, Any]
    if which == "effective_f":
        args = {"q": q, "r": r}
    elif which == "expected_corrupted_groups":
        args = {"n": n, "r": r, "q": q}
    elif which == "contiguous_groups":
        args = {"n": n, "r": r}
    elif which == "random_groups":
        args = {"n": n, "r": r, "rng": draw.pick((0, 1, None, "x", -1))}
    else:
        nn = n if isinstance(n, int) and 0 < n <= 40 else 6
        args = {"groups": _groups(draw, nn, r), "n": n}
    fn = getattr(aggkit, which)
    return Call(
        which,
        lambda: fn(**args),
        f"aggkit.{which}({_kw(args)})",
        deterministic=which != "random_groups" or args["rng"] is not None,
    )


# name -> (input kind, builder, weight)
TARGETS: dict[str, tuple[str, Callable[[Any, Input], Call], int]] = {}


def _register_targets() -> None:
    if TARGETS:
        return
    TARGETS.update(
        {
            "mean": ("rows", _t_mean, 4),
            "median": ("rows", _t_median, 6),
            "trimmed_mean": ("rows", _t_trimmed_mean, 6),
            "meamed": ("rows", _t_meamed, 4),
            "krum": ("rows", _t_krum, 5),
            "multi_krum": ("rows", _t_multi_krum, 5),
            "bulyan": ("rows", _t_bulyan, 4),
            "geometric_median": ("rows", _t_geometric_median, 3),
            "centered_clipping": ("rows", _t_centered_clipping, 3),
            "centered_clipping_state": ("rows", _t_cc_state, 1),
            "mda": ("rows", _t_subset("mda"), 3),
            "smea": ("rows", _t_subset("smea"), 3),
            "caf": ("rows", _t_subset("caf"), 3),
            "monna": ("rows", _t_subset("monna"), 3),
            "sign_vote": ("rows", _t_sign_vote, 2),
            "fltrust": ("rows", _t_fltrust, 3),
            "foolsgold": ("rows", _t_foolsgold, 3),
            "foolsgold_state": ("rows", _t_foolsgold_state, 1),
            "dnc": ("rows", _t_dnc, 3),
            "nnm": ("rows", _t_preagg("nnm"), 2),
            "arc": ("rows", _t_preagg("arc"), 2),
            "clipping": ("rows", _t_preagg("clipping"), 2),
            "bucketing": ("rows", _t_preagg("bucketing"), 2),
            "perturb": ("rows", _t_preagg("perturb"), 1),
            "pipeline": ("rows", _t_pipeline, 4),
            "rule": ("rows", _t_rule_by_name, 4),
            "crossmax": ("logits", _t_crossmax, 4),
            "detox": ("rows", _t_detox, 4),
            "segment_reduce": ("segments", _t_segment_reduce, 4),
            "tree_schedule": ("none", _t_tree_schedule, 1),
            "detox_helpers": ("none", _t_detox_helpers, 1),
        }
    )
    _WEIGHTED_NAMES.extend(name for name, (_, _, w) in TARGETS.items() for _ in range(w))


_WEIGHTED_NAMES: list[str] = []


# ---------------------------------------------------------------------------------------------
# Outcomes


@functools.cache
def _opnames(code: Any) -> dict[int, str]:
    return {i.offset: i.opname for i in dis.get_instructions(code)}


def _raised_by_aggkit(e: BaseException) -> bool:
    """Whether aggkit's own Python code raised ``e`` with a ``raise`` statement.

    A ``TypeError`` from a builtin or numpy called inside aggkit, or from the core's argument
    conversion, ends in a call instruction instead.
    """
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if not os.path.abspath(code.co_filename).startswith(_AGGKIT_DIR):
        return False
    return _opnames(code).get(tb.tb_lasti, "") in ("RAISE_VARARGS", "RERAISE")


_SIGNATURE = re.compile(r"got an unexpected keyword argument|missing \d+ required|takes \d+ positional")


def acceptable(e: BaseException) -> bool:
    """The exceptions the conventions allow: AggkitError, MemoryError, aggkit's own TypeError."""
    if isinstance(e, aggkit.AggkitError | MemoryError):
        return True
    if type(e) is TypeError:
        return _raised_by_aggkit(e) or bool(_SIGNATURE.search(str(e)))
    return False


# Findings already filed (tests/test_fuzz_regressions.py, xfail): (id, target regex, kind, message regex).
# Matching findings are counted, not reported, unless --report-known is given.
_HELPERS = "random_groups|contiguous_groups|expected_corrupted_groups|data_assignment|effective_f"
KNOWN: list[tuple[str, str, str, str]] = []


def _known(target: str, kind: str, message: str) -> str | None:
    for ident, t, k, m in KNOWN:
        if re.fullmatch(t, target) and k == kind and re.search(m, message):
            return ident
    return None


@dataclass
class _Current:
    started: float
    inp: Input
    call: Call
    data: bytes | None


@dataclass
class _Session:
    """What the drivers share: settings, the call in flight (for the watchdog), tallies."""

    hang_seconds: float = HANG_SECONDS
    hard_seconds: float = HARD_SECONDS
    report_known: bool = False
    current: _Current | None = None
    last: tuple[Input, Call] | None = None
    watchdog: threading.Thread | None = None
    warnings: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)
    per_target: dict[str, Counter[str]] = field(default_factory=dict)
    checks: Counter[str] = field(default_factory=Counter)  # promises checked on results


_S = _Session()


def describe(inp: Input, call: Call) -> str:
    """A Python snippet that rebuilds the input and repeats the call."""
    return f"import numpy as np, aggkit\n{inp.source}\n{call.code}\n"


def _watchdog() -> None:
    while True:
        time.sleep(0.5)
        cur = _S.current
        if cur is not None and time.monotonic() - cur.started > _S.hard_seconds:
            sys.stderr.write(
                f"\nfuzz_api: HANG, {cur.call.target} still running after {_S.hard_seconds:.0f} s:\n"
                + describe(cur.inp, cur.call)
            )
            if cur.data is not None:
                name = "hang-" + hashlib.sha1(cur.data).hexdigest()
                with open(name, "wb") as fh:
                    fh.write(cur.data)
                sys.stderr.write(f"fuzz_api: input written to {name}\n")
            faulthandler.dump_traceback(all_threads=True)
            sys.stderr.flush()
            os._exit(70)


def one_input(draw: Any, data: bytes | None = None) -> str:
    """Draw one call of the public API, make it, check it; raise :class:`Finding` on a finding.

    Returns the outcome: ``"ok"``, ``"refused:<exception type>"`` or ``"known:<finding id>"``.
    """
    _load()
    _register_targets()
    target = draw.pick(_WEIGHTED_NAMES)
    kind, build, _ = TARGETS[target]
    inp = make_input(draw, "rows" if kind == "none" else kind)
    call = build(draw, inp)
    if kind != "none":
        call.must_fail = not inp.valid or (kind == "rows" and inp.n == 0)
    _S.last = (inp, call)
    if _S.watchdog is None:
        _S.watchdog = threading.Thread(target=_watchdog, name="fuzz-watchdog", daemon=True)
        _S.watchdog.start()
    _S.current = _Current(time.monotonic(), inp, call, data)
    faulthandler.dump_traceback_later(_S.hard_seconds + 15, exit=True)
    out, error = None, None
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = call.fn()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # pyo3's PanicException derives from BaseException
                error = e
        elapsed = time.perf_counter() - t0
    finally:
        faulthandler.cancel_dump_traceback_later()
        _S.current = None
    for w in caught:
        where = f"{os.path.basename(w.filename)}:{w.lineno}"
        _S.warnings[f"{call.target}: {w.category.__name__}: {w.message} ({where})"] += 1
    tally = _S.per_target.setdefault(call.target, Counter())
    try:
        _check_outcome(draw, inp, call, out, error, elapsed)
    except Finding as fnd:
        ident = _known(call.target, fnd.kind, fnd.detail)
        if ident is not None and not _S.report_known:
            _S.known[ident] += 1
            tally["known"] += 1
            return "known:" + ident
        tally["finding"] += 1
        raise Finding(
            fnd.kind, f"{call.target}: {fnd.detail}\n--- reproducer ---\n{describe(inp, call)}"
        ) from error
    outcome = "ok" if error is None else "refused:" + type(error).__name__
    tally[outcome] += 1
    return outcome


def _check_outcome(
    draw: Any, inp: Input, call: Call, out: Any, error: BaseException | None, elapsed: float
) -> None:
    if elapsed > _S.hang_seconds:
        raise Finding("hang", f"the call took {elapsed:.1f} s")
    for obj, before in inp.watch:
        _fail_unless(_fingerprint(obj) == before, "mutation", "the call wrote to its input")
    if error is not None:
        if not acceptable(error):
            tb = "".join(traceback.format_exception(error)[-6:])
            raise Finding("exception", f"{type(error).__module__}.{type(error).__qualname__}: {error}\n{tb}")
        return
    if call.must_fail:
        raise Finding("accepted", f"an invalid input ({inp.layout}, n={inp.n}) was accepted: {out!r}")
    o = out[0] if isinstance(out, tuple) else out
    if inp.arr is not None and call.target in _ROW_RULES:
        _fail_unless(isinstance(o, np.ndarray), "result", f"returned {type(o).__name__}, not an ndarray")
        _fail_unless(
            o.shape == inp.shape, "shape", f"output shape {o.shape}, input rows have shape {inp.shape}"
        )
        _fail_unless(o.dtype == inp.dtype, "dtype", f"output dtype {o.dtype}, input dtype {inp.dtype}")
    if call.check is not None:
        with np.errstate(all="ignore"):
            call.check(out)
    if call.deterministic and call.target in _ROW_RULES and isinstance(o, np.ndarray) and draw.chance(0.1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = call.fn()
        again = again[0] if isinstance(again, tuple) else again
        _fail_unless(
            _same(again, o, bits=True), "determinism", f"a second call gave {again!r}, the first {o!r}"
        )


_ROW_RULES = {
    "mean", "median", "trimmed_mean", "meamed", "krum", "multi_krum", "bulyan", "geometric_median",
    "centered_clipping", "mda", "smea", "caf", "monna", "sign_vote", "pipeline", "rule", "detox",
    "detox_median", "detox_multikrum", "detox_bulyan", "CenteredClippingState", "fltrust", "foolsgold",
    "dnc",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Drivers


def _limit_memory(headroom_mb: int) -> None:
    """Cap the address space so that an oversized allocation is a MemoryError, not the OOM killer."""
    if headroom_mb <= 0:
        return
    try:
        import resource

        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        limit = kib * 1024 + (headroom_mb << 20)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, StopIteration, ValueError):
        pass


@dataclass
class Stats:
    """What a run of the random driver did."""

    seed: int
    cases: int = 0
    seconds: float = 0.0
    findings: list[tuple[int, Finding]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


def _case_rng(seed: int, i: int) -> random.Random:
    return random.Random((seed << 32) | i)


def run_random(
    seed: int, *, budget_seconds: float | None = None, cases: int | None = None, max_findings: int = 20,
    quiet: bool = False,
) -> Stats:  # fmt: skip
    """Run the random driver: cases ``0, 1, ...`` of ``seed`` until the budget or the count is spent.

    Case ``i`` draws from ``random.Random((seed << 32) | i)``, so ``--seed S --case I`` replays it
    alone. Findings are collected (the first of each kind, up to ``max_findings``), not raised.
    """
    _load()
    _register_targets()
    st = Stats(seed)
    t0 = time.monotonic()
    seen: set[str] = set()
    while (cases is None or st.cases < cases) and (
        budget_seconds is None or time.monotonic() - t0 < budget_seconds
    ):
        i = st.cases
        st.cases += 1
        try:
            outcome = one_input(_RandomDraw(_case_rng(seed, i)))
        except Finding as fnd:
            st.outcomes["finding"] += 1
            sig = re.sub(r"[-+]?\d[\d.e+-]*", "#", fnd.detail.split("\n")[0])[:160]
            if sig in seen:
                continue
            seen.add(sig)
            st.findings.append((i, fnd))
            if not quiet:
                print(f"\n=== finding in case {i} (replay: --seed {seed} --case {i}) ===\n{fnd}", flush=True)
            if len(st.findings) >= max_findings:
                break
            continue
        st.outcomes[outcome.split(":")[0] if outcome.startswith("known") else outcome] += 1
    st.seconds = time.monotonic() - t0
    return st


def _print_summary(st: Stats) -> None:
    rate = st.cases / st.seconds if st.seconds else 0.0
    print(f"fuzz_api: seed {st.seed}: {st.cases} inputs in {st.seconds:.1f} s ({rate:.0f}/s), "
          f"{len(st.findings)} distinct findings")  # fmt: skip
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in st.outcomes.most_common()))
    print("  checks passed: " + ", ".join(f"{k} {v}" for k, v in _S.checks.most_common()))
    for t, c in sorted(_S.per_target.items()):
        print(f"    {t:24s} " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    if _S.known:
        print("  known findings (xfail in tests/test_fuzz_regressions.py): "
              + ", ".join(f"{k} {v}" for k, v in _S.known.items()))  # fmt: skip
    if _S.warnings:
        print(f"  warnings emitted by calls ({sum(_S.warnings.values())}):")
        for w, c in _S.warnings.most_common(10):
            print(f"    {c:6d}  {w}")


def _atheris_main(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["aggkit"]):
        _load()
    _register_targets()

    def test_one_input(data: bytes) -> None:
        one_input(_AtherisDraw(atheris.FuzzedDataProvider(data)), data)

    # Defaults unless given: libFuzzer's own hang limit above the watchdog's, and inputs long enough
    # from the start for a whole call (each choice takes a few bytes; a short input only calls mean).
    defaults = {"-timeout": int(_S.hard_seconds + 30), "-max_len": 1024, "-len_control": 0}
    for flag, value in defaults.items():
        if not any(a.startswith(flag + "=") for a in argv):
            argv = [*argv, f"{flag}={value}"]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    """Command line: the random driver (``--budget-seconds``, ``--cases``) or atheris (libFuzzer flags)."""
    argv = list(sys.argv if argv is None else argv)
    ours = argparse.ArgumentParser(description="Fuzz aggkit's public numpy API (fuzz/README.md).")
    ours.add_argument("--budget-seconds", type=float, help="random driver: run this long")
    ours.add_argument("--cases", type=int, help="random driver: run this many inputs")
    ours.add_argument("--seed", type=int, help="random driver: the seed (default: a fresh one, printed)")
    ours.add_argument("--case", type=int, help="random driver: replay this one case of --seed and show it")
    ours.add_argument("--report-known", action="store_true", help="also report findings filed as xfail")
    ours.add_argument("--hang-seconds", type=float, default=HANG_SECONDS, help="a slower call is a finding")
    ours.add_argument("--memory-headroom-mb", type=int, default=MEMORY_HEADROOM_MB, help="0: no limit")
    ours.add_argument("--atheris", action="store_true", help="run atheris even without libFuzzer flags")
    args, rest = ours.parse_known_args(argv[1:])
    _S.report_known = args.report_known
    _S.hang_seconds = args.hang_seconds
    _limit_memory(args.memory_headroom_mb)
    try:
        import atheris  # noqa: F401

        have_atheris = True
    except ImportError:
        have_atheris = False
    random_mode = args.budget_seconds is not None or args.cases is not None or args.case is not None
    if not random_mode and (args.atheris or rest or have_atheris):
        if not have_atheris:
            print(
                "fuzz_api: atheris is not installed (pip install atheris); use --budget-seconds",
                file=sys.stderr,
            )
            return 2
        _atheris_main([argv[0], *rest])
        return 0
    if rest:
        ours.error(f"unknown arguments {rest} (libFuzzer flags need atheris and no random-driver flags)")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    if args.case is not None:
        _S.report_known = True
        try:
            outcome = one_input(_RandomDraw(_case_rng(seed, args.case)))
        except Finding as fnd:
            print(f"case {args.case} of seed {seed}: finding\n{fnd}")
            return 1
        assert _S.last is not None
        print(f"case {args.case} of seed {seed}: {outcome}\n--- the call ---\n{describe(*_S.last)}")
        return 0
    budget = 60.0 if args.budget_seconds is None and args.cases is None else args.budget_seconds
    print(f"fuzz_api: random driver, seed {seed} (replay a case: --seed {seed} --case I)", flush=True)
    st = run_random(seed, budget_seconds=budget, cases=args.cases)
    _print_summary(st)
    return 1 if st.findings else 0


if __name__ == "__main__":
    sys.exit(main())
