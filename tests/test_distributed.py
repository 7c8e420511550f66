"""aggkit.distributed: robust all-reduce and DDP hooks across real gloo process groups on CPU."""

import socket
import time

import aggkit
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

if not dist.is_available():
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)

import dist_worker  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: A test whose workers have not all finished by then fails instead of blocking the suite.
TIMEOUT_S = 60


def spawn(fn, world, tmp_path, *args, timeout=TIMEOUT_S):
    """Run ``fn(rank, world, port, out, *args)`` in ``world`` processes; fail after ``timeout`` s."""
    ctx = mp.start_processes(
        fn, args=(world, free_port(), str(tmp_path), *args), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            alive = [rank for rank, p in enumerate(ctx.processes) if p.is_alive()]
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                p.join()
            pytest.fail(f"{fn.__name__}: ranks {alive} still running after {timeout} s (a hang)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


def bitwise(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize(("world", "d"), [(4, 10), (3, 7)])
def test_robust_all_reduce_every_rule_both_modes(world, d, tmp_path):
    ranks = spawn(dist_worker.all_reduce_worker, world, tmp_path, d)
    stacked = torch.stack([dist_worker.contribution(r, d) for r in range(world)])
    assert "cannot run sharded" in ranks[0].pop(("mean", True))  # robust mean drops whole inputs
    for (name, sharded), (y, idx) in ranks[0].items():
        for other in ranks[1:]:  # every rank holds the same bits
            assert bitwise(other[(name, sharded)][0], y), (name, sharded)
        rule = dist_worker.RULES[name]
        expected, sel = rule.aggregate(stacked)
        y = y.reshape(-1)
        if rule.coordinate_wise or sel is None:
            assert bitwise(y, expected), (name, sharded)  # sharding changes nothing per coordinate
        else:
            assert idx.tolist() == sel.indices.tolist(), (name, sharded)
            torch.testing.assert_close(y, expected, rtol=1e-6, atol=0)
            if not sharded:
                assert bitwise(y, expected)
        if name != "mean":
            assert 0 not in (idx.tolist() if idx is not None else [])
            assert torch.isfinite(y).all()
            assert (y - torch.arange(1, d + 1)).abs().max() < 0.1, (name, sharded)


def test_robust_all_reduce_runs_the_triton_kernels_under_the_interpreter(tmp_path, monkeypatch):
    # The CUDA path of the collective (Triton kernels), on gloo with CPU tensors: the ranks run
    # the kernels in Triton's interpreter and get the Rust core's bits.
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("AGGKIT_TRITON", "interpret")
    world, d = 3, 7
    ranks = spawn(dist_worker.triton_all_reduce_worker, world, tmp_path, d, timeout=180)
    monkeypatch.delenv("AGGKIT_TRITON")
    stacked = torch.stack([dist_worker.contribution(r, d) for r in range(world)]).numpy()
    for r in ranks:
        assert r.pop("calls") == ["median", "pairwise_sq_distances", "trimmed_mean"]
        for (name, _), y in r.items():
            want = torch.from_numpy(dist_worker.RULES[name](stacked))
            assert bitwise(y.reshape(-1), want), name


@pytest.mark.parametrize(
    ("rule", "sharded"), [("median", False), ("trimmed_mean", True), ("krum", False), ("multi_krum", True)]
)
def test_ddp_hook_equals_the_rule_on_local_gradients(rule, sharded, tmp_path):
    world = 4
    ranks = spawn(dist_worker.hook_reference_worker, world, tmp_path, rule, sharded)
    r = dist_worker.RULES[rule]
    for step in range(3):
        grads = [ranks[k][step][1] for k in range(world)]
        for k in range(1, world):
            assert all(bitwise(a, b) for a, b in zip(grads[0], grads[k], strict=True))
        local = [torch.cat([t.reshape(-1) for t in ranks[k][step][0]]) for k in range(world)]
        got = torch.cat([t.reshape(-1) for t in grads[0]])
        if r.coordinate_wise:
            assert bitwise(got, r(local))
        else:
            # Bucket order is not parameter order: compare as multisets of coordinates per selection.
            _, sel = r.aggregate(local)
            expected = aggkit.torch.mean([local[i] for i in sel.indices.tolist()], nonfinite="propagate")
            torch.testing.assert_close(got.sort().values, expected.sort().values, rtol=1e-6, atol=1e-7)
            assert 0 not in sel.indices.tolist()


@pytest.mark.parametrize(("rule", "sharded"), [("median", False), ("krum", False), ("trimmed_mean", True)])
def test_ddp_training_with_a_byzantine_rank(rule, sharded, tmp_path):
    world, steps = 4, 40
    ranks = spawn(dist_worker.ddp_worker, world, tmp_path, rule, sharded, steps)
    for k in range(1, world):  # replicas never drift
        assert all(bitwise(a, b) for a, b in zip(ranks[0]["params"], ranks[k]["params"], strict=True))
    honest_loss = [sum(ranks[k]["losses"][-5:]) / 5 for k in range(1, world)]
    first = [ranks[k]["losses"][0] for k in range(1, world)]
    assert max(honest_loss) < 0.5 * min(first)  # converges despite rank 0
    if rule == "krum":
        assert all(0 not in kept for kept in ranks[0]["kept"])


def test_plain_all_reduce_diverges_with_the_same_byzantine_rank(tmp_path):
    ranks = spawn(dist_worker.ddp_worker, 4, tmp_path, "allreduce", False, 10)
    last = ranks[1]["losses"][-1]
    assert not last < 10 * ranks[1]["losses"][0]  # NaN or blown up


def test_errors():
    from aggkit.distributed import RobustHookState, robust_all_reduce

    assert RobustHookState(aggkit.Median(), sharded=True).sharded

    class Odd(aggkit.Rule):
        name = "odd"
        params = ()

    with pytest.raises(aggkit.InvalidParameterError, match="cannot run sharded"):
        RobustHookState(Odd(), sharded=True)
    with pytest.raises(aggkit.InvalidParameterError, match="unknown rule"):
        RobustHookState("nope")
    with pytest.raises(aggkit.InvalidParameterError, match=r"cannot run sharded.*Krum"):
        RobustHookState(aggkit.Mean(), sharded=True)
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        robust_all_reduce([1.0, 2.0], "median")


# ---------------------------------------------------------------------------------------------
# Faulty ranks: the rule handles what it can, the rest is the same error on every rank.

FAULTY_WORLD, FAULTY_D = 3, 9  # shards of 3: rank 0's bad values (coordinates 0, 1) are in shard 0


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """One process group runs every faulty-rank scenario (spawning costs seconds, not the work)."""
    return spawn(dist_worker.faulty_rank_worker, FAULTY_WORLD, tmp_path_factory.mktemp("faulty"), FAULTY_D)


def test_a_rank_sending_nonfinite_or_huge_values(faulty):
    world, d = FAULTY_WORLD, FAULTY_D
    for key, outcome in faulty[0]["nonfinite"].items():
        bad, dtype, name, sharded = key
        for other in faulty[1:]:  # every rank: the same bits, or the same error
            theirs = other["nonfinite"][key]
            assert theirs[0] == outcome[0], (key, theirs)
            if outcome[0] == "ok":
                assert bitwise(theirs[1], outcome[1]), key
            else:
                assert theirs[1] == outcome[1], key
        dt = getattr(torch, dtype.removeprefix("torch."))
        x = torch.stack([dist_worker.attacked(r, d, bad, dt) for r in range(world)])
        rule = dist_worker.NONFINITE_RULES[name]
        finite = dt == torch.float64 and bad == "huge"  # 1e308 is inf in float32
        if name.endswith("_raise") and not finite:
            assert outcome[:2] == ("error", "NonFiniteError"), (key, outcome)
            continue
        assert outcome[0] == "ok", (key, outcome)
        y, expected = outcome[1], rule(x)
        if rule.coordinate_wise or not sharded:
            assert bitwise(y, expected), key  # exactly the rule on the stacked inputs
        else:
            torch.testing.assert_close(y, expected, rtol=1e-6, atol=0)
        if name != "mean" or not finite:  # the robust rules leave rank 0's values out
            assert torch.isfinite(y).all(), key
            assert (y.double() - torch.arange(1, d + 1)).abs().max() < 0.1, key
    for r in range(world):
        assert faulty[r]["after"].tolist() == [1.0] * 3  # the group still works


def test_too_few_ranks_for_the_rule_are_refused_before_communicating(faulty):
    for rank in faulty:
        w = rank["world"]
        assert w["all_reduce"][:2] == ("error", "TooFewInputsError")
        assert "needs at least 5 inputs, one per rank, but the group has 3 ranks" in w["all_reduce"][2]
        assert w["pipeline"][:2] == ("error", "TooFewInputsError")
        assert w["hook"][:2] == ("error", "TooFewInputsError")
        assert w["hook"][2].startswith("register_hook: Krum(f=1")
        assert w["hook_trimmed"][:2] == ("error", "TooFewInputsError")
        assert w["ok"] == ("ok", [1.0] * 4)
    # the group still works afterwards: nothing was left half-sent
    assert all(r["after"].tolist() == [1.0] * 3 for r in faulty)


def test_a_refusal_on_one_ranks_shard_is_raised_on_every_rank(faulty):
    # Median(nonfinite="raise"), sharded: only rank 0's shard holds the NaN, so only rank 0's
    # rule refuses; rank 0 raises the rule's error, the others the same class naming rank 0.
    key = ("nan", "torch.float32", "median_raise", True)
    first = faulty[0]["nonfinite"][key]
    assert first[:2] == ("error", "NonFiniteError")
    assert "[0]" in first[2]
    for r in (1, 2):
        theirs = faulty[r]["nonfinite"][key]
        assert theirs[:2] == ("error", "NonFiniteError")
        assert "failed on the shard of rank 0 (NonFiniteError there); every rank raises" in theirs[2]
    gathered = faulty[1]["nonfinite"][("nan", "torch.float32", "median_raise", False)]
    assert "[0]" in gathered[2]  # every rank ran the rule on every rank's values


def test_ranks_passing_different_tensors_raise_on_every_rank_without_a_hang(faulty):
    describe = {
        "numel": ("shape (10,) torch.float32 (10 values", "shape (12,) torch.float32 (12 values"),
        "dtype": ("shape (10,) torch.float32", "shape (10,) torch.float64"),
        "shape": ("shape (2, 5) torch.float32", "shape (5, 2) torch.float32"),
        "ndim": ("shape (10,) torch.float32", "shape (10, 1) torch.float32"),
        "mode": ("shape (10,) torch.float32 (10 values)", "shape (10,) torch.float32 (10 values, sharded)"),
    }
    assert len(faulty[0]["mismatch"]) == 20
    for key, outcome in faulty[0]["mismatch"].items():
        case, _, sharded = key
        for r in range(FAULTY_WORLD):
            theirs = faulty[r]["mismatch"][key]
            assert theirs[:2] == ("error", "ShapeError"), (key, r, theirs)
            assert theirs[2] == outcome[2], key  # the same message on every rank
        majority, odd = describe[case]
        if case == "mode" and sharded:
            majority, odd = odd, majority
        assert f"ranks 0, 2: {majority}" in outcome[2], outcome[2]
        assert f"rank 1: {odd}" in outcome[2], outcome[2]


def test_ddp_hook_with_a_rank_sending_nan_or_huge_gradients(faulty):
    for name, steps in faulty[0]["hook"].items():
        for step, outcome in enumerate(steps):  # rank 0 sends NaN, then 1e30, then honest values
            for r in range(1, FAULTY_WORLD):
                theirs = faulty[r]["hook"][name][step]
                assert theirs[0] == outcome[0], (name, step, theirs)
                if outcome[0] == "ok":
                    assert all(bitwise(a, b) for a, b in zip(outcome[1], theirs[1], strict=True)), name
            if name.startswith("median_raise") and step == 0:
                assert outcome[0] == "error", (name, step, outcome)
                assert "NonFiniteError" in outcome[1] + outcome[2], (name, step, outcome)
            else:  # the robust rules leave rank 0 out; after a refused step training goes on
                assert outcome[0] == "ok", (name, step, outcome)
                assert all(torch.isfinite(g).all() for g in outcome[1]), (name, step)


def test_a_rank_that_skips_the_collective_is_a_timeout_not_a_hang(faulty):
    # Documented, not detected: the others wait for the group's timeout (2 s here) and raise.
    for r in (0, 2):
        outcome, elapsed = faulty[r]["absent"]
        assert outcome[0] == "error", outcome
        assert 1.5 < elapsed < 30, elapsed


def test_the_harness_fails_a_hanging_test_instead_of_waiting(tmp_path):
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"ranks \[0\] still running after 1 s \(a hang\)"):
        spawn(dist_worker.sleeper, 1, tmp_path, timeout=1)
    assert time.monotonic() - start < 30


def test_fsdp_gradients_are_the_rule_over_the_ranks_local_gradients(tmp_path):
    ranks = spawn(dist_worker.fsdp_worker, 3, tmp_path)
    local = [torch.cat([g.reshape(-1) for g in r["local"]]) for r in ranks]
    for name, rule in (("median", aggkit.Median()), ("trimmed_mean", aggkit.TrimmedMean(f=1))):
        want = aggkit.torch.median(torch.stack(local)) if name == "median" else rule(torch.stack(local))
        for r in ranks:
            status, grads = r[name]
            assert status == "ok", grads
            got = torch.cat([g.reshape(-1) for g in grads])
            assert bitwise(got, want)  # every rank: the rule over the ranks, bit for bit
    assert torch.stack(local).abs().max() > 1e3  # rank 0 was Byzantine, the aggregate is not
    assert want.abs().max() < 1e3
    for r in ranks:  # refusals: the same class on every rank, no rank left waiting
        assert r["raise"][:2] == ("error", "NonFiniteError")
        assert r["too_few"][:2] == ("error", "TooFewInputsError")
        assert "needs at least 5 inputs, one per rank, but the group has 3 ranks" in r["too_few"][2]
        assert r["krum"][:2] == ("error", "InvalidParameterError")
        assert "not coordinate-wise" in r["krum"][2]
        assert r["plain"][:2] == ("error", "InvalidParameterError")
        assert "no fully_shard module" in r["plain"][2]
        assert r["hsdp"][:2] == ("error", "InvalidParameterError")
        assert "2-d mesh (3, 1)" in r["hsdp"][2]
        assert r["after"].tolist() == [1.0] * 3  # the group still works


def test_rules_that_need_a_servers_update_are_refused():
    from aggkit.distributed import RobustHookState, robust_all_reduce

    with pytest.raises(aggkit.InvalidParameterError, match="register_hook: FLTrust"):
        RobustHookState("fltrust")
    with pytest.raises(aggkit.InvalidParameterError, match="robust_all_reduce: FLTrust"):
        robust_all_reduce(torch.ones(3), "fltrust")
