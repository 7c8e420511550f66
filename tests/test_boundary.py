"""Inputs an attacker (or a careless caller) sends to crash the process: sizes whose buffers
cannot be allocated, thread counts that cannot be started, panics. Each must come back as a
Python ``Exception`` (``MemoryError`` or an ``AggkitError``), never abort the interpreter or
raise pyo3's ``PanicException`` (a ``BaseException`` that ``except Exception`` misses).

Cases that must fail to allocate run in a child process under an address-space limit, so the
outcome does not depend on the machine's memory or overcommit policy, and an abort fails the
test instead of killing the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import aggkit
import numpy as np
import pytest
from aggkit import _core

HEADROOM = 256 << 20


def expect_memory_error(setup: str, call: str) -> str:
    """In a fresh interpreter, run ``setup``, then limit the address space to what the process
    holds plus ``HEADROOM`` and run ``call``, which must raise ``MemoryError``."""
    code = textwrap.dedent(
        f"""
        import resource
        import numpy as np
        import aggkit
        from aggkit import _core
        aggkit.median(np.ones((3, 4)))  # start the thread pool
        {setup}
        with open("/proc/self/status") as status:
            kib = next(int(l.split()[1]) for l in status if l.startswith("VmSize:"))
        limit = kib * 1024 + {HEADROOM}
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            {call}
        except MemoryError as e:
            print("MemoryError:", e)
        else:
            print("no error")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"child died (rc={r.returncode}): {r.stderr[-2000:]}"
    assert r.stdout.startswith("MemoryError:"), r.stdout + r.stderr[-2000:]
    return r.stdout


BIG = "big = np.broadcast_to(np.ones(2**28, np.float32), (3, 2**28))  # 1 GiB, rows shared"
EMPTY_ROWS = "rows = np.empty((2**20, 0), np.float32)  # no memory"
OOM_CASES = {
    # A 1-GiB output (plus row buffers) from a 1-GiB broadcast input.
    "median of a broadcast input": (BIG, "aggkit.median(big)"),
    "mean of a broadcast input": (BIG, "aggkit.mean(big)"),
    "trimmed mean rows": (BIG, "_core.trimmed_mean(big, 1, 'raise', True)"),
    "centered clipping from zero": (BIG, "aggkit.centered_clipping(big, tau=1.0, iters=1)"),
    # The n x n distance matrix of 2**20 rows would take 8 TiB.
    "krum of 2**20 empty rows": (EMPTY_ROWS, "aggkit.krum(rows, f=1)"),
    "pairwise distances": (EMPTY_ROWS, "_core.pairwise_sq_distances(rows)"),
    # 2**28 empty rows: their views alone take 4 GiB.
    "row views": ("rows = np.empty((2**28, 0), np.float32)", "aggkit.median(rows)"),
    # Offsets for 2**40 sets (8 TiB), from one index value or from dim_size.
    "segment index 2**40": ("", "aggkit.monoid.segment_reduce(np.ones((2, 1)), 'sum', index=[0, 2**40])"),
    "segment dim_size 2**40": (
        "",
        "aggkit.monoid.segment_reduce(np.ones((2, 1)), 'sum', index=[0, 1], dim_size=2**40)",
    ),
    "segment dim_size 2**62": (
        "",
        "aggkit.monoid.segment_reduce(np.ones((2, 1)), 'sum', index=[0, 1], dim_size=2**62)",
    ),
    "segment_ptr dim_size 2**62": ("", "_core.segment_ptr(np.array([0, 1], np.int64), 2**62)"),
    "segment_ptr dim_size usize max": ("", "_core.segment_ptr(np.array([0, 1], np.int64), 2**64 - 1)"),
    "median_backward of 2**40 rows": (
        "lo, g = np.zeros(4, np.uint32), np.ones(4, np.float32)",
        "_core.median_backward(2**40, lo, None, g)",
    ),
    "median_backward of 2**62 rows": (
        "lo, g = np.zeros(4, np.uint32), np.ones(4, np.float32)",
        "_core.median_backward(2**62, lo, None, g)",
    ),
}


@pytest.mark.parametrize("case", sorted(OOM_CASES))
def test_buffers_that_cannot_be_allocated_raise_memory_error(case):
    out = expect_memory_error(*OOM_CASES[case])
    assert "unable to allocate" in out.lower()


