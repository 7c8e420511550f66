"""Rules that average a well-chosen subset of the inputs: MDA, SMEA, CAF and MoNNA.

Each picks (or weights) inputs from their pairwise squared distances (aggkit's exact Rust
kernel), then averages them with aggkit's mean, so the torch versions route the gradient to the
chosen inputs. Non-finite inputs (``nonfinite="robust"``) are dropped first and count against
``f``; ``"raise"`` refuses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, overload

from aggkit._params import MAJORITY, Count, DropOrRaise, Positive
from aggkit._types import ArrayLike, ArrayT, NDArray
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, register


@register
class MDA(Rule):
    """The rule object of :func:`aggkit.mda`."""

    name: ClassVar[str] = "mda"
    f: Count
    max_subsets: Positive = 10**7
    nonfinite: DropOrRaise = "robust"

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return MAJORITY.min_n(self.f)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 1``."""
        MAJORITY.check(self.name, n, self.f)

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """``C(n, f) f n + 32 n^2``: the pairs sorted once, then each subset's diameter.

        A subset's diameter is found among the first ``f n`` pairs of that order.
        """
        return math.comb(n, self.f) * max(self.f, 1) * n + 32 * n * n, "C(n, f) f n + 32 n^2"


@overload
def mda(
    x: ArrayT | Sequence[ArrayT], *, f: int, max_subsets: int = ..., nonfinite: DropOrRaise = ...
) -> ArrayT: ...
@overload
def mda(x: ArrayLike, *, f: int, max_subsets: int = ..., nonfinite: DropOrRaise = ...) -> NDArray: ...
def mda(x: Any, *, f: int, max_subsets: int = MDA.max_subsets, nonfinite: DropOrRaise = MDA.nonfinite) -> Any:
    r"""Minimum-diameter averaging: the mean of the ``n - f`` inputs of smallest diameter.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1``.
    max_subsets : int, default 10**7
        Refuse when :math:`\binom{n}{f}` exceeds it: the search is exponential in ``f``.
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"`` leaves out inputs holding NaN or ±inf (at most ``f``).

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    :math:`S^* = \arg\min_{|S| = n-f} \max_{i,j \in S} \|x_i - x_j\|`, output the mean of
    :math:`S^*`. aggkit enumerates the :math:`\binom{n}{f}` removed sets over the pairs sorted
    by distance (a subset's diameter is its first pair with both ends kept), in parallel;
    equal diameters go to the lexicographically smallest kept tuple, byzfl's order. Cost
    :math:`O(n^2 d)` for the distances plus :math:`O(\binom{n}{f} n^2)` worst case.

    References
    ----------
    E.-M. El Mhamdi, R. Guerraoui, A. Guirguis, L. N. Hoang, S. Rouault. Genuinely
    distributed Byzantine machine learning. PODC 2020, arXiv:1905.03853.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.mda(np.array([[1.0], [2.0], [3.0], [10.0]]), f=1)
    array([2.])
    """
    return MDA(f=f, max_subsets=max_subsets, nonfinite=nonfinite)(x)


@register
class SMEA(Rule):
    """The rule object of :func:`aggkit.smea`."""

    name: ClassVar[str] = "smea"
    f: Count
    max_subsets: Positive = 10**5
    nonfinite: DropOrRaise = "robust"

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return MAJORITY.min_n(self.f)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 1``."""
        MAJORITY.check(self.name, n, self.f)

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """``4 C(n, f) (n - f)^3``: an eigenproblem of size ``k = n - f`` per subset.

        LAPACK takes about 4 operations per ``k^3``.
        """
        return 4 * math.comb(n, self.f) * (n - self.f) ** 3, "4 C(n, f) (n - f)^3"


@overload
def smea(
    x: ArrayT | Sequence[ArrayT], *, f: int, max_subsets: int = ..., nonfinite: DropOrRaise = ...
) -> ArrayT: ...
@overload
def smea(x: ArrayLike, *, f: int, max_subsets: int = ..., nonfinite: DropOrRaise = ...) -> NDArray: ...
def smea(
    x: Any, *, f: int, max_subsets: int = SMEA.max_subsets, nonfinite: DropOrRaise = SMEA.nonfinite
) -> Any:
    r"""Smallest maximum eigenvalue averaging: the mean of the ``n - f`` inputs least spread out.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1``.
    max_subsets : int, default 10**5
        Refuse when :math:`\binom{n}{f}` exceeds it (one small eigenproblem per subset).
    nonfinite : {"robust", "raise"}, default "robust"

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    Among all subsets :math:`S` of size :math:`n - f`, the one whose empirical covariance has
    the smallest largest eigenvalue; output its mean. aggkit computes each subset's top
    eigenvalue exactly (LAPACK on the subset's :math:`(n-f) \times (n-f)` centred Gram matrix,
    built once from the exact pairwise distances), where byzfl takes one power-iteration step
    from a random vector, so its choice is random. Ties (within rounding) go to the first subset
    in lexicographic order. Cost :math:`O(n^2 d + \binom{n}{f} (n-f)^3)`.

    References
    ----------
    Y. Allouah, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan. On the privacy-robustness-utility
    trilemma in distributed learning. ICML 2023.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]])
    >>> aggkit.smea(x, f=1).round(6)
    array([0.333333, 0.333333])
    """
    return SMEA(f=f, max_subsets=max_subsets, nonfinite=nonfinite)(x)


@register
class CAF(Rule):
    """The rule object of :func:`aggkit.caf`."""

    name: ClassVar[str] = "caf"
    f: Count
    nonfinite: DropOrRaise = "robust"

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return MAJORITY.min_n(self.f)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 1``."""
        MAJORITY.check(self.name, n, self.f)

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """Up to ``n + 1`` eigenproblems of size ``n``: ``(n + 1) n^3``."""
        return (n + 1) * n**3, "(n + 1) n^3"


