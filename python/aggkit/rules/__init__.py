"""The numpy API: one module per rule family, each with a function and a rule object."""

from aggkit.rules.bulyan import Bulyan, bulyan
from aggkit.rules.centered_clipping import CenteredClipping, CenteredClippingState, centered_clipping
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
from aggkit.rules.meamed import Meamed, meamed
from aggkit.rules.mean import Mean, mean
from aggkit.rules.median import Median, median
from aggkit.rules.sign_vote import SignVote, sign_vote
from aggkit.rules.subsets import CAF, MDA, SMEA, MoNNA, caf, mda, monna, smea
from aggkit.rules.trimmed_mean import TrimmedMean, trimmed_mean

__all__ = [
    "CAF",
    "DETOX",
    "MDA",
    "SMEA",
    "Bulyan",
    "CenteredClipping",
    "CenteredClippingState",
    "DetoxInfo",
    "GeometricMedian",
    "GeometricMedianInfo",
    "Krum",
    "Meamed",
    "Mean",
    "Median",
    "MoNNA",
    "MultiKrum",
    "Selection",
    "SignVote",
    "TrimmedMean",
    "bulyan",
    "caf",
    "centered_clipping",
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
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "random_groups",
    "sign_vote",
    "smea",
    "trimmed_mean",
]