def test_too_many_inputs_for_row_indices_is_refused_before_allocating():
    msg = r"at most 4294967295 inputs are supported, got n=4294967296"
    with pytest.raises(aggkit.InvalidParameterError, match=msg):
        aggkit.median(np.empty((2**32, 0), np.float32))


@pytest.mark.parametrize("n", [0, -1, 10**7, 2**63, 2**64, 10**30])
def test_thread_counts_out_of_range_are_refused(n):
    before = aggkit.get_num_threads()
    most = _core.max_threads()
    assert most >= 256
    msg = rf"set_num_threads: n must be between 1 and {most}, got n={n}"
    with pytest.raises(aggkit.InvalidParameterError, match=msg):
        aggkit.set_num_threads(n)
    assert aggkit.get_num_threads() == before


@pytest.mark.parametrize("n", [0, 10**7, 2**64 - 1])
def test_the_core_refuses_thread_counts_out_of_range_too(n):
    with pytest.raises(aggkit.InvalidParameterError, match="set_num_threads: n must be between 1 and"):
        _core.set_num_threads(n)


def test_a_panic_in_a_kernel_becomes_an_aggkit_error_naming_the_call():
    with pytest.raises(aggkit.AggkitError) as e:
        _core._panic_in_kernel("boom")
    assert isinstance(e.value, Exception)
    msg = str(e.value)
    assert msg.startswith("aggkit._core._panic_in_kernel: internal error (boom)"), msg
    assert "bug in aggkit" in msg
    # The pool that ran it still works.
    assert aggkit.median(np.arange(6.0).reshape(3, 2)).tolist() == [2.0, 3.0]


WORK_CASES = {
    # (call, the formula the message states)
    "bulyan n^3": (lambda: aggkit.bulyan(np.zeros((5000, 1)), f=0), "n^2 (n - 2f)"),
    "centered clipping iters": (
        lambda: aggkit.centered_clipping(np.ones((5, 3)), iters=10**15),
        "iters (n d + 10^4)",
    ),
    "geometric median maxiter": (
        lambda: aggkit.geometric_median(np.ones((5, 3)), maxiter=10**15),
        "maxiter (n d + 10^4)",
    ),
    "mda subsets": (lambda: aggkit.mda(np.zeros((61, 1)), f=30, max_subsets=10**30), "C(n, f) f n + 32 n^2"),
    "smea at n=5000": (lambda: aggkit.smea(np.zeros((5000, 1)), f=1), "4 C(n, f) (n - f)^3"),
    "caf at n=5000": (lambda: aggkit.caf(np.zeros((5000, 1)), f=1), "(n + 1) n^3"),
}


@pytest.mark.parametrize("case", sorted(WORK_CASES))
def test_super_quadratic_work_is_refused_before_it_starts(case):
    call, formula = WORK_CASES[case]
    with pytest.raises(aggkit.InvalidParameterError, match="more than the work limit") as e:
        call()
    msg = str(e.value)
    assert f"({formula})" in msg, msg
    assert "aggkit.set_work_limit(" in msg


def test_the_work_limit_is_a_setting():
    assert aggkit.get_work_limit() == 10**11
    x = np.random.default_rng(0).normal(size=(40, 3))
    try:
        aggkit.set_work_limit(1000)
        msg = r"bulyan: Bulyan\(f=1, .*\) on n=40, d=3 needs about 6.08e\+04 operations"
        with pytest.raises(aggkit.InvalidParameterError, match=msg):
            aggkit.bulyan(x, f=1)
        aggkit.median(x)  # rules of linear cost have no work bound
        aggkit.set_work_limit(60_800)
        aggkit.bulyan(x, f=1)
    finally:
        aggkit.set_work_limit(10**11)
    for bad in (0, -5):
        with pytest.raises(aggkit.InvalidParameterError, match="operations must be >= 1"):
            aggkit.set_work_limit(bad)
    with pytest.raises(TypeError):
        aggkit.set_work_limit(1.5)  # type: ignore[arg-type]


def test_torch_inputs_meet_the_same_work_limit():
    torch = pytest.importorskip("torch")
    with pytest.raises(aggkit.InvalidParameterError, match=r"\(iters \(n d \+ 10\^4\)\)"):
        aggkit.centered_clipping(torch.ones(5, 3), iters=10**15)
    with pytest.raises(aggkit.InvalidParameterError, match=r"\(n\^2 \(n - 2f\)\)"):
        aggkit.bulyan(torch.zeros(5000, 1), f=0)


