"""The geometric median on tensors, with three gradients.

The Weiszfeld weights come from ``torch.ops.aggkit.geometric_median`` (Rust on CPU, float64
torch ops elsewhere), the value is their weighted mean, and the gradient holds the weights
frozen, unrolls the iterations, or differentiates the fixed point.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.errors import nonfinite_error
from aggkit.rules.geometric_median import GeometricMedian, GeometricMedianInfo, Init
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared, host, needs_grad
from aggkit.torch._paths import rust, view
from aggkit.torch.mean import mean_op

Grad = Literal["frozen", "unrolled", "implicit"]
"""How the gradient reaches the inputs (see :func:`geometric_median`)."""


def native(
    x: torch.Tensor, alpha: list[float], nu: float, maxiter: int, ftol: float, init: str, nonfinite: str
) -> tuple[int, bool, float, np.ndarray]:
    """Weiszfeld iterations with torch ops in float64 on ``x``'s device."""
    n = x.shape[0]
    if nonfinite == "raise":
        K.check_policy(x, "geometric_median", "raise")
    keep = (
        torch.isfinite(x).all(dim=1)
        if nonfinite == "robust"
        else torch.ones(n, dtype=torch.bool, device=x.device)
    )
    if not bool(keep.any()):
        raise nonfinite_error(
            "geometric_median", list(range(n)), "every input holds NaN or infinite values, nothing is left"
        )
    xs = x[keep].double()
    a = (
        torch.ones(n, dtype=torch.float64, device=x.device)
        if not alpha
        else torch.tensor(alpha, dtype=torch.float64, device=x.device)
    )
    a = a[keep]
    if init == "mean":
        z = (a[:, None] * xs).sum(0) / a.sum()
    elif init == "median":
        z = torch.quantile(xs, 0.5, dim=0)
    else:
        z = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    d = (xs - z).norm(dim=1)
    obj = float((a * d).sum())
    w, it, conv = a, 0, False
    while it < maxiter:
        w = a / d.clamp(min=nu)
        z = (w[:, None] * xs).sum(0) / w.sum()
        it += 1
        d = (xs - z).norm(dim=1)
        new = float((a * d).sum())
        change, obj = abs(obj - new), new
        if change <= ftol * new:
            conv = True
            break
    full = np.zeros(n)
    full[keep.cpu().numpy()] = w.cpu().numpy()
    return it, conv, obj, full


@torch.library.custom_op("aggkit::geometric_median", mutates_args=())
def geometric_median_op(
    x: Tensor, alpha: list[float], nu: float, maxiter: int, ftol: float, init: str, nonfinite: str
) -> tuple[Tensor, Tensor]:
    """The final Weiszfeld weights ``(n,)`` float64 and ``[iterations, converged, objective]``.

    Not differentiable: ``aggkit.torch.geometric_median`` takes the weighted mean of ``x`` with
    these weights through ``aggkit::mean`` (the "frozen weights" gradient).
    """
    a = np.asarray(alpha, dtype=np.float64) if alpha else None
    if rust(x):
        _, it, conv, obj, w = _core.geometric_median(view(x), a, nu, maxiter, ftol, init, nonfinite)
    else:
        it, conv, obj, w = native(x, alpha, nu, maxiter, ftol, init, nonfinite)
    stats = torch.tensor([float(it), float(conv), float(obj)], dtype=torch.float64)
    return torch.from_numpy(np.asarray(w, dtype=np.float64)).to(x.device), stats.to(x.device)


@geometric_median_op.register_fake
def _(
    x: Tensor, alpha: list[float], nu: float, maxiter: int, ftol: float, init: str, nonfinite: str
) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape[0], dtype=torch.float64), x.new_empty(3, dtype=torch.float64)


def unrolled(x: Tensor, keep: Tensor, a: Tensor, nu: float, iters: int, init: str) -> Tensor:
    """Replay ``iters`` Weiszfeld steps with differentiable torch ops (float64)."""
    xs, aa = x[keep].double(), a[keep]
    if init == "mean":
        z = (aa[:, None] * xs).sum(0) / aa.sum()
    elif init == "median":
        z = xs.median(dim=0).values if xs.shape[0] % 2 else torch.quantile(xs, 0.5, dim=0)
    else:
        z = torch.zeros(xs.shape[1], dtype=torch.float64, device=x.device)
    for _ in range(iters):
        w = aa / (xs - z).norm(dim=1).clamp(min=nu)
        z = (w[:, None] * xs).sum(0) / w.sum()
    return z


