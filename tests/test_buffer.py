"""aggkit.UpdateBuffer: updates appended one at a time, in memory or spilled to a file."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import aggkit
import numpy as np
import pytest
from aggkit import UpdateBuffer

RULES = [
    ("median", {}),
    ("trimmed_mean", {"f": 2}),
    ("mean", {}),
    ("meamed", {"f": 2}),
    ("krum", {"f": 2}),
    ("multi_krum", {"f": 2, "m": 4}),
    ("bulyan", {"f": 1}),
    ("geometric_median", {}),
    ("nnm>trimmed_mean", {"f": 2}),
    ("centered_clipping", {"tau": 1.0}),
]


def _updates(n=9, shape=(3, 5), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(dtype)
    x[0] *= 1e3  # one far-off client
    return x


@pytest.fixture(params=["memory", "spill"])
def spill_dir(request, tmp_path):
    return None if request.param == "memory" else tmp_path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "params"), RULES)
def test_bit_identical_to_the_in_memory_call(name, params, dtype, spill_dir):
    x = _updates(dtype=dtype)
    with UpdateBuffer(x.shape[1:], dtype, n_max=12, spill_dir=spill_dir) as buf:
        for i, u in enumerate(x):
            assert buf.append(u) == i
        got = buf.aggregate(name, **params)
        want = aggkit.rule(name, **params)(x.reshape(len(x), -1)).reshape(x.shape[1:])
        assert got.dtype == dtype
        assert got.shape == x.shape[1:]
        assert got.tobytes() == want.tobytes()


def test_weights_and_selection(spill_dir):
    x = _updates(shape=(4,))
    w = [1.0, 2.0, 0.5, 3.0, 1.0, 1.0, 2.0, 4.0, 1.0]
    with UpdateBuffer(4, n_max=9, spill_dir=spill_dir) as buf:
        for u, wi in zip(x, w, strict=True):
            buf.append(u, weight=wi)
        np.testing.assert_array_equal(buf.weights(), w)
        assert buf.aggregate("mean").tobytes() == aggkit.mean(x, weights=w).tobytes()
        y, sel = buf.aggregate(aggkit.MultiKrum(f=2, m=3), return_selection=True)
        y0, sel0 = aggkit.multi_krum(x, f=2, m=3, weights=w, return_selection=True)
        assert y.tobytes() == y0.tobytes()
        np.testing.assert_array_equal(sel.indices, sel0.indices)
        with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
            buf.aggregate("meamed", f=2)


def test_some_weights_missing_is_refused():
    with UpdateBuffer(2, n_max=3) as buf:
        buf.append(np.zeros(2, np.float32), weight=1.0)
        buf.append(np.ones(2, np.float32))
        with pytest.raises(aggkit.InvalidParameterError, match="not for update 1"):
            buf.aggregate("mean")


def test_updates_are_copied_and_the_caller_keeps_its_arrays():
    u = np.arange(4, dtype=np.float32)
    before = u.copy()
    with UpdateBuffer(4, n_max=2) as buf:
        buf.append(u)
        u[:] = 99  # the caller reuses its array: the buffer holds its own copy
        np.testing.assert_array_equal(buf.rows()[0], before)
        assert not buf.rows().flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            buf.rows()[0, 0] = 1.0


@pytest.mark.parametrize(
    ("update", "error", "match"),
    [
        (np.zeros(5, np.float32), aggkit.ShapeError, r"shape \(5,\)"),
        (np.zeros((4, 1), np.float32), aggkit.ShapeError, "shape"),
        (np.zeros(4, np.float64), TypeError, "does not convert exactly"),
        (np.zeros(4, np.int64), TypeError, "floating-point"),
        (np.zeros(4, bool), TypeError, "floating-point"),
        (np.ma.masked_array(np.zeros(4, np.float32), mask=[1, 0, 0, 0]), TypeError, "masked"),
        ("abcd", TypeError, "must be an array"),
        ([1.0, 2.0, 3.0, 4.0], TypeError, "one update as an array"),
        (None, TypeError, "must be an array"),
    ],
)
def test_bad_updates_are_refused_by_name(update, error, match):
    with UpdateBuffer(4, n_max=2) as buf:
        with pytest.raises(error, match=match):
            buf.append(update)
        assert len(buf) == 0


@pytest.mark.parametrize(
    ("weight", "error"),
    [
        (-1.0, aggkit.InvalidParameterError),
        (float("nan"), aggkit.InvalidParameterError),
        (float("inf"), aggkit.InvalidParameterError),
        (10**400, aggkit.InvalidParameterError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_bad_weights_are_refused(weight, error):
    with UpdateBuffer(2, n_max=2) as buf:
        with pytest.raises(error, match="weight"):
            buf.append(np.zeros(2, np.float32), weight=weight)
        assert len(buf) == 0


def test_half_precision_updates_convert_exactly():
    with UpdateBuffer(3, np.float32, n_max=1) as buf:
        buf.append(np.array([1.5, -2.0, 65504.0], np.float16))
        assert buf.rows().dtype == np.float32
        assert buf.rows()[0].tolist() == [1.5, -2.0, 65504.0]


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_buffers_are_read_in_place(half, spill_dir):
    """A float16 / bfloat16 buffer keeps half the bytes of float32, and the rules give the bits
    of the same rule on the stacked updates (those with half-precision kernels read the block
    in place; the others widen it)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = np.dtype(np.float16) if half == "float16" else np.dtype(ml_dtypes.bfloat16)
    x = _updates(dtype=np.float32).astype(dtype)
    with UpdateBuffer(x.shape[1:], dtype, n_max=12, spill_dir=spill_dir) as buf:
        for u in x:
            buf.append(u)
        with pytest.raises(TypeError, match="exactly"):
            buf.append(np.zeros(x.shape[1:], np.float32))
        for name, params in RULES:
            got = buf.aggregate(name, **params)
            want = aggkit.rule(name, **params)(x.reshape(len(x), -1)).reshape(x.shape[1:])
            assert got.dtype == dtype, name
            assert got.tobytes() == want.tobytes(), name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shape": 3, "n_max": 0}, aggkit.InvalidParameterError, "n_max"),
        ({"shape": 3, "n_max": True}, TypeError, "n_max"),
        ({"shape": 3, "n_max": 2.0}, TypeError, "n_max"),
        ({"shape": -1, "n_max": 2}, aggkit.InvalidParameterError, "shape"),
        ({"shape": (2, "a"), "n_max": 2}, TypeError, "shape"),
        ({"shape": 3, "n_max": 2, "dtype": ">f2"}, TypeError, "native byte order"),
        ({"shape": 3, "n_max": 2, "dtype": np.int32}, TypeError, "float32 or float64"),
        ({"shape": 3, "n_max": 2, "dtype": "nonsense"}, TypeError, "float32 or float64"),
        ({"shape": 2**40, "n_max": 2**31}, MemoryError, "spill_dir"),
        ({"shape": 0, "n_max": 2**32}, aggkit.InvalidParameterError, "row limit"),
        ({"shape": 3, "n_max": 2, "spill_dir": ""}, aggkit.InvalidParameterError, "existing directory"),
        ({"shape": 3, "n_max": 2, "spill_dir": 3}, TypeError, "spill_dir must be a path"),
    ],
)
def test_bad_construction_is_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        UpdateBuffer(**kwargs)


