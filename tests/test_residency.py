"""Device residency: the torch paths for non-CPU tensors read nothing of size d on the host.

A CUDA tensor must stay on its device from input to output and through the backward: the only
reads to the host allowed are the small decisions (DETOX's ``(g, r, r, s)`` vote table, an
``n x n`` selection, index structures the caller passed). These tests run the device code on
CPU tensors (``force_native``) and record every host read: a tensor turned into numpy, a
Python number or list, ``.cpu()``, or a data-dependent shape (``nonzero``). A read whose size
grows with ``d``, or a count of reads that grows with the number of groups or segments, fails.
A GPU run adds ``torch.cuda.set_sync_debug_mode`` on top (scripts/gpu_check.sh).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import pytest

torch = pytest.importorskip("torch")

import aggkit.torch as at  # noqa: E402

#: Tensor methods that read device memory on the host (``.to("cpu")`` is not told apart from
#: ``.to(device)`` on CPU tensors; every path turns what it reads into numpy or Python values,
#: which are caught).
_READS = ("numpy", "cpu", "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


@contextlib.contextmanager
def host_reads() -> Iterator[list[tuple[str, int]]]:
    """Record ``(method, numel)`` for every host read of a tensor while the block runs."""
    reads: list[tuple[str, int]] = []
    saved = {name: torch.Tensor.__dict__.get(name) for name in _READS}

    def recorder(name: str, orig: Callable[..., object]) -> Callable[..., object]:
        def read(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            reads.append((name, self.numel()))
            return orig(self, *args, **kwargs)

        return read

    for name in _READS:
        setattr(torch.Tensor, name, recorder(name, getattr(torch.Tensor, name)))
    orig_nonzero = torch.nonzero

    def nonzero(t: torch.Tensor, *args: object, **kwargs: object) -> object:
        reads.append(("torch.nonzero", t.numel()))
        return orig_nonzero(t, *args, **kwargs)

    torch.nonzero = nonzero
    try:
        yield reads
    finally:
        torch.nonzero = orig_nonzero
        for name, value in saved.items():
            if value is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, value)


def test_the_recorder_sees_reads_inside_custom_ops_and_backward():
    # The harness itself: a read inside a custom op's body and in a backward are recorded.
    x = torch.randn(6, 40, requires_grad=True)
    with host_reads() as reads:
        y = at.median(x)  # Rust on CPU: the op hands the core a numpy view
        y.sum().backward()
    assert ("numpy", 240) in reads
    with at.force_native(), host_reads() as reads:
        torch.ones(3).sum().item()
    assert reads == [("item", 1)]


def _reads(run: Callable[[int], object], d: int) -> list[tuple[str, int]]:
    with at.force_native(), host_reads() as reads:
        run(d)
    return reads


def _small_and_fixed(run: Callable[[int], object], limit: int, most: int) -> list[tuple[str, int]]:
    """The reads of ``run(d)``: the same at two ``d``, at most ``most`` of them, none over ``limit``."""
    small, large = _reads(run, 48), _reads(run, 3000)
    assert small == large, (small, large)
    assert len(large) <= most, large
    assert all(size <= limit for _, size in large), large
    return large


def _detox(d: int, vote: str = "exact", segments: int = 5, device: str = "cpu") -> None:
    g, r = 6, 3
    base = torch.randn(g, d, dtype=torch.float64, device=device)
    x = base.repeat_interleave(r, dim=0)
    x[1] += 1.0  # outvoted
    x[3:5] = 2.0  # colluders win group 1
    x.requires_grad_()
    cuts = [d // 5, d // 2, d // 2, d - 1][: segments - 1]  # five segments, one empty
    y = at.detox(x, q=2, segments=cuts, vote=vote, outer="median", inner="mean")
    y.sum().backward()


@pytest.mark.parametrize("vote", ["exact", "approx"])
def test_detox_reads_one_vote_table(vote):
    # The vote's comparisons run on the device and one (g, r, r, s) table comes to the host
    # (g = 6, r = 3, s = 5: 270 entries); the rest are the group list, the winners, the
    # agreement and stage 2's decisions. None grows with d, and their number does not grow with
    # the number of segments (one read per group and segment would).
    reads = _small_and_fixed(lambda d: _detox(d, vote), limit=6 * 3 * 3 * 5, most=20)
    assert ("numpy", 6 * 3 * 3 * 5) in reads
    assert len(_reads(lambda d: _detox(d, vote, segments=1), 48)) == len(reads)


@pytest.mark.parametrize("reducer", ["kth", "median"])
@pytest.mark.parametrize("nonfinite", ["propagate", "robust"])
def test_crossmax_stays_on_the_device(reducer, nonfinite):
    def run(c: int) -> None:
        z = torch.randn(4, 7, c, requires_grad=True)
        k = 3 if reducer == "kth" else None
        at.crossmax(z, k=k, reducer=reducer, nonfinite=nonfinite).sum().backward()

    assert _small_and_fixed(run, limit=0, most=0) == []


def test_crossmax_raise_reads_one_decision():
    def run(c: int) -> None:
        at.crossmax(torch.randn(4, 7, c), nonfinite="raise")

    _small_and_fixed(run, limit=1, most=1)


def _crossmax(c: int, device: str = "cpu") -> None:
    z = torch.randn(4, 7, c, device=device, requires_grad=True)
    at.crossmax(z, k=3).sum().backward()


def _segments(h: int, op: str = "sum", device: str = "cpu") -> None:
    ptr = torch.tensor([0, 3, 3, 7, 12], device=device)
    x = torch.randn(12, h, dtype=torch.float64, device=device, requires_grad=True)
    at.segment_reduce(x, ptr=ptr, op=op).sum().backward()


@pytest.mark.parametrize("op", ["sum", "mean", "prod", "max", "min", "logsumexp"])
def test_segment_reduce_reads_only_the_offsets(op):
    # The set structure (ptr, 5 entries) is read to build the schedule (three times for prod:
    # forward, backward, and its product tree); the values and gradients stay on the device.
    _small_and_fixed(lambda h: _segments(h, op), limit=5, most=6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("run", [_detox, _crossmax, _segments])
def test_cuda_synchronisations_do_not_grow_with_d(run):
    # On a GPU: torch's own count of synchronising calls, forward and backward.
    def syncs(d: int) -> int:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(d, device="cuda")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    run(48, device="cuda")  # the first call on a device probes Triton once
    few = syncs(48)
    assert few == syncs(3000) == syncs(100_000)
    assert few <= 20


def test_robust_rules_on_device_read_only_selections():
    # median and trimmed mean read nothing; the mean reads which of its n inputs it drops
    # (a decision of n entries); Krum its n x n decision at most.
    def run(d: int) -> None:
        x = torch.randn(9, d, requires_grad=True)
        (at.median(x) + at.trimmed_mean(x, f=2)).sum().backward()

    assert _small_and_fixed(run, limit=0, most=0) == []

    def mean(d: int) -> None:
        at.mean(torch.randn(9, d, requires_grad=True)).sum().backward()

    _small_and_fixed(mean, limit=9, most=2)

    def krum(d: int) -> None:
        at.multi_krum(torch.randn(9, d, dtype=torch.float64, requires_grad=True), f=2).sum().backward()

    _small_and_fixed(krum, limit=9 * 9, most=4)


def test_vote_table_is_bounded_whatever_d():
    # The reads do not grow with d even when d is far above the vote's block of columns.
    reads = _reads(lambda d: _detox(d), 200_000)
    assert max(size for _, size in reads) == 6 * 3 * 3 * 5