class _GmImplicit(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, z: Tensor, keep: Tensor, a: Tensor, nu: float) -> Tensor:
        ctx.save_for_backward(x, z, keep, a)
        ctx.nu = nu
        return z.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None, None]:
        x, z, keep, a = ctx.saved_tensors
        xs = x[keep].double()
        diff = z.double()[None] - xs
        r = diff.norm(dim=1).clamp(min=ctx.nu)
        u = diff / r[:, None]
        c = a[keep] / r

        def h(v: Tensor) -> Tensor:  # H v = Σ c_i (v - u_i (u_i . v))
            hv: Tensor = c.sum() * v - (c * (u @ v)) @ u
            return hv

        gd = g.double()
        v = torch.zeros_like(gd)
        res = gd.clone()
        dirn = res.clone()
        rs = res @ res
        tol = 1e-24 * float(gd @ gd)
        for _ in range(max(50, 4 * gd.numel())):
            if float(rs) <= tol:
                break
            hd = h(dirn)
            step = rs / (dirn @ hd)
            v = v + step * dirn
            res = res - step * hd
            rs_new = res @ res
            dirn = res + (rs_new / rs) * dirn
            rs = rs_new
        gx = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        gx[keep] = c[:, None] * (v[None] - u * (u @ v)[:, None])
        return gx.to(x.dtype), None, None, None, None


def implicit(x: Tensor, z: Tensor, keep: Tensor, a: Tensor, nu: float) -> Tensor:
    """``z`` (the converged median) with the implicit-function gradient to ``x``."""
    out: Tensor = _GmImplicit.apply(x, z, keep, a, nu)
    return out


@implements("geometric_median", "torch")
def _geometric_median(
    rule: GeometricMedian, x: Any, *, weights: Any = None, grad: Grad = "frozen"
) -> tuple[Tensor, GeometricMedianInfo]:
    p = Prepared(x, "geometric_median")
    rule.check_input(p.n, p.d)
    alpha = [] if weights is None else _params.weights(host(weights), p.n, "geometric_median").tolist()
    w, stats = geometric_median_op(
        p.x.detach(), alpha, rule.nu, rule.maxiter, rule.ftol, rule.init, rule.nonfinite
    )
    wl = [float(v) for v in w.tolist()]
    out, _ = mean_op(p.x, wl, "robust" if rule.nonfinite == "robust" else "propagate")
    if grad != "frozen" and needs_grad(p.x):
        keep = torch.tensor([v > 0 for v in wl], device=p.x.device)
        a = torch.tensor(alpha or [1.0] * p.n, dtype=torch.float64, device=p.x.device)
        if grad == "unrolled":
            z = unrolled(p.x, keep, a, rule.nu, int(stats[0]), rule.init)
        else:
            z = implicit(p.x, out.detach(), keep, a, rule.nu)
        out = z.to(p.x.dtype)
    it, conv, obj = stats.tolist()
    return p.finish(out), GeometricMedianInfo(int(it), bool(conv), float(obj), w.cpu().numpy())


def geometric_median(
    x: Any,
    *,
    weights: Any = None,
    nu: float = GeometricMedian.nu,
    maxiter: int = GeometricMedian.maxiter,
    ftol: float = GeometricMedian.ftol,
    init: Init = GeometricMedian.init,
    nonfinite: NonFinite = GeometricMedian.nonfinite,
    grad: Grad = "frozen",
    return_info: bool = False,
) -> Any:
    r"""Geometric median; see :func:`aggkit.geometric_median`.

    CPU tensors run the Rust iterations; other devices iterate with torch ops in float64 on the
    device (same definition, not bit-identical to the CPU path). ``grad`` picks the gradient
    (docs/algorithms.md, geometric median):

    * ``"frozen"`` (default; the RFA author's choice): the result is the weighted mean of the
      inputs with the final Weiszfeld weights ``w``, input ``i`` gets ``w_i / Σ w`` (the
      weights treated as constants). Cheap.
    * ``"unrolled"``: autograd through the same number of Weiszfeld iterations, replayed with
      torch ops in float64 (what byzfl gets implicitly). Memory grows with the iterations.
    * ``"implicit"``: the exact derivative of the fixed point
      :math:`\sum_i \alpha_i (z - x_i)/r_i = 0` (:math:`r_i = \max(\nu, \|z - x_i\|)`):
      solve :math:`H v = g` with :math:`H = \sum_i (\alpha_i/r_i)(I - u_i u_i^\top)` by
      conjugate gradients (matrix-free, :math:`O(n d)` per step), then input ``i`` gets
      :math:`(\alpha_i/r_i)(I - u_i u_i^\top) v`. Exact at convergence.

    Inputs dropped as non-finite get no gradient in every mode.
    """
    grad = _params.choice(grad, "grad", ("frozen", "unrolled", "implicit"), "geometric_median")  # type: ignore[assignment]
    rule = GeometricMedian(nu=nu, maxiter=maxiter, ftol=ftol, init=init, nonfinite=nonfinite)
    y, info = _geometric_median(rule, x, weights=weights, grad=grad)
    return (y, info) if return_info else y
