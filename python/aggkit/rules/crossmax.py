"""CrossMax: robust ensembling of the logits of several predictors."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Literal, overload

from aggkit import _dispatch
from aggkit._params import Check, NonFinite, any_integer
from aggkit._types import ArrayLike, ArrayT, NDArray
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.registry import Params

Reducer = Literal["kth", "median"]
"""Read each class's k-th largest normalised logit, or its median over the predictors."""
CrossMaxEven = Literal["lower", "upper", "mean"]
"""The median's convention for an even number of predictors."""

#: Why ``nonfinite="raise"`` refuses predictors (the core's words, on every path).
RAISE_DETAIL = "NaN or +inf logits under nonfinite='raise' (-inf marks a masked class and is allowed)"


def _k(value: Any, name: str, rule: str) -> int | None:
    return None if value is None else any_integer(value, name, rule)


class CrossMax(Params):
    """CrossMax's options, parsed once; calling it runs :func:`aggkit.crossmax`.

    ``rank`` is the rank read per class: ``k`` (default 3) for ``reducer="kth"``, 0 for the
    median, which has none.
    """

    name: ClassVar[str] = "crossmax"
    k: Annotated[int | None, Check(_k)] = None
    reducer: Reducer = "kth"
    even: CrossMaxEven = "lower"
    predictor_dim: Annotated[int, Check(any_integer)] = -2
    class_dim: Annotated[int, Check(any_integer)] = -1
    nonfinite: NonFinite = "robust"
    rank: int = dataclasses.field(init=False, repr=False, compare=False, default=0)

    def _check(self) -> None:
        if self.reducer == "median":
            if self.k is not None:
                raise InvalidParameterError("crossmax: k is not used with reducer='median'; leave it unset")
            rank = 0
        else:
            rank = 3 if self.k is None else self.k
            if rank < 2:
                raise InvalidParameterError(
                    f"crossmax: k must satisfy 2 <= k <= N, got k={rank}"
                    + (
                        " (k=1 is degenerate: every class scores 0, so the argmax is an all-way tie)"
                        if rank == 1
                        else ""
                    )
                )
        object.__setattr__(self, "rank", rank)

    def check_predictors(self, n: int) -> None:
        """Refuse ``N`` predictors that cannot give a score: ``N >= 2`` and ``k <= N``."""
        if self.rank > n:
            raise InvalidParameterError(f"crossmax: k must satisfy 2 <= k <= N, got k={self.rank}, N={n}")
        if n < 2:
            raise InvalidParameterError(
                f"crossmax: needs N >= 2 predictors, got N={n} (with one predictor every class scores 0)"
            )

    @overload
    def __call__(self, z: ArrayT) -> ArrayT: ...
    @overload
    def __call__(self, z: ArrayLike) -> NDArray: ...
    def __call__(self, z: Any) -> Any:
        """Scores ``(..., C)`` of the logits ``z``."""
        return _dispatch.implementation(self.name, z)(self, z)[0]


def normalize_dims(ndim: int, predictor_dim: int, class_dim: int) -> tuple[int, int]:
    """Non-negative, distinct predictor and class dimensions of an ``ndim``-array."""
    if ndim < 2:
        raise ShapeError(f"crossmax: logits must have at least 2 dimensions (N, C), got {ndim}")
    dims = []
    for name, d in (("predictor_dim", predictor_dim), ("class_dim", class_dim)):
        if not -ndim <= d < ndim:
            raise ShapeError(f"crossmax: {name}={d} is out of range for {ndim}-dimensional logits")
        dims.append(d % ndim)
    if dims[0] == dims[1]:
        raise ShapeError(f"crossmax: predictor_dim and class_dim must differ, both are {dims[0]}")
    return dims[0], dims[1]


