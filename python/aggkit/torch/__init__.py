r"""aggkit for torch: the rules as differentiable torch operators, modules and FL helpers.

Every function mirrors the numpy API of the same name and returns a tensor on the input's
device, in the input's dtype:

* **CPU tensors** reach the Rust core without a copy (a numpy view of the tensor's memory) and
  the result comes back without a copy (``torch.from_numpy``).
* **CUDA and other devices** run a torch-native implementation with the same semantics (ties
  by ``(value, row)``, ``even``, ``nonfinite``); the data never leaves the device.
* **Autograd.** Each rule is a ``torch.library.custom_op`` (``torch.ops.aggkit.<name>``) with a
  fake kernel and an autograd formula, so it works under ``torch.compile``. The gradient goes
  to the inputs the rule selected or kept (``docs/conventions.md``): the median's middle element
  (half to each of the two middles under ``even="mean"``), the trimmed mean's kept values
  (``1/(n - 2f)`` each), Krum's chosen input, Multi-Krum's ``m`` inputs (``1/m`` each), the
  mean's inputs (``w_i / Σ w``; non-finite inputs dropped under ``"robust"`` get none).
  Weights receive no gradient.
* float16 and bfloat16 are computed in float32 and returned in the input dtype.

The coordinate-wise rules (``mean``, ``median``, ``trimmed_mean``) take ``dim``: the dimension
that indexes the inputs; every other dimension is a coordinate, so leading batch dimensions
work (``x`` of shape ``(batch, n, d)`` with ``dim=1`` gives ``(batch, d)``; a ``dim`` other than 0
costs one copy of ``x`` to bring the inputs first). ``x`` may also be a sequence of ``n``
same-shaped tensors: without a gradient to track, CPU tensors are read in place (no stacking).

Importing ``aggkit`` never imports torch; ``import aggkit.torch`` does, and registers these
implementations, so the numpy API's functions and every rule object route tensors here.
``aggkit.torch.nn`` holds the modules.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401 - fail early, with the extra's name
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("aggkit.torch needs PyTorch: pip install 'aggkit[torch]'") from e

from aggkit import _dispatch
from aggkit.torch import nn
from aggkit.torch._input import ArrayOps
from aggkit.torch._paths import force_native, force_triton
from aggkit.torch.bulyan import bulyan
from aggkit.torch.centered_clipping import centered_clipping
from aggkit.torch.crossmax import crossmax
from aggkit.torch.detox import detox
from aggkit.torch.dnc import dnc
from aggkit.torch.fltrust import fltrust
from aggkit.torch.foolsgold import foolsgold
from aggkit.torch.geometric_median import geometric_median
from aggkit.torch.krum import krum, multi_krum
from aggkit.torch.meamed import meamed
from aggkit.torch.mean import mean
from aggkit.torch.median import median
from aggkit.torch.monoid import TreeSchedule, segment_reduce, tree_reduce, tree_schedule
from aggkit.torch.preagg import arc, bucketing, clipping, nnm, perturb, pipeline
from aggkit.torch.presets import bucketing_cc, nnm_cc, nnm_trimmed_mean
from aggkit.torch.sign_vote import sign_vote
from aggkit.torch.state_dict import aggregate_state_dicts
from aggkit.torch.subsets import caf, mda, monna, smea
from aggkit.torch.trimmed_mean import trimmed_mean

_dispatch.provides("torch", ArrayOps())

__all__ = [
    "TreeSchedule",
    "aggregate_state_dicts",
    "arc",
    "bucketing",
    "bucketing_cc",
    "bulyan",
    "caf",
    "centered_clipping",
    "clipping",
    "crossmax",
    "detox",
    "dnc",
    "fltrust",
    "foolsgold",
    "force_native",
    "force_triton",
    "geometric_median",
    "krum",
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "nn",
    "nnm",
    "nnm_cc",
    "nnm_trimmed_mean",
    "perturb",
    "pipeline",
    "segment_reduce",
    "sign_vote",
    "smea",
    "tree_reduce",
    "tree_schedule",
    "trimmed_mean",
]
