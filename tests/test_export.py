"""torch.export of every module with dynamic input and feature dimensions (aggkit.torch.nn)."""

from __future__ import annotations

import aggkit
import pytest

torch = pytest.importorskip("torch")
from aggkit.torch import nn as ann  # noqa: E402
from torch.export import Dim, export  # noqa: E402

N = Dim("n", min=9, max=4096)
D = Dim("d", min=2, max=1 << 30)

#: Parameters of the rules that need some (each rule is exported as aggkit.torch.nn.Aggregate).
PARAMS = {
    "bulyan": {"f": 1},
    "caf": {"f": 1},
    "centered_clipping": {"tau": 1.0, "iters": 3},
    "bucketing_cc": {"seed": 0},
    "detox": {"q": 3},
    "dnc": {"f": 1},
    "krum": {"f": 1},
    "mda": {"f": 1},
    "meamed": {"f": 1},
    "monna": {"f": 1},
    "multi_krum": {"f": 1},
    "nnm_cc": {"f": 1},
    "nnm_trimmed_mean": {"f": 1},
    "smea": {"f": 1},
    "trimmed_mean": {"f": 1},
}
#: Every rule but the pipeline and those that need the server's update each call (eager only).
RULES = [
    name
    for name in aggkit.list_rules()
    if name != "pipeline" and not aggkit.registry.rule_class(name)._uses_reference
]
#: Rules that draw new random numbers at every call: exported, not compared call for call.
RANDOM = {"bucketing_cc"}
PIPELINES = ["nnm>trimmed_mean", "arc>median", "bucketing>median", "clipping>mean"]


def inputs(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x.repeat_interleave(3, dim=0)[:n] if n % 3 == 0 else x  # DETOX: groups of 3 agree


def exported_equals_eager(module: torch.nn.Module, example: tuple, dynamic: tuple, new: tuple) -> None:
    program = export(module, example, dynamic_shapes=dynamic)
    got, want = program.module()(*new), module(*new)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", RULES)
def test_every_rule_exports_with_dynamic_n_and_d(name):
    module = ann.Aggregate(name, **PARAMS.get(name, {}))
    if name in RANDOM:
        program = export(module, (inputs(9, 5, 0),), dynamic_shapes=({0: N, 1: D},))
        assert program.module()(inputs(12, 11, 1)).shape == (11,)
        return
    exported_equals_eager(module, (inputs(9, 5, 0),), ({0: N, 1: D},), (inputs(12, 11, 1),))


def test_a_rule_with_a_reference_runs_eagerly_as_a_module():
    x, g0 = inputs(9, 5, 0), torch.ones(5)
    module = ann.Aggregate("fltrust")
    assert torch.equal(module(x, reference=g0), aggkit.fltrust(x, reference=g0))
    with pytest.raises(aggkit.InvalidParameterError, match="needs reference"):
        module(x)
    with pytest.raises(aggkit.InvalidParameterError, match="does not take a reference"):
        ann.Aggregate("median")(x, reference=g0)


@pytest.mark.parametrize("spec", PIPELINES)
def test_pipelines_export(spec):
    params = {"f": 1} if spec.startswith(("nnm", "arc")) else {"s": 2} if spec.startswith("bucketing") else {}
    if spec.startswith("bucketing"):
        params["seed"] = 0
    module = ann.Aggregate(spec, **params)
    example, new = inputs(9, 5, 0), inputs(12, 11, 1)
    program = export(module, (example,), dynamic_shapes=({0: N, 1: D},))
    got = program.module()(new)
    assert got.shape == (11,)
    if not spec.startswith("bucketing"):  # bucketing draws a new permutation at every call
        assert torch.equal(got, module(new))


def test_the_named_modules_export():
    cases = [
        (ann.Mean(), (inputs(9, 5, 0),), ({0: N, 1: D},), (inputs(12, 11, 1),)),
        (ann.Median(), (torch.randn(9, 5, 3),), ({0: N, 1: D},), (torch.randn(12, 11, 3),)),
        (ann.Median(dim=1), (torch.randn(5, 9),), ({0: D, 1: N},), (torch.randn(11, 12),)),
        (ann.TrimmedMean(f=1), (inputs(9, 5, 0),), ({0: N, 1: D},), (inputs(12, 11, 1),)),
        (ann.Krum(f=1), (inputs(9, 5, 0),), ({0: N, 1: D},), (inputs(12, 11, 1),)),
        (ann.MultiKrum(f=1), (inputs(9, 5, 0),), ({0: N, 1: D},), (inputs(12, 11, 1),)),
        (ann.DETOX(q=3), (inputs(9, 5, 0),), ({1: D},), (inputs(9, 11, 1),)),
    ]
    batch, classes = Dim("batch", min=2, max=1 << 20), Dim("classes", min=2, max=1 << 16)
    cases += [
        (ann.CrossMax(k=3), (torch.randn(8, 5, 10),), ({0: batch, 2: classes},), (torch.randn(3, 5, 7),)),
        (
            ann.CrossMax(reducer="median"),
            (torch.randn(8, 5, 10),),
            ({0: batch, 2: classes},),
            (torch.randn(3, 5, 7),),
        ),
    ]
    for module, example, dynamic, new in cases:
        exported_equals_eager(module, example, dynamic, new)


def test_self_ensemble_exports_with_a_dynamic_batch():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)
    )
    module = ann.SelfEnsemble(backbone, ["1", "3"], 4, example_input=torch.randn(2, 6)).eval()
    batch = Dim("batch", min=2, max=1 << 20)
    exported_equals_eager(module, (torch.randn(8, 6),), ({0: batch},), (torch.randn(3, 6),))


