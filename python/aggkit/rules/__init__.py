"""The rules, defined once: a rule object and a function per rule, one module per family.

These modules import no array framework: calling a rule routes its input to the numpy
implementation (``aggkit._numpy``) or the torch one (``aggkit.torch``) by its type.
"""

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
from aggkit.rules.dnc import DnC, dnc
from aggkit.rules.fltrust import FLTrust, fltrust
from aggkit.rules.foolsgold import FoolsGold, FoolsGoldInfo, FoolsGoldState, foolsgold
from aggkit.rules.geometric_median import GeometricMedian, GeometricMedianInfo, geometric_median
from aggkit.rules.krum import Krum, MultiKrum, krum, multi_krum
from aggkit.rules.meamed import Meamed, meamed
from aggkit.rules.mean import Mean, mean
from aggkit.rules.median import Median, median
from aggkit.rules.preagg import ARC, NNM, Bucketing, Clipping, Perturb
from aggkit.rules.presets import NNMCC, BucketingCC, NNMTrimmedMean, bucketing_cc, nnm_cc, nnm_trimmed_mean
from aggkit.rules.sign_vote import SignVote, sign_vote
from aggkit.rules.subsets import CAF, MDA, SMEA, MoNNA, caf, mda, monna, smea
from aggkit.rules.trimmed_mean import TrimmedMean, trimmed_mean

__all__ = [
    "ARC",
    "CAF",
    "DETOX",
    "MDA",
    "NNM",
    "NNMCC",
    "SMEA",
    "Bucketing",
    "BucketingCC",
    "Bulyan",
    "CenteredClipping",
    "CenteredClippingState",
    "Clipping",
    "DetoxInfo",
    "DnC",
    "FLTrust",
    "FoolsGold",
    "FoolsGoldInfo",
    "FoolsGoldState",
    "GeometricMedian",
    "GeometricMedianInfo",
    "Krum",
    "Meamed",
    "Mean",
    "Median",
    "MoNNA",
    "MultiKrum",
    "NNMTrimmedMean",
    "Perturb",
    "SignVote",
    "TrimmedMean",
    "bucketing_cc",
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
    "dnc",
    "effective_f",
    "expected_corrupted_groups",
    "fltrust",
    "foolsgold",
    "geometric_median",
    "krum",
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "nnm_cc",
    "nnm_trimmed_mean",
    "random_groups",
    "sign_vote",
    "smea",
    "trimmed_mean",
]
