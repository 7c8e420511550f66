"""aggkit: robust aggregation for federated and Byzantine-resilient learning.

This is the public API; everything not re-exported here is private.
"""

from aggkit import _core
from aggkit._runtime import get_num_threads as get_num_threads
from aggkit._runtime import set_num_threads as set_num_threads
from aggkit._runtime import simd_level as simd_level
from aggkit.errors import AggkitError as AggkitError
from aggkit.errors import EmptyInputError as EmptyInputError
from aggkit.errors import InvalidParameterError as InvalidParameterError
from aggkit.errors import NonFiniteError as NonFiniteError
from aggkit.errors import ShapeError as ShapeError
from aggkit.errors import TooFewInputsError as TooFewInputsError
from aggkit.registry import Rule as Rule
from aggkit.registry import list_rules as list_rules
from aggkit.registry import rule as rule
from aggkit.rules import Krum as Krum
from aggkit.rules import Mean as Mean
from aggkit.rules import Median as Median
from aggkit.rules import MultiKrum as MultiKrum
from aggkit.rules import Selection as Selection
from aggkit.rules import TrimmedMean as TrimmedMean
from aggkit.rules import crossmax as crossmax
from aggkit.rules import krum as krum
from aggkit.rules import mean as mean
from aggkit.rules import median as median
from aggkit.rules import multi_krum as multi_krum
from aggkit.rules import trimmed_mean as trimmed_mean

__version__: str = _core.__version__

__all__ = [
    "AggkitError",
    "EmptyInputError",
    "InvalidParameterError",
    "Krum",
    "Mean",
    "Median",
    "MultiKrum",
    "NonFiniteError",
    "Rule",
    "Selection",
    "ShapeError",
    "TooFewInputsError",
    "TrimmedMean",
    "__version__",
    "crossmax",
    "get_num_threads",
    "krum",
    "list_rules",
    "mean",
    "median",
    "multi_krum",
    "rule",
    "set_num_threads",
    "simd_level",
    "trimmed_mean",
]
