"""The numpy API: one module per rule family, each with a function and a rule object."""

from aggkit.rules.crossmax import crossmax
from aggkit.rules.detox import (
    DETOX,
    DetoxInfo,
    contiguous_groups,
    data_assignment,
    detox,
    detox_bulyan,
    detox_median,
    detox_multikrum,
    effective_f,
    expected_corrupted_groups,
    random_groups,
)
from aggkit.rules.geometric_median import GeometricMedian, GeometricMedianInfo, geometric_median
from aggkit.rules.krum import Krum, MultiKrum, Selection, krum, multi_krum
from aggkit.rules.mean import Mean, mean
from aggkit.rules.median import Median, median
from aggkit.rules.trimmed_mean import TrimmedMean, trimmed_mean

__all__ = [
    "DETOX",
    "DetoxInfo",
    "GeometricMedian",
    "GeometricMedianInfo",
    "Krum",
    "Mean",
    "Median",
    "MultiKrum",
    "Selection",
    "TrimmedMean",
    "contiguous_groups",
    "crossmax",
    "data_assignment",
    "detox",
    "detox_bulyan",
    "detox_median",
    "detox_multikrum",
    "effective_f",
    "expected_corrupted_groups",
    "geometric_median",
    "krum",
    "mean",
    "median",
    "multi_krum",
    "random_groups",
    "trimmed_mean",
]