def test_a_spill_larger_than_the_disk_is_refused_and_leaves_no_file(tmp_path):
    for shape, n_max in ((2**40, 2**20), (2**31, 2**31)):  # the second overflows an off_t
        with pytest.raises(MemoryError, match="cannot reserve"):
            UpdateBuffer(shape, n_max=n_max, spill_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(aggkit.InvalidParameterError, match="existing directory"):
        UpdateBuffer(2, n_max=2, spill_dir=tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(aggkit.InvalidParameterError, match="existing directory"):
        UpdateBuffer(2, n_max=2, spill_dir=tmp_path / "file")


def test_full_empty_cleared_and_closed(tmp_path):
    buf = UpdateBuffer((2,), n_max=2, spill_dir=tmp_path)
    assert buf.spilled
    assert list(tmp_path.iterdir()) == []  # mapped, then unlinked: nothing can be left behind
    with pytest.raises(aggkit.EmptyInputError):
        buf.aggregate("median")
    buf.append(np.array([1.0, 2.0], np.float32))
    buf.append(np.array([3.0, 4.0], np.float32))
    with pytest.raises(aggkit.InvalidParameterError, match="full"):
        buf.append(np.array([5.0, 6.0], np.float32))
    view = buf.rows()
    buf.clear()
    assert len(buf) == 0
    buf.append(np.array([7.0, 8.0], np.float32))
    assert buf.aggregate("mean").tolist() == [7.0, 8.0]
    buf.close()
    buf.close()  # idempotent
    assert not buf.spilled
    assert view[0].tolist() == [7.0, 8.0]  # a view taken before close() stays readable
    for use in (
        lambda: buf.append(np.zeros(2, np.float32)),
        lambda: buf.aggregate("mean"),
        buf.rows,
        buf.weights,
        buf.clear,
        buf.__enter__,
    ):
        with pytest.raises(aggkit.InvalidParameterError, match="closed"):
            use()


def test_a_killed_server_leaves_no_spill_file(tmp_path):
    code = (
        "import os, signal, numpy as np, aggkit\n"
        f"b = aggkit.UpdateBuffer(1000, n_max=10, spill_dir={str(tmp_path)!r})\n"
        "b.append(np.ones(1000, np.float32))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL
    assert list(tmp_path.iterdir()) == []


def test_nonfinite_updates_are_stored_for_the_rule_to_judge():
    x = np.array([[1.0, 2.0], [np.nan, 3.0], [np.inf, 4.0], [2.0, 5.0]], np.float32)
    with UpdateBuffer(2, n_max=4) as buf:
        for u in x:
            buf.append(u)
        assert buf.aggregate("median").tobytes() == aggkit.median(x).tobytes()
        with pytest.raises(aggkit.NonFiniteError):
            buf.aggregate("median", nonfinite="raise")


def test_concurrent_appends(spill_dir):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    with UpdateBuffer(1000, n_max=64, spill_dir=spill_dir) as buf:
        slots: dict[int, int] = {}

        def client(k):
            slots[buf.append(x[k], weight=float(k + 1))] = k

        threads = [threading.Thread(target=client, args=(k,)) for k in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(slots) == list(range(64))
        order = [slots[i] for i in range(64)]
        np.testing.assert_array_equal(buf.rows(), x[order])
        np.testing.assert_array_equal(buf.weights(), [k + 1.0 for k in order])
        want = aggkit.median(x[order], weights=[k + 1.0 for k in order])
        assert buf.aggregate("median").tobytes() == want.tobytes()


def test_repr():
    with UpdateBuffer((2, 3), np.float64, n_max=5) as buf:
        buf.append(np.zeros((2, 3)))
        assert repr(buf) == "UpdateBuffer(shape=(2, 3), dtype=float64, n_max=5, len=1, in memory)"


def _status_kb(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_spilled_round_does_not_stay_resident(tmp_path):
    """The pages of a spilled block are unmapped after each append and after each aggregate
    (they stay in the page cache): the process's resident memory does not grow with the file.
    Before, the whole file stayed resident after the appends and after each aggregate."""
    n, d = 16, 8_000_000
    row = np.random.default_rng(0).standard_normal(d, dtype=np.float32)
    file_mb = n * d * 4 / 2**20
    with UpdateBuffer(d, np.float32, n_max=n, spill_dir=tmp_path) as buf:
        base = _status_kb("VmRSS:")
        for i in range(n):
            buf.append(row + i)
        assert (_status_kb("VmRSS:") - base) / 1024 < file_mb / 4
        for rule, params in (("median", {}), ("multi_krum", {"f": 2, "m": 5})):
            before = _status_kb("VmRSS:")
            out = buf.aggregate(rule, **params)
            assert out.shape == (d,)
            grown = (_status_kb("VmRSS:") - before) / 1024
            assert grown < file_mb / 4 + out.nbytes / 2**20, f"{rule}: +{grown:.0f} MB resident"


def test_a_refused_release_loses_nothing(tmp_path):
    """Unmapping pages is advice: where the kernel refuses it (locked memory, mlockall), an
    append still counts and an aggregate still returns."""
    x = _updates(shape=(64,))

    class Refusing:
        def __len__(self):
            return 64 * 4 * 12

        def madvise(self, *args):
            raise OSError(22, "Invalid argument")

    with UpdateBuffer(64, np.float32, n_max=12, spill_dir=tmp_path) as buf:
        buf._data._mmap = Refusing()  # what the release asks for its advice
        for u in x:
            buf.append(u)
        assert len(buf) == len(x)
        np.testing.assert_array_equal(buf.aggregate("median"), aggkit.median(x))


def test_reference_and_client_ids_reach_the_rule():
    rng = np.random.default_rng(31)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    g0 = rng.standard_normal(8)
    buf = aggkit.UpdateBuffer(8, np.float32, n_max=6)
    for row in x:
        buf.append(row)
    np.testing.assert_array_equal(buf.aggregate("fltrust", reference=g0), aggkit.fltrust(x, reference=g0))
    with pytest.raises(aggkit.InvalidParameterError, match="needs reference"):
        buf.aggregate("fltrust")
    with pytest.raises(aggkit.InvalidParameterError, match="does not take a reference"):
        buf.aggregate("median", reference=g0)
    state = aggkit.FoolsGold().rounds()
    buf.aggregate(state, ids=["a", "b", "c", "d", "e", "f"])
    assert sorted(state.histories) == ["a", "b", "c", "d", "e", "f"]
    np.testing.assert_array_equal(state.histories["c"], x[2].astype(np.float64))
