"""The exceptions aggkit raises.

Every error about bad input is an :class:`AggkitError`, which subclasses
:class:`ValueError` so existing ``except ValueError`` handlers keep working.
Wrong dtypes raise :class:`TypeError`.
"""

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
    "EmptyInputError",
    "InvalidParameterError",
    "NoMajorityError",
    "NonFiniteError",
    "ShapeError",
    "TooFewInputsError",
]


class NoMajorityError(AggkitError):
    """DETOX: a group of redundant workers reached no majority under ``no_majority="raise"``.

    ``.groups`` lists the groups (indices into the group assignment).
    """

    groups: list[int]
