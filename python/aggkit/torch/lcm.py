"""``LCMAggregation``: the learnable commutative monoid aggregation (docs/algorithms.md).

When PyTorch Geometric is installed the class subclasses its ``Aggregation`` (so a
``MessagePassing`` layer takes it as ``aggr=`` and ``isinstance`` checks pass); otherwise it is
a plain ``torch.nn.Module`` with the same interface. Imported on first use of
``aggkit.torch.nn.LCMAggregation``, so torch_geometric's import cost is paid only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from aggkit._params import choice
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.rules import monoid as _monoid
from aggkit.torch._pyg import SetCache, aggregation_base, check_index_beside_ptr, resolve_sets
from aggkit.torch.monoid import PADS, TreeSchedule, _float_input, _tree_reduce

__all__ = ["LCMAggregation"]


#: The fewest rows a GRU call gets (see LCMAggregation._combine_stacked).
_MIN_ROWS = 16


if TYPE_CHECKING:  # what type checkers see: PyG's class (a layer's ``aggr=`` accepts it)
    from torch_geometric.nn.aggr import Aggregation as _Base
else:
    _Base = aggregation_base()  # PyG's class when installed, else nn.Module


class LCMAggregation(_Base):  # type: ignore[misc]
    r"""Learnable commutative monoid aggregation (Ong & Veličković, LoG 2022), per-set trees.

    The binary operator is a GRU cell made commutative by averaging both orders,
    ``a ⊕ b = (GRU(a, b) + GRU(b, a)) / 2`` (input ``a``, hidden state ``b``; PyG's
    ``LCMAggregation`` uses the same construction), applied over a balanced binary tree per set:
    depth ``⌈log2 k⌉`` with ``k - 1`` combines, one batched GRU call per tree level for the
    whole batch. Associativity is not built in; :meth:`assoc_loss` is a regulariser towards it.

    Parameters
    ----------
    in_channels, out_channels : int
        Input and latent/output sizes.
    project : bool
        Apply ``Linear(in_channels, out_channels)`` and ReLU before aggregating (required when
        the sizes differ), as PyG.
    pad : {"none", "zeros_dense", "identity"}
        ``"none"`` (default): each set reduced over its own elements only, so a node's output
        does not depend on the other nodes of the batch; an empty set gives the learned
        identity if there is one, else 0. ``"zeros_dense"``: PyG's behaviour (every set padded
        with zeros to the largest set of the batch, the zeros combined like elements): use it
        to reproduce PyG's numbers (a model trained with PyG loads with ``load_state_dict``).
        ``"identity"``: each set padded with the learned identity ``e`` to a power of two.
    learn_identity : bool, optional
        Learn an identity element ``e`` (a parameter ``identity`` of size ``out_channels``,
        initialised to 0): the value of empty sets and the pad of ``pad="identity"`` (default:
        only for that mode). :meth:`identity_loss` pushes ``e ⊕ a`` towards ``a``.

    Notes
    -----
    ``forward(x, index=None, ptr=None, dim_size=None, dim=-2)`` follows PyG's aggregation
    interface, so the module can be the ``aggr`` of a ``torch_geometric.nn.MessagePassing``
    layer: when torch_geometric is installed the class subclasses its ``Aggregation``; it is
    not needed otherwise. PyG's conventions: ``ptr`` defines the sets when both ``index`` and
    ``ptr`` are given (as ``MessagePassing`` passes them for a sparse adjacency, e.g. under
    ``ToSparseTensor``); without either all rows form one set; ``dim_size`` may exceed
    ``max(index) + 1`` (empty trailing sets). ``index`` must be sorted (sort the edges by
    destination), as PyG's. The tree schedule is built in Rust in O(E) and cached: it is
    rebuilt only when a different (or modified) ``index``/``ptr`` tensor arrives (a new view of
    the same memory, such as ``edge_index[1]`` on every call, reuses it). Parameter names match
    PyG's (``lin``, ``gru_cell``); ``repr`` is one line, as PyG's.

    Examples
    --------
    >>> import torch
    >>> from aggkit.torch.nn import LCMAggregation
    >>> _ = torch.manual_seed(0)
    >>> aggr = LCMAggregation(4, 8)
    >>> x, index = torch.randn(5, 4), torch.tensor([0, 0, 0, 2, 2])
    >>> aggr(x, index, dim_size=4).shape
    torch.Size([4, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        project: bool = True,
        *,
        pad: str = "none",
        learn_identity: bool | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"LCMAggregation: {name} must be an int >= 1, got {v!r}")
        choice(pad, "pad", PADS, "LCMAggregation")
        if in_channels != out_channels and not project:
            raise InvalidParameterError(
                "LCMAggregation: inputs must be projected (project=True) when in_channels != out_channels"
            )
        if learn_identity is None:
            learn_identity = pad == "identity"
        if pad == "identity" and not learn_identity:
            raise InvalidParameterError("LCMAggregation: pad='identity' pads with the learned identity")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.project, self.pad, self.learn_identity = bool(project), pad, bool(learn_identity)
        self.lin = nn.Linear(in_channels, out_channels) if project else None
        self.gru_cell = nn.GRUCell(out_channels, out_channels)
        self.identity = nn.Parameter(torch.zeros(out_channels)) if learn_identity else None
        self._cache = SetCache()  # the tree schedule of the last index/ptr
        self._last_input: Tensor | None = None

    def reset_parameters(self) -> None:
        """Re-initialise every parameter (torch's defaults; the identity to 0)."""
        if self.lin is not None:
            self.lin.reset_parameters()
        self.gru_cell.reset_parameters()
        if self.identity is not None:
            nn.init.zeros_(self.identity)

    def _combine_stacked(self, both: Tensor, p: int) -> Tensor:
        other = torch.cat([both[p:], both[:p]])
        if 2 * p < _MIN_ROWS:
            # BLAS picks other kernels (another summation order) for a handful of rows; padding
            # the call keeps each row's result independent of how many other rows it has.
            extra = both.new_zeros((_MIN_ROWS - 2 * p, both.shape[1]))
            out = self.gru_cell(torch.cat([both, extra]), torch.cat([other, extra]))[: 2 * p]
        else:
            out = self.gru_cell(both, other)
        mixed: Tensor = (out[:p] + out[p:]) / 2
        return mixed

    def _project(self, x: Tensor) -> Tensor:
        assert self.lin is not None
        y: Tensor
        if x.shape[0] < _MIN_ROWS:  # as in _combine_stacked: results independent of the batch
            y = self.lin(torch.cat([x, x.new_zeros((_MIN_ROWS - x.shape[0], x.shape[1]))]))[: x.shape[0]]
        else:
            y = self.lin(x)
        return y.relu()

    def combine(self, a: Tensor, b: Tensor) -> Tensor:
        """The operator ``a ⊕ b`` on ``(P, out_channels)`` tensors (one GRU call)."""
        return self._combine_stacked(torch.cat([a, b]), a.shape[0])

    def schedule(
        self,
        rows: int,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        device: torch.device | None = None,
    ) -> TreeSchedule:
        """The (cached) tree schedule of these sets, in this module's padding mode.

        PyG's conventions: ``ptr`` wins when both are given; neither: one set of ``rows``
        elements. ``device`` defaults to that of ``index``/``ptr``.
        """
        src = ptr if ptr is not None else index
        if device is None:
            device = src.device if isinstance(src, Tensor) else torch.device("cpu")
        dev = torch.device(device)
        check_index_beside_ptr("LCMAggregation", rows, index, ptr)

        def build() -> TreeSchedule:
            p, _ = resolve_sets("LCMAggregation", rows, index, ptr, dim_size, sort=False)
            return TreeSchedule(_monoid.tree_schedule(rows, ptr=p, pad=self.pad), dev)

        return self._cache.lookup(index, ptr, (rows, dim_size, dev), build)

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
        *,
        schedule: TreeSchedule | None = None,
    ) -> Tensor:
        """Aggregate the rows of ``x`` (shape ``(E, in_channels)``) into ``(num_sets, out_channels)``."""
        x = _float_input(x, "LCMAggregation")
        if x.dim() != 2 or dim not in (0, -2):
            raise ShapeError(
                "LCMAggregation: x must have shape (E, in_channels) with dim=-2, "
                f"got {tuple(x.shape)}, dim={dim}"
            )
        if x.shape[1] != self.in_channels:
            raise ShapeError(
                f"LCMAggregation: x has {x.shape[1]} channels, expected in_channels={self.in_channels}"
            )
        if self.lin is not None:
            x = self._project(x)
        if not torch.compiler.is_compiling():  # a traced graph has no Python attributes to set
            self._last_input = x.detach()
        if schedule is None:
            schedule = self.schedule(x.shape[0], index, ptr, dim_size, x.device)
        elif schedule.rows != x.shape[0] or schedule.pad != self.pad:
            raise ShapeError(
                f"LCMAggregation: the schedule is for {schedule.rows} rows with pad={schedule.pad!r}; "
                f"x has {x.shape[0]} rows and the module pad={self.pad!r}"
            )
        s = schedule.to(x.device)
        pad_row = x.new_zeros(x.shape[1]) if self.pad == "zeros_dense" else self.identity
        return _tree_reduce(x, s, self._combine_stacked, pad_row, self.identity)

    def _rows(self, x: Tensor | None) -> Tensor:
        if x is None:
            x = self._last_input
            if x is None:
                raise InvalidParameterError("LCMAggregation: no input yet; call forward or pass x")
        elif self.lin is not None:
            x = self._project(x)
        if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] != self.out_channels:
            raise ShapeError(
                f"LCMAggregation: need rows of {self.out_channels} latent values, got {tuple(x.shape)}"
            )
        return x

    def assoc_loss(
        self, x: Tensor | None = None, num_triples: int = 256, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Associativity regulariser: mean over sampled triples of ``‖(a⊕b)⊕c - a⊕(b⊕c)‖²``.

        The triples are drawn uniformly (with replacement) from the rows of ``x`` (inputs, projected
        if ``project``) or, by default, from the latent inputs of the last :meth:`forward`
        (detached: the loss trains the operator, not the encoder). Two batched operator calls.
        The loss's exact form and weight in the paper are not pinned down here (docs/algorithms.md
        marks them unverified): add ``λ · assoc_loss()`` to the task loss, λ tuned.
        """
        rows = self._rows(x)
        n = rows.shape[0]
        idx = torch.randint(0, n, (3, num_triples), generator=generator).to(rows.device)
        a, b, c = rows[idx[0]], rows[idx[1]], rows[idx[2]]
        t = num_triples
        ab_bc = self._combine_stacked(torch.cat([a, b, b, c]), 2 * t)
        ab, bc = ab_bc[:t], ab_bc[t:]
        both = self._combine_stacked(torch.cat([ab, a, c, bc]), 2 * t)
        return (both[:t] - both[t:]).pow(2).sum(-1).mean()

    def identity_loss(
        self, x: Tensor | None = None, num_samples: int = 256, generator: torch.Generator | None = None
    ) -> Tensor:
        """Identity regulariser ``mean ‖e ⊕ a - a‖²`` over sampled rows (needs ``learn_identity``)."""
        if self.identity is None:
            raise InvalidParameterError("LCMAggregation: identity_loss needs learn_identity=True")
        rows = self._rows(x)
        idx = torch.randint(0, rows.shape[0], (num_samples,), generator=generator).to(rows.device)
        a = rows[idx]
        e = self.identity.to(a.dtype).expand_as(a)
        return (self.combine(e, a) - a).pow(2).sum(-1).mean()

    def __repr__(self) -> str:
        """One line, as PyG's aggregations: ``LCMAggregation(16, 32, project=True, pad='none', ...)``."""
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, project={self.project}, "
            f"pad={self.pad!r}, learn_identity={self.learn_identity})"
        )
