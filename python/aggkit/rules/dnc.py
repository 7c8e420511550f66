"""DnC (divide and conquer): filter the inputs that stand out along the top principal direction."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any, ClassVar, overload

import numpy as np

from aggkit._params import Count, DropOrRaise, NonNegative, Positive, Seed
from aggkit._types import ArrayLike, ArrayT
from aggkit.errors import too_few_inputs_error
from aggkit.registry import Rule, register


@register
class DnC(Rule):
    """The rule object of :func:`aggkit.dnc`; it owns the generator of its coordinate subsets."""

    name: ClassVar[str] = "dnc"
    f: Count
    b: Positive = 10000
    niters: Positive = 5
    c: NonNegative = 1.0
    seed: Seed = None
    nonfinite: DropOrRaise = "robust"
    _rng: np.random.Generator = dataclasses.field(init=False, repr=False, compare=False)

    def _check(self) -> None:
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))

    def removed(self, f: int | None = None) -> int:
        """How many inputs each subsample removes: ``floor(c f)``."""
        # exact: c is a float, f any Python int (no overflow, no rounding of c f)
        return math.floor(Fraction(self.c) * (self.f if f is None else f))

    def min_inputs(self) -> int:
        """``floor(c f) + 1``."""
        return self.removed() + 1

    def check_n(self, n: int) -> None:
        """``n > floor(c f)``: something is left after each removal."""
        if n <= self.removed():
            raise too_few_inputs_error("dnc", f"n > floor(c f) = {self.removed()}", n, self.f)

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """``niters (n^2 min(b, d) + n^3) + n d``: distances and an eigenproblem per subsample."""
        return self.niters * (n * n * min(self.b, d) + n**3) + n * d, "niters (n^2 min(b, d) + n^3) + n d"

    def subsets(self, d: int) -> list[np.ndarray | None]:
        """The next call's ``niters`` sorted coordinate subsets (``None``: all ``d`` coordinates)."""
        return list(self.iter_subsets(d))

    def iter_subsets(self, d: int) -> Iterator[np.ndarray | None]:
        """:meth:`subsets` one at a time, drawn as they are used (the same draws)."""
        for _ in range(self.niters):
            yield None if self.b >= d else np.sort(self._rng.choice(d, size=self.b, replace=False))


@overload
def dnc(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    b: int = ...,
    niters: int = ...,
    c: float = ...,
    seed: int | None = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: bool = ...,
) -> Any: ...
@overload
def dnc(
    x: ArrayLike,
    *,
    f: int,
    b: int = ...,
    niters: int = ...,
    c: float = ...,
    seed: int | None = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: bool = ...,
) -> Any: ...
def dnc(
    x: Any,
    *,
    f: int,
    b: int = DnC.b,
    niters: int = DnC.niters,
    c: float = DnC.c,
    seed: int | None = None,
    nonfinite: DropOrRaise = DnC.nonfinite,
    return_selection: bool = False,
) -> Any:
    r"""DnC: the mean of the inputs that never stand out along the top principal direction.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated.
    b : int, default 10000
        Coordinates sampled per iteration (all of them when ``b >= d``).
    niters : int, default 5
        Iterations, each on a new random subset of coordinates.
    c : float, default 1.0
        Filtering fraction: each iteration removes the ``floor(c f)`` inputs with the largest
        outlier scores.
    seed : int, optional
        Seeds the subsets (a new draw at every call; reproducible sequence).
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"`` leaves inputs holding NaN or ±inf out (they count against ``f``);
        ``"raise"`` refuses them.
    return_selection : bool, default False
        Also return a :class:`aggkit.Selection`: the kept inputs, and as scores the number of
        iterations that removed each input (``inf`` for non-finite ones).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, Selection)
        Shape ``shape``, the dtype of ``x``.

    Notes
    -----
    Per iteration: sample ``b`` coordinates without replacement, centre the sampled inputs on
    their mean, take the top right singular vector :math:`v` of the centred matrix, score
    :math:`s_i = ((x_i - \mu) \cdot v)^2`, keep all but the ``floor(c f)`` largest scores
    (ties: the lower index stays). The output is the plain mean of the inputs kept by every
    iteration. Here :math:`s_i = \lambda_1 u_i^2` from the top eigenpair of the centred Gram
    matrix, built from exact pairwise distances of the sampled coordinates (Rust), so a large
    common offset cancels exactly. Where no input survives every iteration (possible when
    ``niters floor(c f) >= n``), the inputs kept by the most iterations are averaged (the
    published implementations average an empty set). Defaults are those of the public
    implementations (blades, FLPoison: ``b = 10000``, ``niters = 5``, ``c = 1``); the authors'
    repository has no DnC code. Cost :math:`O(niters (n^2 b + n^3) + n d)`.

    References
    ----------
    V. Shejwalkar, A. Houmansadr. Manipulating the Byzantine: optimizing model poisoning attacks
    and defenses for federated learning. NDSS 2021.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[1.0, 2.0], [1.2, 2.1], [0.9, 1.9], [1.1, 2.0], [9.0, -7.0]])
    >>> aggkit.dnc(x, f=1)
    array([1.05, 2.  ])
    """
    rule = DnC(f=f, b=b, niters=niters, c=c, seed=seed, nonfinite=nonfinite)
    out, sel = rule._run(x)
    return (out, sel) if return_selection else out