@overload
def caf(x: ArrayT | Sequence[ArrayT], *, f: int, nonfinite: DropOrRaise = ...) -> ArrayT: ...
@overload
def caf(x: ArrayLike, *, f: int, nonfinite: DropOrRaise = ...) -> NDArray: ...
def caf(x: Any, *, f: int, nonfinite: DropOrRaise = CAF.nonfinite) -> Any:
    r"""Covariance-bound agnostic filter: down-weight inputs along the top covariance direction.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1``.
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"`` gives inputs holding NaN or ±inf weight 0 from the start (at most ``f``).

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    Weights :math:`c_i = 1`; while :math:`\sum c > n - 2f`: the weighted mean :math:`\mu`, the
    top eigenpair :math:`(\lambda, v)` of the weighted covariance, :math:`\tau_i = ((x_i -
    \mu)^\top v)^2`, :math:`c_i \leftarrow c_i (1 - \tau_i / \max_{c_j > 0} \tau_j)`; return
    the :math:`\mu` of smallest :math:`\lambda` seen. aggkit solves each eigenproblem exactly in
    the :math:`n \times n` space of the inputs (from the exact pairwise distances), so the
    result is deterministic; byzfl takes one power-iteration step from a random vector (random
    results) and takes :math:`\max \tau` over all inputs, dropped ones included, which can
    stall the filter. Cost :math:`O(n^2 d + n^4)`.

    References
    ----------
    Y. Allouah, R. Guerraoui, J. Stephan. Towards trustworthy federated learning with untrusted
    participants. ICML 2025, arXiv:2505.01874.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [40.0, -40.0]])
    >>> np.abs(aggkit.caf(x, f=1)).max() < 1.0
    np.True_
    """
    return CAF(f=f, nonfinite=nonfinite)(x)


@register
class MoNNA(Rule):
    """The rule object of :func:`aggkit.monna`."""

    name: ClassVar[str] = "monna"
    f: Count
    idx: Count = 0
    nonfinite: DropOrRaise = "robust"

    def min_inputs(self) -> int:
        """``2f + 1`` (and more than ``idx``)."""
        return max(MAJORITY.min_n(self.f), self.idx + 1)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 1`` and ``idx < n``."""
        MAJORITY.check(self.name, n, self.f)
        if self.idx >= n:
            raise InvalidParameterError(f"monna: idx must be < n, got idx={self.idx}, n={n}")


@overload
def monna(
    x: ArrayT | Sequence[ArrayT], *, f: int, idx: int = ..., nonfinite: DropOrRaise = ...
) -> ArrayT: ...
@overload
def monna(x: ArrayLike, *, f: int, idx: int = ..., nonfinite: DropOrRaise = ...) -> NDArray: ...
def monna(x: Any, *, f: int, idx: int = MoNNA.idx, nonfinite: DropOrRaise = MoNNA.nonfinite) -> Any:
    r"""MoNNA: the mean of the ``n - f`` inputs nearest to a trusted input ``idx``.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1`` (byzfl: ``2f < n``).
    idx : int, default 0
        The trusted input (e.g. the server's own gradient); it must be finite.
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"``: inputs holding NaN or ±inf are the farthest (left out, at most ``f``).

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    Euclidean distances to :math:`x_{idx}` (float64, exact differences), the :math:`n - f`
    nearest kept with ties to the lower index (byzfl's ``argpartition`` leaves ties
    unspecified), averaged. Cost :math:`O(n d)`.

    References
    ----------
    S. Farhadkhani, R. Guerraoui, N. Gupta, L. N. Hoang, R. Pinot, J. Stephan. Robust
    collaborative learning with linear gradient overhead. ICML 2023, arXiv:2209.10931.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.monna(np.array([[1.0], [2.0], [3.0], [10.0]]), f=1, idx=1)
    array([2.])
    """
    return MoNNA(f=f, idx=idx, nonfinite=nonfinite)(x)
