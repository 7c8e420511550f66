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
    "NonFiniteError",
    "ShapeError",
    "TooFewInputsError",
]