def test_lcm_aggregation_exports_for_a_fixed_graph():
    from aggkit.torch.lcm import LCMAggregation

    torch.manual_seed(0)
    lcm = LCMAggregation(4, 4)
    index = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3])
    schedule = lcm.schedule(10, index, None, 5, torch.device("cpu"))

    class FixedGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lcm = lcm

        def forward(self, x):
            return self.lcm(x, index, dim_size=5, schedule=schedule)

    x = torch.randn(10, 4)
    program = export(FixedGraph(), (x,))
    assert torch.equal(program.module()(x), lcm(x, index, dim_size=5))


def test_an_exported_rule_survives_save_and_load(tmp_path):
    module = ann.Aggregate("geometric_median")
    program = export(module, (inputs(9, 5, 0),), dynamic_shapes=({0: N, 1: D},))
    path = tmp_path / "gm.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    x = inputs(20, 7, 3)
    assert torch.equal(loaded.module()(x), module(x))


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo warns at its graph breaks
def test_autograd_still_reaches_the_eager_rule_under_compile():
    module = torch.compile(ann.Aggregate("geometric_median"))
    x = inputs(9, 5, 0).requires_grad_(True)
    module(x).sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap's per-sample fallback
def test_torch_func_grad_is_torchs_documented_limit_and_autograd_grad_works():
    x = inputs(9, 5, 0)
    with pytest.raises(RuntimeError, match="functorch transforms"):  # docs/conventions.md, Torch
        torch.func.grad(lambda t: aggkit.torch.median(t).sum())(x)
    (g,) = torch.autograd.grad(aggkit.torch.median(x.requires_grad_(True)).sum(), x)
    assert g.sum() == 5  # one middle row per coordinate
    assert torch.func.vmap(aggkit.torch.median)(torch.stack([x.detach(), -x.detach()])).shape == (2, 5)


def test_each_module_keeps_its_own_random_stream_eager_or_traced():
    x = inputs(12, 5, 4)
    reference = ann.Aggregate("bucketing>median", s=2, seed=0)
    first, second = reference(x), reference(x)
    assert not torch.equal(first, second)  # a new permutation at every call
    one, other = (
        ann.Aggregate("bucketing>median", s=2, seed=0),
        ann.Aggregate("bucketing>median", s=2, seed=0),
    )
    program = export(one, (x,))  # tracing draws nothing
    assert torch.equal(program.module()(x), first)  # the program draws from `one`'s stream
    assert torch.equal(one(x), second)  # ... which eager calls continue
    assert torch.equal(other(x), first)  # another module with the same seed: its own stream


def test_export_of_a_model_with_parameters_under_grad_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), ann.Aggregate("geometric_median"))
    program = export(model, (inputs(9, 5, 0),), dynamic_shapes=({0: N},))  # grad mode on, as by default
    x = inputs(14, 5, 1)
    assert torch.equal(program.module()(x), model(x))


def test_fullgraph_compile_without_autograd():
    module = ann.Aggregate("geometric_median")
    compiled = torch.compile(module, fullgraph=True)
    x = inputs(9, 5, 0)
    with torch.no_grad():
        assert torch.equal(compiled(x), module(x))


@pytest.mark.parametrize(
    "name",
    [
        "SumAggregation",
        "MeanAggregation",
        "MaxAggregation",
        "MinAggregation",
        "ProdAggregation",
        "LogSumExpAggregation",
    ],
)
def test_graph_aggregations_export_with_dynamic_nodes_edges_and_features(name):
    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.aggr = getattr(ann, name)()

        def forward(self, x, edge_index):  # as MessagePassing calls it: dim_size = number of nodes
            return self.aggr(x[edge_index[0]], edge_index[1], dim_size=x.shape[0])

    nodes, edges, features = (
        Dim("nodes", min=2, max=1 << 20),
        Dim("edges", min=2, max=1 << 24),
        Dim("f", min=1),
    )
    layer = Layer()
    example = (torch.randn(6, 4), torch.tensor([[0, 1, 2, 3, 4, 5, 0, 2], [1, 1, 2, 2, 3, 4, 4, 4]]))
    program = export(layer, example, dynamic_shapes=({0: nodes, 1: features}, {1: edges}))
    x, edge_index = (
        torch.randn(9, 3),
        torch.tensor([[0, 1, 2, 3, 4, 5, 0, 2, 8, 7, 6], [1, 1, 2, 2, 3, 4, 4, 4, 8, 0, 0]]),
    )
    assert torch.equal(program.module()(x, edge_index), layer(x, edge_index))  # unsorted, isolated nodes


def test_graph_aggregations_export_without_dim_size():
    class Sets(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.aggr = ann.SumAggregation()

        def forward(self, x, index):  # forward itself: PyG's __call__ reads max(index) in Python
            return self.aggr.forward(x, index)

    edges = Dim("edges", min=2, max=1 << 24)
    program = export(
        Sets(),
        (torch.randn(8, 3), torch.tensor([0, 0, 1, 1, 3, 3, 3, 2])),
        dynamic_shapes=({0: edges}, {0: edges}),
    )
    x, index = torch.randn(5, 3), torch.tensor([4, 0, 0, 1, 1])
    assert torch.equal(program.module()(x, index), Sets()(x, index))
