"""The numpy API: one module per rule family, each with a function and a rule object."""

from aggkit.rules.crossmax import crossmax
from aggkit.rules.krum import Krum, MultiKrum, Selection, krum, multi_krum
from aggkit.rules.mean import Mean, mean
from aggkit.rules.median import Median, median
from aggkit.rules.trimmed_mean import TrimmedMean, trimmed_mean

__all__ = [
    "Krum",
    "Mean",
    "Median",
    "MultiKrum",
    "Selection",
    "TrimmedMean",
    "crossmax",
    "krum",
    "mean",
    "median",
    "multi_krum",
    "trimmed_mean",
]