@pytest.mark.parametrize(
    "call",
    [
        "aggkit.centered_clipping(x, tau=1e-9, iters=10**9)",
        "aggkit.bulyan(np.random.default_rng(0).normal(size=(4000, 2)), f=1)",
    ],
)
def test_ctrl_c_stops_a_long_kernel_within_a_second(call):
    code = textwrap.dedent(
        f"""
        import os, signal, sys, threading, time
        import numpy as np
        import aggkit
        aggkit.set_work_limit(10**18)
        # A shell that starts a job in the background makes it ignore SIGINT, and the child
        # would inherit that: install Python's own handler, as an interactive session has it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        x = np.random.default_rng(0).normal(size=(64, 1000))
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t = time.perf_counter()
        try:
            {call}
        except KeyboardInterrupt:
            print(f"interrupted after {{time.perf_counter() - t:.2f}} s")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("interrupted after"), r.stdout + r.stderr[-2000:]
    assert float(r.stdout.split()[2]) < 2.5, r.stdout


WEIGHTED = {
    "mean": lambda x, w: aggkit.mean(x, weights=w),
    "median": lambda x, w: aggkit.median(x, weights=w),
    "trimmed_mean": lambda x, w: aggkit.trimmed_mean(x, f=2, weights=w),
    "multi_krum": lambda x, w: aggkit.multi_krum(x, f=1, m=3, weights=w),
    "geometric_median": lambda x, w: aggkit.geometric_median(x, weights=w),
}


@pytest.mark.parametrize("rule", sorted(WEIGHTED))
@pytest.mark.parametrize("scale", [1e308, 2.0**600, 1e-320, 5e-324, 2.0**-600])
def test_equal_weights_at_the_ends_of_the_float_range_act_as_equal_weights(rule, scale):
    """Only ratios of weights matter: 1e308 each used to overflow their sum (NaN out) and
    subnormal weights lost bits in their products (1e-4 relative error)."""
    x = np.random.default_rng(3).normal(size=(7, 5))
    call = WEIGHTED[rule]
    np.testing.assert_allclose(call(x, [scale] * 7), call(x, [1.0] * 7), rtol=1e-13, atol=0)


def test_weights_in_the_normal_range_are_used_as_given():
    from aggkit import _params

    for w in ([3.0, 1.0, 0.0], [2.0**499, 1.0, 2.0**-499], [2.0**-500, 0.0, 0.0]):
        assert _params.weights(w, 3, "mean").tolist() == w
    scaled = _params.weights([1e308, 1e307, 0.0], 3, "mean")
    assert 0.5 <= scaled.max() < 1.0
    assert scaled[1] / scaled[0] == 1e307 / 1e308


RULES = {
    "mean": lambda x: aggkit.mean(x),
    "median": lambda x: aggkit.median(x),
    "trimmed_mean": lambda x: aggkit.trimmed_mean(x, f=2),
    "meamed": lambda x: aggkit.meamed(x, f=2),
    "krum": lambda x: aggkit.krum(x, f=2),
    "multi_krum": lambda x: aggkit.multi_krum(x, f=2, m=4),
    "bulyan": lambda x: aggkit.bulyan(x, f=1),
    "mda": lambda x: aggkit.mda(x, f=2),
    "smea": lambda x: aggkit.smea(x, f=2),
    "caf": lambda x: aggkit.caf(x, f=2),
    "monna": lambda x: aggkit.monna(x, f=2),
    "geometric_median": lambda x: aggkit.geometric_median(x),
    "centered_clipping": lambda x: aggkit.centered_clipping(x, tau=1.0, iters=3),
    "sign_vote": lambda x: aggkit.sign_vote(x),
    "crossmax": lambda x: aggkit.crossmax(np.asarray(x).reshape(3, 3, 4), k=2),
    "segment_reduce": lambda x: aggkit.monoid.segment_reduce(np.asarray(x), "max", index=[0] * 4 + [2] * 5),
}


def _forms(x):
    """The same 9 x 4 float64 data in every layout numpy can give it."""
    raw = b"\0" + x.tobytes()
    unaligned = np.frombuffer(raw, dtype=np.float64, offset=1).reshape(x.shape)
    assert not unaligned.flags.aligned
    ro = x.copy()
    ro.flags.writeable = False
    fortran = np.asfortranarray(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        matrix = np.matrix(x)
    return {
        "unaligned": unaligned,
        "unaligned rows": [r for r in unaligned],
        "matrix": matrix,
        "big-endian": x.astype(">f8"),
        "read-only": ro,
        "fortran": fortran,
        "reversed twice": x[::-1][::-1],
        "nested lists": x.tolist(),
        "tuple of lists": tuple(r.tolist() for r in x),
    }


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_layout_of_valid_data_gives_the_same_bits(rule):
    x = np.random.default_rng(5).normal(size=(9, 4))
    call = RULES[rule]
    want = np.asarray(call(x))
    for form, v in _forms(x).items():
        if rule in ("crossmax", "segment_reduce") and form in ("unaligned rows", "tuple of lists"):
            continue  # these take one array, not a sequence of inputs
        got = np.asarray(call(v))
        assert got.dtype.newbyteorder("=") == want.dtype, f"{rule} on {form}: {got.dtype}"
        assert got.astype(want.dtype).tobytes() == want.tobytes(), f"{rule} on {form}"


def test_memory_mapped_inputs_are_read(tmp_path):
    x = np.random.default_rng(6).normal(size=(9, 4)).astype(np.float32)
    mm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="r", shape=x.shape)
    assert aggkit.median(ro).tobytes() == aggkit.median(x).tobytes()
    assert type(aggkit.median(ro)) is np.ndarray


def test_numbers_and_nested_lists_are_read_as_numpy_reads_them():
    assert aggkit.median([1.0, 2.0, 5.0]) == 2.0
    np.testing.assert_array_equal(aggkit.median([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]), [3.0, 4.0])
    # Python ints and bools have no float dtype: read as float64, numpy's result for them
    assert aggkit.median([1, 2, 4]).dtype == np.float64
    assert float(aggkit.median([1, 2, 4, 8])) == 3.0
    with pytest.raises(TypeError, match="must hold floating-point values"):
        aggkit.median(np.array([1, 2, 3]))  # a typed int array is not converted silently
    with pytest.raises(TypeError, match="could not be read as an array of numbers"):
        aggkit.median([2**64, 1])  # beyond int64 and uint64: numpy reads objects
    with pytest.raises(aggkit.ShapeError, match="nested sequences differ in length"):
        aggkit.median([[1.0, 2.0], [3.0]])
    with pytest.raises(TypeError, match=r"mixes arrays and other values: x\[1\] is float"):
        aggkit.median([np.ones(2), 3.0])


def test_masked_arrays_are_refused_with_a_way_out():
    x = np.ma.masked_array(np.ones((5, 2)), mask=[[0, 0]] * 4 + [[1, 1]])
    for rule in ("median", "monna"):
        with pytest.raises(TypeError, match=r"masked array.*x.filled\(np.nan\)"):
            RULES[rule](x)


POISON = [1e38, -3.4e38, 1e20, 1e-30]
POISON64 = [1e150, 1e155, -1.7e308, 1e300]


@pytest.mark.parametrize("rule", ["caf", "smea", "mda", "monna", "krum", "bulyan", "median", "trimmed_mean"])
@pytest.mark.parametrize(("dtype", "values"), [(np.float32, POISON), (np.float64, POISON64)])
def test_one_client_at_the_dtype_limits_cannot_drag_the_output(rule, dtype, values):
    """One faulty input (f = 1) at any finite value: the output stays within the honest
    inputs' range (CAF returned 3.3e36 for a 1e38 client and SMEA raised LinAlgError)."""
    call = {
        "caf": lambda x: aggkit.caf(x, f=1),
        "smea": lambda x: aggkit.smea(x, f=1),
        "mda": lambda x: aggkit.mda(x, f=1),
        "monna": lambda x: aggkit.monna(x, f=1),
        "krum": lambda x: aggkit.krum(x, f=1),
        "bulyan": lambda x: aggkit.bulyan(x, f=1),
        "median": lambda x: aggkit.median(x),
        "trimmed_mean": lambda x: aggkit.trimmed_mean(x, f=1),
    }[rule]
    honest = np.random.default_rng(8).normal(size=(9, 3)).astype(dtype)
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    for v in values:
        for at in (0, 4, 9):
            x = np.insert(honest, at, np.full(3, v, dtype), axis=0)
            if rule == "monna" and at == 0:
                continue  # MoNNA trusts input idx=0
            out = np.asarray(call(x), dtype=np.float64)
            assert np.isfinite(out).all(), (rule, v, at, out)
            assert (out >= lo - 1e-6).all(), (rule, v, at, out)
            assert (out <= hi + 1e-6).all(), (rule, v, at, out)


@pytest.mark.parametrize("rule", ["caf", "smea"])
def test_torch_eigenproblems_meet_the_same_poison(rule):
    torch = pytest.importorskip("torch")
    honest = np.random.default_rng(9).normal(size=(9, 3)).astype(np.float32)
    x = np.insert(honest, 3, np.full(3, 1e38, np.float32), axis=0)
    call = getattr(aggkit, rule)
    assert np.asarray(call(torch.from_numpy(x), f=1)).tobytes() == np.asarray(call(x, f=1)).tobytes()


def test_tensors_that_are_not_one_dense_block_are_refused_clearly():
    torch = pytest.importorskip("torch")
    dense = torch.ones(3, 2)
    with pytest.raises(TypeError, match=r"median: x is a torch.sparse_coo tensor.*to_dense\(\)"):
        aggkit.median(dense.to_sparse())
    with pytest.raises(TypeError, match=r"median: x\[1\] is a torch.sparse_coo tensor"):
        aggkit.median([dense[0], dense[1].to_sparse(), dense[2]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: nested tensors are a prototype
        nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    with pytest.raises(TypeError, match="median: x is a nested tensor"):
        aggkit.median(nested)
    # meta tensors carry shapes only: the ops' fake kernels give the output's shape.
    assert aggkit.median(torch.ones(3, 2, device="meta")).shape == (2,)


@pytest.mark.parametrize("bad", [[1, 2, 3], "abc", [{"w": 1}], [{"w": None}]])
def test_aggregate_state_dicts_refuses_what_is_not_state_dicts(bad):
    pytest.importorskip("torch")
    from aggkit.torch import aggregate_state_dicts

    with pytest.raises(TypeError, match="aggregate_state_dicts: state_dicts"):
        aggregate_state_dicts(bad, "median")


@pytest.mark.parametrize(
    "call",
    [
        lambda: aggkit.centered_clipping(np.zeros((3, 0)), iters=2**63),  # n d = 0
        lambda: aggkit.centered_clipping(np.zeros((3, 0)), iters=2**64),
        lambda: aggkit.centered_clipping(np.ones((1, 1)), iters=5 * 10**10),  # fixed cost per pass
        lambda: aggkit.geometric_median(np.zeros((3, 0)), maxiter=2**64),
        lambda: aggkit.mda(np.zeros((2001, 0)), f=1000),  # a cost beyond the float range
    ],
)
def test_work_estimates_count_each_pass_and_any_size(call):
    with pytest.raises(aggkit.InvalidParameterError, match="more than the work limit"):
        call()


def test_huge_but_harmless_integers_are_not_bare_overflow_errors():
    x = np.random.default_rng(12).normal(size=(7, 2))
    np.testing.assert_array_equal(aggkit.mda(x, f=1, max_subsets=2**64), aggkit.mda(x, f=1))
    with pytest.raises(aggkit.InvalidParameterError, match=r"dim_size must be an int in \[0, 2\*\*63\)"):
        aggkit.monoid.segment_reduce(np.ones((4, 2)), "sum", index=[0, 0, 0, 1], dim_size=2**64)


def test_tree_schedules_too_large_to_allocate_raise_memory_error():
    expect_memory_error("", "aggkit.monoid.tree_schedule(rows=2**40, ptr=[0, 2**40])")


def test_clipping_norms_of_an_output_too_large_to_allocate_raise_memory_error():
    expect_memory_error(
        "big = np.broadcast_to(np.ones(2**28, np.float32), (7, 2**28))",
        "aggkit.rule('clipping>mean')(big)",
    )


def test_numpy_integers_are_ints_and_booleans_are_not():
    before = aggkit.get_num_threads()
    aggkit.set_num_threads(np.int64(before))
    aggkit.set_work_limit(np.int64(10**11))
    assert aggkit.get_work_limit() == 10**11
    for bad in (True, 1.5, "3"):
        with pytest.raises(TypeError, match="must be an int"):
            aggkit.set_num_threads(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="weights must be numbers, got booleans"):
        aggkit.mean(np.ones((3, 2)), weights=[True, False, True])


def test_mda_at_large_n_with_small_f_is_within_the_work_limit():
    # C(2000, 2) subsets, each diameter among the first 2 n pairs: about 8e9 operations. The
    # estimate must not refuse what runs in well under a second.
    x = np.random.default_rng(13).normal(size=(2000, 3))
    x[:2] += 100.0
    out = aggkit.mda(x, f=2)
    np.testing.assert_allclose(out, x[2:].mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize(
    "rule", ["multi_krum", "meamed", "geometric_median", "nnm>trimmed_mean", "arc>trimmed_mean"]
)
@pytest.mark.parametrize(("dtype", "values"), [(np.float32, POISON), (np.float64, POISON64)])
def test_the_other_robust_rules_meet_the_same_poison(rule, dtype, values):
    """The same single faulty input for the rules the test above leaves out (the float64
    geometric median raised an internal "mean: ... weights sum to 0" once distances overflowed)."""
    call = {
        "multi_krum": lambda x: aggkit.multi_krum(x, f=1, m=3),
        "meamed": lambda x: aggkit.meamed(x, f=1),
        "geometric_median": lambda x: aggkit.geometric_median(x),
        "nnm>trimmed_mean": lambda x: aggkit.rule("nnm>trimmed_mean", f=1)(x),
        "arc>trimmed_mean": lambda x: aggkit.rule("arc>trimmed_mean", f=1)(x),
    }[rule]
    honest = np.random.default_rng(8).normal(size=(9, 3)).astype(dtype)
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    for v in values:
        x = np.insert(honest, 4, np.full(3, v, dtype), axis=0)
        out = np.asarray(call(x), dtype=np.float64)
        assert np.isfinite(out).all(), (v, out)
        assert (out >= lo - 1e-6).all(), (v, out)
        assert (out <= hi + 1e-6).all(), (v, out)


def test_geometric_median_distances_beyond_float64_squares_keep_their_weights():
    # 1e155 squares to inf, though every distance (~1e155) is a float64: the weights must not
    # all become 0, whatever the start.
    x = np.random.default_rng(3).normal(size=(9, 3))
    x = np.insert(x, 2, np.full(3, 1e155), axis=0)
    for init in ("mean", "median", "zero"):
        out, info = aggkit.geometric_median(x, init=init, return_info=True)
        assert np.isfinite(out).all(), init
        assert info.weights[2] > 0.0, init


def test_float32_krum_distances_hold_any_finite_float32():
    """float32 squares overflow above ~1.8e19 and lose bits below ~1e-19: such pairs are summed
    in float64, so Krum picks what float64 arithmetic on the same values picks."""
    rng = np.random.default_rng(4)
    for scale, spread in [(1e20, 1.0), (1.0, 1e-25), (3e38, 1e-3)]:
        x = (rng.normal(size=(9, 6)) * spread + rng.normal(size=6)) * scale
        x32 = np.clip(x, -3.4e38, 3.4e38).astype(np.float32)
        _, sel = aggkit.krum(x32, f=2, return_selection=True)
        _, ref = aggkit.krum(x32.astype(np.float64), f=2, return_selection=True)
        assert sel.indices == ref.indices, (scale, spread)
        np.testing.assert_allclose(sel.scores, ref.scores, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_averages_of_identical_values_are_those_values(dtype):
    """Bit for bit, signed zeros included (a float64 quotient rounded 1 ulp off in ~9 % of
    cases; a sum started at +0.0 turned -0.0 into +0.0)."""
    rng = np.random.default_rng(6)
    v = rng.normal(size=501).astype(dtype) * 10.0 ** rng.integers(-30, 30, size=501)
    v[:7] = -0.0
    v[7] = 0.0
    x = np.tile(v, (11, 1))
    w = rng.uniform(0.1, 3.0, size=11)
    for out in [
        aggkit.mean(x),
        aggkit.mean(x, weights=w),
        aggkit.trimmed_mean(x, f=3),
        aggkit.trimmed_mean(x, f=3, weights=w),
        aggkit.meamed(x, f=3),
        aggkit.median(x),
        aggkit.krum(x, f=3),
        aggkit.multi_krum(x, f=3, m=4),
        aggkit.bulyan(x, f=2),
    ]:
        assert out.tobytes() == v.tobytes()


def test_clipping_bounds_rows_whose_norm_is_beyond_float64():
    """A finite float64 row of norm above 1.8e308 was passed through unclipped (its norm was
    +inf, taken for a non-finite row)."""
    x = np.random.default_rng(5).normal(size=(7, 4))
    x[2] = [1e308, -1e308, 1e308, 1e308]
    x[5] = 1e200
    out = aggkit.Clipping(c=2.0)(x)
    norms = np.sqrt(np.sum(np.square(out), axis=1))
    np.testing.assert_allclose(norms[[2, 5]], [2.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(out[2], [1.0, -1.0, 1.0, 1.0], rtol=1e-12)
    arc = aggkit.ARC(f=2)(x)
    assert np.isfinite(arc).all()
    assert np.abs(arc[[2, 5]]).max() < np.abs(x[[0, 1, 3, 4, 6]]).max() * 4


def test_torch_clipping_matches_numpy_beyond_float64():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(5).normal(size=(7, 4))
    x[2] = [1e308, -1e308, 1e308, 1e308]
    x[5] = 1e200
    for pre in (aggkit.Clipping(c=2.0), aggkit.ARC(f=2), aggkit.Clipping(c=1e3)):
        np.testing.assert_allclose(pre(torch.from_numpy(x)).numpy(), pre(x), rtol=1e-14, atol=0)
    t = torch.from_numpy(x[[0, 1, 3]]).requires_grad_()
    aggkit.ARC(f=1)(t).sum().backward()
    assert torch.isfinite(t.grad).all()


def test_centered_clipping_moves_by_tau_towards_rows_beyond_float64():
    x = np.zeros((4, 3))
    x[0] = 1e308
    out = aggkit.centered_clipping(x, tau=3.0**0.5, iters=1)
    np.testing.assert_allclose(out, [0.25, 0.25, 0.25], rtol=1e-14)


@pytest.mark.parametrize("rule", ["mda", "smea", "caf"])
def test_a_far_input_cannot_hide_a_near_one(rule):
    """Found by the property suite: one input beyond float64's squares and one moderate outlier.
    Scaling the inputs down to fit the far one flushed every other distance to zero, and the
    moderate outlier then tied with the honest inputs."""
    x = np.array([[0.015625], [0.015625], [-15.625], [0.015625], [4.49423284e307]])
    for perm in ([0, 1, 2, 3, 4], [0, 1, 3, 2, 4], [4, 2, 0, 1, 3]):
        assert getattr(aggkit, rule)(x[perm], f=2).tolist() == [0.015625]


def test_long_lists_of_rows_of_one_buffer_reach_the_core_as_one_view():
    """n views of one buffer cost O(n^2) in rust-numpy's borrow checks (100,000 rows of a
    (100000, 2) array took 35 s as a list, MoNNA on the array 75 s): rows at equal steps
    become one strided view of the same memory, scattered picks one small copy."""
    from aggkit._numpy._input import ONE_VIEW_MIN, prepare, rows_for_core

    x = np.random.default_rng(1).normal(size=(5000, 3))
    for rows in (list(x), list(x[::-3]), list(x[1::2])):
        v = rows_for_core([r.reshape(-1) for r in rows])
        assert isinstance(v, np.ndarray)
        assert np.shares_memory(v, x)
        assert np.array_equal(v, np.stack(rows))
        assert aggkit.median(rows).tobytes() == aggkit.median(np.stack(rows)).tobytes()
    scattered = [x[i] for i in np.random.default_rng(2).permutation(ONE_VIEW_MIN)]
    assert isinstance(rows_for_core(scattered), list)
    other = [np.ones(3) for _ in range(ONE_VIEW_MIN)]  # separate buffers, never one view
    assert isinstance(rows_for_core(other), list)
    p = prepare(x, "monna")
    picked = p.take([i for i in range(5000) if i % 7])
    assert isinstance(picked, np.ndarray)
    assert np.array_equal(picked, x[[i for i in range(5000) if i % 7]])
    assert aggkit.monna(x, f=10).tobytes() == aggkit.monna(list(x), f=10).tobytes()
