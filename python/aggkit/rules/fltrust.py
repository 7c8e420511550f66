"""FLTrust: trust each update by its direction's agreement with the server's own update."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, overload

import numpy as np

from aggkit._params import NonFinite
from aggkit._types import ArrayLike, ArrayT, NDArray
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, check_reference, register


def parse_reference(reference: Any, shape: tuple[int, ...], rule: str) -> np.ndarray:
    """A reference update given as real numbers, as one flat float64 array of finite values.

    Its shape is one input's, or flat (one value per coordinate).
    """
    if reference is None:
        raise InvalidParameterError(f"{rule} needs reference=...: the server's own update")
    try:
        raw = np.asarray(reference)
        if raw.dtype.kind not in "iuf":
            raise TypeError
        with np.errstate(invalid="ignore", over="ignore"):  # refused below if not finite
            r = raw.astype(np.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidParameterError(
            f"{rule}: the reference must be an array of real numbers, got {type(reference).__name__}"
            + (f" of dtype {raw.dtype}" if "raw" in locals() else "")
        ) from None
    check_reference_values(tuple(r.shape), bool(np.isfinite(r).all()), shape, rule)
    return np.ascontiguousarray(r.reshape(-1))


def check_reference_values(
    ref_shape: tuple[int, ...], finite: bool, shape: tuple[int, ...], rule: str
) -> None:
    """The reference has one input's shape (or is flat with one value per coordinate), all finite."""
    d = math.prod(shape)
    if ref_shape != tuple(shape) and ref_shape != (d,):
        flat = f" or ({d},)" if len(shape) != 1 else ""
        raise InvalidParameterError(
            f"{rule}: the reference must have one input's shape {tuple(shape)}{flat}, got {ref_shape}"
        )
    if not finite:
        raise InvalidParameterError(f"{rule}: the reference update must be finite")


def reference_norm(ref: np.ndarray) -> float:
    """The reference's Euclidean norm (float64), refused where it overflows."""
    top = float(np.max(np.abs(ref))) if ref.size else 0.0
    e = math.frexp(top)[1] if top > 0 else 0
    scaled = np.ldexp(ref, -e)
    with np.errstate(over="ignore"):
        norm = float(np.ldexp(np.sqrt(np.sum(scaled * scaled)), e))
    if not math.isfinite(norm):
        raise InvalidParameterError("fltrust: the reference update's norm overflows float64")
    return norm


@register
class FLTrust(Rule):
    """The rule object of :func:`aggkit.fltrust` (the reference update is given per call)."""

    name: ClassVar[str] = "fltrust"
    _uses_reference: ClassVar[bool] = True
    nonfinite: NonFinite = "robust"

    @overload
    def __call__(self, x: ArrayT | Sequence[ArrayT], *, reference: Any = None) -> ArrayT: ...
    @overload
    def __call__(self, x: ArrayLike, *, reference: Any = None) -> NDArray: ...
    def __call__(self, x: Any, *, reference: Any = None) -> Any:
        """Aggregate ``x`` trusting each input by its agreement with ``reference`` (required)."""
        return self._run(x, **check_reference(self, reference))[0]


@overload
def fltrust(x: ArrayT | Sequence[ArrayT], *, reference: Any, nonfinite: NonFinite = ...) -> ArrayT: ...
@overload
def fltrust(x: ArrayLike, *, reference: Any, nonfinite: NonFinite = ...) -> NDArray: ...
def fltrust(x: Any, *, reference: Any, nonfinite: NonFinite = FLTrust.nonfinite) -> Any:
    r"""FLTrust: the inputs rescaled to the server's update norm, weighted by their cosine to it.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The clients' updates (float16, float32 or float64); norms and cosines are over all
        coordinates.
    reference : array_like of shape ``shape``
        The server's own update :math:`g_0` this round, trained on a small clean dataset it holds
        (the paper's root dataset, 100 examples), from the same model by the same procedure as
        the clients. Must be finite.
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        ``"robust"`` gives inputs holding NaN or ±inf no trust; ``"raise"`` refuses them;
        ``"propagate"`` lets NaN reach the output.

    Returns
    -------
    numpy.ndarray
        Shape ``shape``, the dtype of ``x``.

    Notes
    -----
    :math:`TS_i = \max(0, \cos(x_i, g_0))`,
    :math:`y = \frac{1}{\sum_j TS_j} \sum_i TS_i \frac{\|g_0\|}{\|x_i\|} x_i`. Every input's
    influence is bounded: its contribution has norm at most :math:`\|g_0\|`, and one pointing
    away from :math:`g_0` has none. When no input has positive trust (or :math:`g_0 = 0`) the
    output is zero, as in the authors' reference code (which adds ``1e-9`` to the
    denominators; here zero norms give zero trust instead). Cosines and scales are float64, each
    from the input scaled by a power of two (exact), so ``1e-300`` and ``1e300`` inputs are
    measured accurately and an orthogonal input has trust exactly 0; the sum is the core's
    weighted mean, rounded to the input dtype. Verified against the paper's algorithm and the authors'
    MXNet aggregation function (``fltrust(gradients, net, lr, f, byz)``). Cost :math:`O(n d)`.

    References
    ----------
    X. Cao, M. Fang, J. Liu, N. Z. Gong. FLTrust: Byzantine-robust federated learning via trust
    bootstrapping. NDSS 2021, arXiv:2012.13995.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    >>> aggkit.fltrust(x, reference=[1.0, 1.0])
    array([0.70710678, 0.70710678])
    """
    return FLTrust(nonfinite=nonfinite)(x, reference=reference)
