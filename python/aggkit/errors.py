"""The exceptions aggkit raises.

Every error about bad input is an :class:`AggkitError`, which subclasses
:class:`ValueError` so existing ``except ValueError`` handlers keep working.
Wrong dtypes raise :class:`TypeError`.

The messages of the structured errors (too few inputs, empty input, non-finite inputs) are
formatted by the Rust core whichever layer raises them, so they read the same from numpy,
torch and the kernels; :func:`nonfinite_error`, :func:`too_few_inputs_error` and
:func:`empty_input_error` build them for the Python layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aggkit import _core
from aggkit._core import (
    AggkitError,
    EmptyInputError,
    InvalidParameterError,
    NonFiniteError,
    ShapeError,
    TooFewInputsError,
)

__all__ = [
    "AggkitError",
    "AxisError",
    "EmptyInputError",
    "InvalidParameterError",
    "NoMajorityError",
    "NonFiniteError",
    "ShapeError",
    "TooFewInputsError",
]


class AxisError(InvalidParameterError, np.exceptions.AxisError):
    """An ``axis=`` outside the input's dimensions: numpy's ``AxisError`` and an aggkit error.

    ``except np.exceptions.AxisError``, ``except IndexError`` and ``except ValueError`` all
    catch it, as they catch numpy's.
    """


class NoMajorityError(AggkitError):
    """DETOX: a group of redundant workers reached no majority under ``no_majority="raise"``.

    ``.groups`` lists the groups (indices into the group assignment).
    """

    groups: list[int]


def nonfinite_error(rule: str, rows: Sequence[int], detail: str) -> NonFiniteError:
    """A :class:`NonFiniteError` naming the inputs ``rows`` (also in ``.rows``)."""
    return _core.nonfinite_error(rule, [int(r) for r in rows], detail)


def too_few_inputs_error(rule: str, requirement: str, n: int, f: int) -> TooFewInputsError:
    """A :class:`TooFewInputsError`: ``{rule} needs {requirement}, got n={n}, f={f}``."""
    return _core.too_few_inputs_error(rule, requirement, n, f)


def empty_input_error(rule: str) -> EmptyInputError:
    """An :class:`EmptyInputError`: ``{rule} needs at least one input, got n=0``."""
    return _core.empty_input_error(rule)