@overload
def crossmax(
    z: ArrayT,
    *,
    k: int | None = ...,
    reducer: Reducer = ...,
    even: CrossMaxEven = ...,
    predictor_dim: int = ...,
    class_dim: int = ...,
    nonfinite: NonFinite = ...,
) -> ArrayT: ...
@overload
def crossmax(
    z: ArrayLike,
    *,
    k: int | None = ...,
    reducer: Reducer = ...,
    even: CrossMaxEven = ...,
    predictor_dim: int = ...,
    class_dim: int = ...,
    nonfinite: NonFinite = ...,
) -> NDArray: ...
def crossmax(
    z: Any,
    *,
    k: int | None = CrossMax.k,
    reducer: Reducer = CrossMax.reducer,
    even: CrossMaxEven = CrossMax.even,
    predictor_dim: int = CrossMax.predictor_dim,
    class_dim: int = CrossMax.class_dim,
    nonfinite: NonFinite = CrossMax.nonfinite,
) -> Any:
    r"""CrossMax: combine the logits of ``N`` predictors into one score per class.

    Parameters
    ----------
    z : array_like, shape (..., N, C)
        Logits (or log-probabilities: the result is the same) of ``N`` predictors over ``C``
        classes, with any leading batch dimensions. float16, float32 or float64.
    k : int, optional
        The rank read per class, ``2 <= k <= N``; default 3 (the reference's). ``k = 1`` is
        rejected: every class would score 0.
    reducer : {"kth", "median"}, default "kth"
        ``"median"`` reads the median over predictors instead of the k-th largest.
    even : {"lower", "upper", "mean"}, default "lower"
        The median's convention for even ``N`` (``"lower"`` is ``torch.median``'s; for
        ``N = 4`` it equals ``k = 3``).
    predictor_dim, class_dim : int, default -2, -1
        Where the predictors and the classes are.
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        See Notes.

    Returns
    -------
    numpy.ndarray, shape (..., C)
        Scores ``<= 0`` (``-inf`` for a class every predictor gives ``-inf``), the dtype of
        ``z``; the prediction is their argmax.

    Notes
    -----
    With :math:`A_{n,c} = z_{n,c} - \max_{c'} z_{n,c'}` (each predictor's top logit becomes
    0), :math:`Y_c = A_{(k),c} - A_{(1),c}`, where :math:`A_{(j),c}` is the j-th largest of
    :math:`A_{\cdot,c}`: the reference's second normalisation (subtract each class's best
    predictor) followed by the k-th largest, in closed form (docs/algorithms.md). A class's
    score is minus the gap between its best and its k-th best predictor, so one predictor
    shouting for a class cannot set that class's score (a Vickrey auction). Adding a constant
    to one predictor's logits changes nothing (logits and log-softmax give the same result);
    scaling them does. Predictors are ranked per class by ``(value, index)``, descending, so
    ties go to the lower predictor index (this fixes the gradient's routing in
    :func:`aggkit.torch.crossmax`).

    ``nonfinite="robust"`` reads NaN as ``-inf`` (no bid for that class) and ``+inf`` as the
    largest finite value; ``"raise"`` refuses NaN and ``+inf`` (``-inf`` masks a class and is
    always allowed); under both, a predictor whose logits are all ``-inf`` abstains;
    ``"propagate"`` computes naively, so a NaN logit makes its example's scores NaN.

    Convention: ``k = 3`` is the default because the authors' reference notebook uses it (with
    ``N = 8``); the paper's Algorithm 1 is said to take the median for generic ensembles, which
    could not be checked against the paper here, so both are offered (``reducer="median"``).

    CrossMax is an aggregation operator. Its reported adversarial robustness was largely
    gradient masking under adaptive attacks (Zhang, Nikolić, Carlini, Tramèr 2024,
    arXiv:2411.14834): do not treat it as a certified defence.

    References
    ----------
    S. Fort, B. Lakshminarayanan. Ensemble everything everywhere: multi-scale aggregation for
    adversarial robustness. arXiv:2408.05446, 2024.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> z = np.array([[1, 0, -1, 0.5], [0, 2, 0, -3], [0.5, -1, 3, 0], [2, 1.5, 0, 1.9]])
    >>> aggkit.crossmax(z, k=3)
    array([-2. , -1. , -2. , -2.9])
    >>> int(np.argmax(aggkit.crossmax(z, k=3)))
    1
    """
    spec = CrossMax(
        k=k, reducer=reducer, even=even, predictor_dim=predictor_dim, class_dim=class_dim, nonfinite=nonfinite
    )
    return spec(z)
