r"""DETOX: redundancy-based majority-vote filtering, then hierarchical robust aggregation.

DETOX (Rajput, Wang, Charles, Papailiopoulos, NeurIPS 2019) assumes a trusted server that
controls data placement: workers are placed in groups of ``r`` that compute on the *same*
data, so honest members of a group send identical vectors.

1. **Vote** (in Rust): each group's winner is a vector held by a strict majority of its
   members (:func:`aggkit.detox` ``vote=``); a group with ``< (r+1)/2`` Byzantine members
   cannot be corrupted, so ``q`` Byzantine workers corrupt at most
   :func:`effective_f` ``= floor(q / ((r+1)/2))`` winners.
2. **Hierarchical aggregation**: the ``g`` winners are split into ``b`` buckets (near-equal
   sizes, shuffled with an explicit RNG), an inner rule aggregates each bucket and an outer
   rule the bucket results (default: mean inside, median outside: a median of means), at
   near-linear cost instead of Multi-Krum's quadratic cost over all ``n`` workers.

Where aggkit departs from the reference code (``hwang595/DETOX``), and why:

- The reference votes with Boyer-Moore **without the verification pass**, per layer: with
  no majority it returns the last member's tensor, which a Byzantine worker placed last wins.
  aggkit verifies the majority and lets you choose (``no_majority``): ``"drop"`` (default:
  the group is excluded), ``"median"`` (coordinate-wise median of the members), ``"raise"``,
  or ``"reference"`` (the reference's behaviour, for reproducing its experiments).
- Votes are on whole vectors by default; ``segments`` (offsets, e.g. layer boundaries) gives
  the reference's per-layer vote.
- The reference splits the winners with ``np.split`` (``g`` must be divisible by ``b``);
  aggkit uses near-equal ``array_split`` (as the ByzShield fork) and checks that the outer
  rule tolerates ``f_eff`` tainted bucket results.
- A tolerance mode (``vote="approx"``) for workers whose kernels are not bit-reproducible.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Protocol, overload

import numpy as np

from aggkit._params import (
    Check,
    Count,
    NonNegative,
    OptionalPositive,
    choice,
    count,
    generator,
    int_array,
    integer,
)
from aggkit._types import ArrayLike, ArrayT, NDArray
from aggkit.errors import InvalidParameterError, NoMajorityError, ShapeError, TooFewInputsError
from aggkit.registry import Rule, register
from aggkit.registry import rule as make_rule
from aggkit.rules.krum import multi_krum
from aggkit.rules.mean import mean
from aggkit.rules.median import median
from aggkit.rules.trimmed_mean import trimmed_mean

Vote = Literal["exact", "approx"]
"""How members agree: bit for bit (``np.array_equal``), or within ``atol + rtol |x|``."""
NoMajority = Literal["drop", "median", "raise", "reference"]
"""What a group without a majority contributes (see :func:`detox`)."""


# ---------------------------------------------------------------------------------------------
# Accounting and group assignment


def _r(value: Any, name: str = "r", rule: str = "detox") -> int:
    r = integer(value, name, rule, minimum=-(2**63))
    if r < 1 or r % 2 == 0:
        raise InvalidParameterError(
            f"detox: r must be odd and >= 1 (a strict majority must exist), got r={r}"
        )
    return r


def _q(value: Any) -> int:
    return count(value, "q", "detox")


def effective_f(q: int, r: int) -> int:
    """Worst-case number of corrupted group winners: ``floor(q / ((r + 1) / 2))``.

    A group's winner is corrupted only if a majority, ``(r + 1) / 2`` of its ``r`` members, are
    Byzantine and send the same vector.
    """
    q, r = _q(q), _r(r)
    return q // ((r + 1) // 2)


def expected_corrupted_groups(n: int, r: int, q: int) -> float:
    r"""Expected number of corrupted groups when groups are drawn uniformly at random.

    :math:`E[X] = \frac{n}{r} \sum_{j=(r+1)/2}^{\min(q, r)} \binom{q}{j}\binom{n-q}{r-j} / \binom{n}{r}`
    (a group is corrupted when a hypergeometric draw of its ``r`` members holds a majority of
    Byzantine workers).
    """
    q, r = _q(q), _r(r)
    if r > EXACT_R_MAX:  # the sum has r/2 exact binomials of n-digit numbers
        raise InvalidParameterError(
            f"detox: expected_corrupted_groups needs r <= {EXACT_R_MAX} (exact binomials), got r={r}"
        )
    n = _check_nr(n, r)
    if q > n:
        raise InvalidParameterError(f"detox: q must be <= n, got q={q}, n={n}")
    p = sum(math.comb(q, j) * math.comb(n - q, r - j) for j in range((r + 1) // 2, min(q, r) + 1))
    return n / r * p / math.comb(n, r)


def contiguous_groups(n: int, r: int) -> np.ndarray:
    """Groups ``[[0..r-1], [r..2r-1], ...]`` as a ``(n // r, r)`` int64 array."""
    r = _r(r)
    n = _check_nr(n, r)
    return np.arange(n, dtype=np.int64).reshape(n // r, r)


def random_groups(n: int, r: int, rng: Any) -> np.ndarray:
    """A uniformly random partition into groups of ``r``, drawn from ``rng`` (seed or Generator).

    Draw a fresh one every round so the Byzantine workers cannot choose their group.
    """
    r = _r(r)
    n = _check_nr(n, r)
    return generator(rng, "rng", "detox").permutation(n).astype(np.int64).reshape(n // r, r)


def data_assignment(groups: Any, n: int) -> np.ndarray:
    """For each worker, the index of its group: the data shard a trainer hands it.

    Every member of a group must receive the same shard (and seed) so honest members compute
    bit-identical updates.
    """
    n = count(n, "n", "detox")
    g = _check_groups(groups, n)
    out = np.empty(n, dtype=np.int64)
    for j, members in enumerate(g):
        out[members] = j
    return out


#: :func:`expected_corrupted_groups` sums exact binomials: groups of at most this many workers.
EXACT_R_MAX = 1001


def _check_nr(value: Any, r: int) -> int:
    """``value`` as an int ``n``, a positive multiple of ``r``."""
    n = count(value, "n", "detox")
    if n < 1 or n % r != 0:
        raise InvalidParameterError(f"detox: n must be a positive multiple of r, got n={n}, r={r}")
    if n > 2**32 - 1:  # group members are 32-bit row indices, as everywhere in the core
        raise InvalidParameterError(f"detox: n must be <= 2**32 - 1, got n={n}")
    return n


def _check_groups(groups: Any, n: int, r: int | None = None) -> np.ndarray:
    g = int_array(groups, "groups", "detox", 2)
    if g.shape[0] == 0:
        raise ShapeError(f"detox: groups must be a non-empty (g, r) integer array, got shape {g.shape}")
    if r is not None and g.shape[1] != r:
        raise ShapeError(f"detox: groups have {g.shape[1]} members each, expected r={r}")
    flat = g.reshape(-1)
    if flat.min() < 0 or flat.max() >= n or len(np.unique(flat)) != flat.size or flat.size != n:
        raise InvalidParameterError(
            f"detox: groups must use every input 0..{n - 1} exactly once, got {flat.size} slots"
        )
    return g.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Diagnostics


@dataclasses.dataclass(frozen=True)
class DetoxInfo:
    """What DETOX decided.

    Attributes
    ----------
    groups : ndarray (g, r)
        The group assignment used.
    winners : ndarray (g, s)
        Per group and segment, the member whose vector won (-1: no majority).
    majority : ndarray (g,) of bool
        Whether the group reached a majority in every segment.
    suspects : list of int
        Workers that disagreed with their group's winner (in a segment that had one). In a
        group that Byzantine workers won, these are the honest members: read suspects together
        with how often a worker's group is outvoted across rounds.
    kept_groups : ndarray
        The groups whose winners entered stage 2 (all but dropped ones).
    buckets : list of ndarray
        The groups in each bucket of stage 2.
    selected_groups : ndarray or None
        For selection rules in stage 2 (the Multi-Krum and Bulyan presets), the groups whose
        winners were selected.
    """

    groups: np.ndarray
    winners: np.ndarray
    majority: np.ndarray
    suspects: list[int]
    kept_groups: np.ndarray
    buckets: list[np.ndarray] = dataclasses.field(default_factory=list)
    selected_groups: np.ndarray | None = None


def _segments(segments: Any, d: int) -> list[int]:
    if segments is None:
        return [0, d]
    s = [int(v) for v in segments]
    if not s or s[0] != 0:
        s = [0, *s]
    if s[-1] != d:
        s.append(d)
    if any(b < a for a, b in itertools.pairwise(s)):
        raise InvalidParameterError(
            f"detox: segments must be increasing offsets within 0..{d}, got {segments}"
        )
    return s


# ---------------------------------------------------------------------------------------------
# The rule object


class _Preset:
    """A stage 2 that is not inner/outer composition (the Multi-Krum and Bulyan presets)."""

    def __init__(self, kind: Literal["multikrum", "bulyan"]) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"preset:{self.kind}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Preset) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(("detox-preset", self.kind))

    def run(
        self, rows: list[Any], f_eff: int, gen: np.random.Generator | None, buckets: int | None
    ) -> tuple[Any, list[np.ndarray], list[int]]:
        g = len(rows)
        order = gen.permutation(g) if gen is not None else np.arange(g)
        if self.kind == "multikrum":
            b = 2 if buckets is None else _check_buckets(buckets, g)
            parts, selected, bks = [], [], np.array_split(order, b)
            for bk in bks:
                size = len(bk)
                m = size - f_eff - 2
                if size < 2 * f_eff + 3 or m < 1:
                    raise TooFewInputsError(
                        f"DETOX Multi-Krum: each bucket needs >= 2 f_eff + 3 = {2 * f_eff + 3} winners, "
                        f"a bucket has {size} (g'={g}, b={b})"
                    )
                y, sel = multi_krum([rows[i] for i in bk], f=f_eff, m=m, return_selection=True)
                parts.append(y)
                selected += [int(bk[i]) for i in _list(sel.indices)]
            return mean(parts, nonfinite="propagate"), bks, selected
        # bulyan: Krum-score selection of m = g - f_eff - 2, then trimmed mean by f_eff per side
        m = g - f_eff - 2
        if m < 2 * f_eff + 1:
            raise TooFewInputsError(
                f"DETOX Bulyan needs g' - f_eff - 2 >= 2 f_eff + 1, i.e. g' >= {3 * f_eff + 3}, "
                f"got g'={g}, f_eff={f_eff}"
            )
        picked = [rows[i] for i in order]
        _, sel = multi_krum(picked, f=f_eff, m=m, return_selection=True)
        idx = _list(sel.indices)
        y = trimmed_mean([picked[i] for i in idx], f=f_eff)
        return y, [order], [int(order[i]) for i in idx]


Stage = str | Rule | _Preset | None


def _stage(value: Any, name: str, rule: str) -> Stage:
    if value is None or isinstance(value, _Preset):
        return value
    make_rule(value)  # an unknown name or a bad object fails here, when the rule is built
    return value  # type: ignore[no-any-return]


def _segments_param(value: Any, name: str, rule: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(f"detox: segments must be a sequence of offsets, got {type(value).__name__}")
    return tuple(integer(v, "segments", rule, minimum=0) for v in value)


@register
class DETOX(Rule):
    """The rule object of :func:`aggkit.detox`; each call takes this round's ``groups`` and ``rng``."""

    name: ClassVar[str] = "detox"
    q: Count
    r: Annotated[int, Check(_r)] = 3
    inner: Annotated[Stage, Check(_stage)] = "mean"
    outer: Annotated[Stage, Check(_stage)] = "median"
    buckets: OptionalPositive = None
    vote: Vote = "exact"
    atol: NonNegative = 0.0
    rtol: NonNegative = 1e-5
    no_majority: NoMajority = "drop"
    segments: Annotated[Sequence[int] | None, Check(_segments_param)] = None

    def min_inputs(self) -> int:
        """``r`` (one group)."""
        return self.r

    def check_n(self, n: int) -> None:
        """``n`` is a positive multiple of ``r``."""
        _check_nr(n, self.r)

    @overload
    def __call__(self, x: ArrayT | Sequence[ArrayT], *, groups: Any = ..., rng: Any = ...) -> ArrayT: ...
    @overload
    def __call__(self, x: ArrayLike, *, groups: Any = ..., rng: Any = ...) -> NDArray: ...
    def __call__(self, x: Any, *, groups: Any = "contiguous", rng: Any = None) -> Any:
        """Aggregate ``x`` with this round's group assignment (see :func:`aggkit.detox`)."""
        return self._run(x, groups=groups, rng=rng)[0]


# ---------------------------------------------------------------------------------------------
# Stages 1 and 2, for any array framework


class Backend(Protocol):
    """What DETOX needs from an array framework; the rest is shared."""

    def rows(self) -> tuple[Sequence[Any], int]:
        """The inputs as ``n`` flat vectors (views where possible), and ``d``."""
        ...

    def vote(
        self, groups: np.ndarray, r: int, segments: list[int], mode: str, atol: float, rtol: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Winners per (group, segment) as uint32 (``2**32 - 1``: none) and per-member agreement."""
        ...

    def concat(self, pieces: list[Any]) -> Any:
        """One vector from the pieces of a group's winner."""
        ...

    def finish(self, out: Any) -> Any:
        """The aggregate in the shape, dtype and array type of one input."""
        ...


def _winner_rows(
    rows: Sequence[Any],
    groups: np.ndarray,
    winners: np.ndarray,
    no_majority: str,
    segs: list[int],
    backend: Backend,
) -> tuple[list[Any], np.ndarray]:
    """The winner vector of every kept group (views where a single member won)."""
    g = groups.shape[0]
    out, kept = [], []
    missing = [j for j in range(g) if (winners[j] < 0).any()]
    if missing and no_majority == "raise":
        e = NoMajorityError(
            f"detox: no majority in groups {missing[:10]}{' ...' if len(missing) > 10 else ''}"
        )
        e.groups = missing
        raise e
    for j in range(g):
        w = winners[j]
        if (w < 0).any() and no_majority == "drop":
            continue
        if (w == w[0]).all() and w[0] >= 0:
            out.append(rows[int(w[0])])
        else:
            out.append(_assemble(rows, groups[j], w, segs, backend))
        kept.append(j)
    return out, np.asarray(kept, dtype=np.int64)


def _assemble(
    rows: Sequence[Any], members: np.ndarray, w: np.ndarray, segs: list[int], backend: Backend
) -> Any:
    """A group's winner built segment by segment (the median of its members where none won)."""
    pieces = []
    for s in range(len(segs) - 1):
        lo, hi = segs[s], segs[s + 1]
        if w[s] >= 0:
            pieces.append(rows[int(w[s])][lo:hi])
        else:
            pieces.append(median([rows[int(m)][lo:hi] for m in members]))
    return backend.concat(pieces)


def run(
    rule: DETOX, backend: Backend, *, groups: Any = "contiguous", rng: Any = None
) -> tuple[Any, DetoxInfo]:
    """DETOX on the inputs ``backend`` holds: the vote, then stage 2. Returns ``(y, info)``."""
    rows, d = backend.rows()
    n = len(rows)
    rule.check_n(n)
    gen = generator(rng, "rng", "detox") if rng is not None else None
    if isinstance(groups, str):
        groups = choice(groups, "groups", ("contiguous", "random"), "detox")
        if groups == "random" and gen is None:
            raise InvalidParameterError("detox: groups='random' needs rng (a seed or numpy Generator)")
        grp = contiguous_groups(n, rule.r) if groups == "contiguous" else random_groups(n, rule.r, gen)
    else:
        grp = _check_groups(groups, n, rule.r)
    segs = _segments(rule.segments, d)
    g, r = grp.shape
    flat_groups = np.ascontiguousarray(grp.reshape(-1), dtype=np.uint32)
    mode = "reference" if rule.no_majority == "reference" else rule.vote
    raw, agree = backend.vote(flat_groups, r, segs, mode, rule.atol, rule.rtol)
    winners = raw.astype(np.int64)
    winners[raw == np.iinfo(np.uint32).max] = -1
    winners = winners.reshape(g, len(segs) - 1)
    agree = agree.reshape(g, r)
    policy = rule.no_majority if rule.no_majority != "reference" else "drop"  # reference: always a winner
    win_rows, kept = _winner_rows(rows, grp, winners, policy, segs, backend)
    suspects = sorted(int(m) for m in grp[~agree])
    f_eff = rule.q // ((r + 1) // 2)
    gk = len(win_rows)
    if gk == 0:
        raise TooFewInputsError(f"DETOX needs at least one group with a majority, got none of {g}")
    sel: list[int] | None
    if isinstance(rule.inner, _Preset):
        y, buckets_used, sel = rule.inner.run(win_rows, f_eff, gen, rule.buckets)
    else:
        b = min(gk, 2 * f_eff + 1) if rule.buckets is None else _check_buckets(rule.buckets, gk)
        outer_rule = make_rule(rule.outer)  # type: ignore[arg-type]
        _check_outer(outer_rule, b, f_eff)
        inner_rule = make_rule(rule.inner if rule.inner is not None else "mean")
        order = gen.permutation(gk) if gen is not None else np.arange(gk)
        buckets_used = np.array_split(order, b)
        partial = [inner_rule([win_rows[i] for i in bk]) for bk in buckets_used]
        y = outer_rule(partial)
        sel = None
    info = DetoxInfo(
        groups=grp,
        winners=winners,
        majority=np.asarray((winners >= 0).all(axis=1)),
        suspects=suspects,
        kept_groups=kept,
        buckets=[kept[bk] for bk in buckets_used],
        selected_groups=None if sel is None else kept[np.asarray(sel, dtype=np.int64)],
    )
    return backend.finish(y), info


def _check_outer(outer: Rule, b: int, f_eff: int) -> None:
    name = outer.name
    if name == "median" and b < 2 * f_eff + 1:
        raise TooFewInputsError(
            f"DETOX: the outer median tolerates f_eff={f_eff} tainted buckets only with "
            f"b >= 2 f_eff + 1 = {2 * f_eff + 1} buckets, got b={b}"
        )
    if outer.get_params().get("f", f_eff) < f_eff:
        raise InvalidParameterError(
            f"DETOX: the outer rule {outer!r} tolerates fewer than f_eff={f_eff} tainted inputs"
        )
    if name == "mean" and f_eff > 0:
        raise InvalidParameterError(
            f"DETOX: the outer mean tolerates no tainted input, but f_eff={f_eff}; use a robust outer rule"
        )
    if b < outer.min_inputs():
        raise TooFewInputsError(
            f"DETOX: the outer rule {outer!r} needs at least {outer.min_inputs()} buckets, got b={b}"
        )


def _check_buckets(b: Any, g: int) -> int:
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
        raise TypeError(f"detox: buckets must be an int, got {type(b).__name__}")
    if not 1 <= b <= g:
        raise InvalidParameterError(
            f"detox: buckets must satisfy 1 <= b <= g' (kept groups), got b={b}, g'={g}"
        )
    return int(b)


def _list(t: Any) -> list[int]:
    return [int(v) for v in (t.tolist() if hasattr(t, "tolist") else t)]


# ---------------------------------------------------------------------------------------------
# The public functions


def detox(
    x: Any,
    *,
    q: int,
    r: int = DETOX.r,
    groups: Any = "contiguous",
    inner: Stage = DETOX.inner,
    outer: Stage = DETOX.outer,
    buckets: int | None = DETOX.buckets,
    vote: Vote = DETOX.vote,
    atol: float = DETOX.atol,
    rtol: float = DETOX.rtol,
    no_majority: NoMajority = DETOX.no_majority,
    segments: Sequence[int] | None = DETOX.segments,
    rng: Any = None,
    return_info: bool = False,
) -> Any:
    r"""DETOX: majority vote within groups of ``r`` redundant workers, then a robust aggregate.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays
        One vector per worker (numpy, or torch: see :func:`aggkit.torch.detox`).
    q : int
        The number of Byzantine workers to tolerate; sets ``f_eff = effective_f(q, r)``.
    r : int, default 3
        Group size (odd; the reference uses 3). ``n`` must be a multiple of ``r``.
    groups : "contiguous", "random" or array of shape (n // r, r), default "contiguous"
        The group assignment (the same one used to hand out data): contiguous blocks,
        a random partition drawn from ``rng`` (draw it every round), or explicit indices.
    inner, outer : rule or name, default "mean", "median"
        Stage 2: ``inner`` aggregates each bucket of winners, ``outer`` the bucket results.
        The outer rule must tolerate ``f_eff`` tainted buckets (checked: the median needs
        ``b >= 2 f_eff + 1``, a rule with ``f`` needs ``f >= f_eff``, the mean ``f_eff = 0``).
    buckets : int, optional
        ``b``, the number of buckets (``1 <= b <= g'``, the kept groups). Default
        ``min(g', 2 f_eff + 1)``: the fewest the outer median needs, so each bucket averages
        as many winners as possible.
    vote : {"exact", "approx"}, default "exact"
        ``"exact"``: ``np.array_equal`` semantics (``-0.0 == +0.0``, NaN equals nothing);
        ``"approx"``: within ``atol + rtol |x|`` coordinate-wise (non-deterministic kernels).
    no_majority : {"drop", "median", "raise", "reference"}, default "drop"
        A group without a majority is dropped, replaced by its members' coordinate-wise
        median, raises :class:`aggkit.NoMajorityError`, or (``"reference"``) gets the reference
        code's Boyer-Moore result without verification (it always returns a member).
    segments : sequence of int, optional
        Offsets splitting the flattened vector (e.g. layer boundaries) to vote per segment, as
        the reference does per layer.
    rng : int or numpy.random.Generator, optional
        Draws random ``groups`` and shuffles the winners before bucketing; ``None``: buckets
        follow group order.
    return_info : bool, default False
        Also return a :class:`DetoxInfo`.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, DetoxInfo)
        The aggregate (shape ``shape``, the dtype of ``x``).

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> honest = np.array([1.0, 2.0])
    >>> x = np.stack([honest] * 9)
    >>> x[[0, 1]] = 100.0               # two Byzantine workers, colluding, in group 0
    >>> x[4] = -5.0                     # one more, alone in group 1
    >>> y, info = aggkit.detox(x, q=3, return_info=True)
    >>> y                               # group 0's winner is tainted; the outer median ignores it
    array([1., 2.])
    >>> info.suspects                   # outvoted members: worker 2 (honest, in the tainted group), 4
    [2, 4]
    """
    rule = DETOX(
        q=q, r=r, inner=inner, outer=outer, buckets=buckets, vote=vote, atol=atol, rtol=rtol,
        no_majority=no_majority, segments=segments,
    )  # fmt: skip
    y, info = rule._run(x, groups=groups, rng=rng)
    return (y, info) if return_info else y


def detox_median(x: Any, *, q: int, r: int = 3, buckets: int | None = None, **kw: Any) -> Any:
    """DETOX with the reference's ``coord-median`` stage 2: median of bucket means."""
    return detox(x, q=q, r=r, inner="mean", outer="median", buckets=buckets, **kw)


def detox_multikrum(x: Any, *, q: int, r: int = 3, buckets: int | None = None, **kw: Any) -> Any:
    """DETOX with the reference's ``multi-krum`` stage 2.

    ``b = 2`` buckets by default (the reference hard-codes 2), Multi-Krum inside each with
    ``f = f_eff`` and ``m = size - f_eff - 2`` (the reference's neighbour and selection
    count), the mean of the bucket results outside.
    """
    return detox(x, q=q, r=r, inner=_Preset("multikrum"), buckets=buckets, **kw)


def detox_bulyan(x: Any, *, q: int, r: int = 3, **kw: Any) -> Any:
    """DETOX with the reference's ``bulyan`` stage 2 (no bucketing).

    Select ``m = g' - f_eff - 2`` winners by Krum score (``f = f_eff``), then the
    coordinate-wise trimmed mean trimming ``f_eff`` per side: the DETOX/AggregaThor variant of
    Bulyan, as the reference computes it.
    """
    return detox(x, q=q, r=r, inner=_Preset("bulyan"), **kw)
