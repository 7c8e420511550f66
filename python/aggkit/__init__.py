"""aggkit: robust aggregation for federated and Byzantine-resilient learning.

This is the public API; everything not re-exported here is private. ``aggkit.attacks`` is
imported on first use; ``aggkit.torch`` when imported, or when a rule first receives a tensor.
"""

from typing import TYPE_CHECKING, Any

from aggkit import _core
from aggkit import monoid as monoid
from aggkit._runtime import get_num_threads as get_num_threads
from aggkit._runtime import get_work_limit as get_work_limit
from aggkit._runtime import set_num_threads as set_num_threads
from aggkit._runtime import set_work_limit as set_work_limit
from aggkit._runtime import simd_level as simd_level
from aggkit.buffer import UpdateBuffer as UpdateBuffer
from aggkit.errors import AggkitError as AggkitError
from aggkit.errors import AxisError as AxisError
from aggkit.errors import EmptyInputError as EmptyInputError
from aggkit.errors import InvalidParameterError as InvalidParameterError
from aggkit.errors import NoMajorityError as NoMajorityError
from aggkit.errors import NonFiniteError as NonFiniteError
from aggkit.errors import ShapeError as ShapeError
from aggkit.errors import TooFewInputsError as TooFewInputsError
from aggkit.registry import Pipeline as Pipeline
from aggkit.registry import PreAggregator as PreAggregator
from aggkit.registry import Rule as Rule
from aggkit.registry import Selection as Selection
from aggkit.registry import list_preaggregators as list_preaggregators
from aggkit.registry import list_rules as list_rules
from aggkit.registry import pipeline as pipeline
from aggkit.registry import rule as rule
from aggkit.rules import ARC as ARC
from aggkit.rules import CAF as CAF
from aggkit.rules import DETOX as DETOX
from aggkit.rules import MDA as MDA
from aggkit.rules import NNM as NNM
from aggkit.rules import NNMCC as NNMCC
from aggkit.rules import SMEA as SMEA
from aggkit.rules import Bucketing as Bucketing
from aggkit.rules import BucketingCC as BucketingCC
from aggkit.rules import Bulyan as Bulyan
from aggkit.rules import CenteredClipping as CenteredClipping
from aggkit.rules import CenteredClippingState as CenteredClippingState
from aggkit.rules import Clipping as Clipping
from aggkit.rules import DetoxInfo as DetoxInfo
from aggkit.rules import DnC as DnC
from aggkit.rules import FLTrust as FLTrust
from aggkit.rules import FoolsGold as FoolsGold
from aggkit.rules import FoolsGoldInfo as FoolsGoldInfo
from aggkit.rules import FoolsGoldState as FoolsGoldState
from aggkit.rules import GeometricMedian as GeometricMedian
from aggkit.rules import GeometricMedianInfo as GeometricMedianInfo
from aggkit.rules import Krum as Krum
from aggkit.rules import Meamed as Meamed
from aggkit.rules import Mean as Mean
from aggkit.rules import Median as Median
from aggkit.rules import MoNNA as MoNNA
from aggkit.rules import MultiKrum as MultiKrum
from aggkit.rules import NNMTrimmedMean as NNMTrimmedMean
from aggkit.rules import Perturb as Perturb
from aggkit.rules import SignVote as SignVote
from aggkit.rules import TrimmedMean as TrimmedMean
from aggkit.rules import bucketing_cc as bucketing_cc
from aggkit.rules import bulyan as bulyan
from aggkit.rules import caf as caf
from aggkit.rules import centered_clipping as centered_clipping
from aggkit.rules import contiguous_groups as contiguous_groups
from aggkit.rules import crossmax as crossmax
from aggkit.rules import data_assignment as data_assignment
from aggkit.rules import detox as detox
from aggkit.rules import detox_bulyan as detox_bulyan
from aggkit.rules import detox_median as detox_median
from aggkit.rules import detox_multikrum as detox_multikrum
from aggkit.rules import dnc as dnc
from aggkit.rules import effective_f as effective_f
from aggkit.rules import expected_corrupted_groups as expected_corrupted_groups
from aggkit.rules import fltrust as fltrust
from aggkit.rules import foolsgold as foolsgold
from aggkit.rules import geometric_median as geometric_median
from aggkit.rules import krum as krum
from aggkit.rules import mda as mda
from aggkit.rules import meamed as meamed
from aggkit.rules import mean as mean
from aggkit.rules import median as median
from aggkit.rules import monna as monna
from aggkit.rules import multi_krum as multi_krum
from aggkit.rules import nnm_cc as nnm_cc
from aggkit.rules import nnm_trimmed_mean as nnm_trimmed_mean
from aggkit.rules import random_groups as random_groups
from aggkit.rules import sign_vote as sign_vote
from aggkit.rules import smea as smea
from aggkit.rules import trimmed_mean as trimmed_mean

if TYPE_CHECKING:
    from aggkit import attacks as attacks

__version__: str = _core.__version__


def __getattr__(name: str) -> Any:
    # aggkit.attacks is for simulations and tests: imported on first use, not with aggkit.
    if name == "attacks":
        import aggkit.attacks

        return aggkit.attacks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARC",
    "CAF",
    "DETOX",
    "MDA",
    "NNM",
    "NNMCC",
    "SMEA",
    "AggkitError",
    "AxisError",
    "Bucketing",
    "BucketingCC",
    "Bulyan",
    "CenteredClipping",
    "CenteredClippingState",
    "Clipping",
    "DetoxInfo",
    "DnC",
    "EmptyInputError",
    "FLTrust",
    "FoolsGold",
    "FoolsGoldInfo",
    "FoolsGoldState",
    "GeometricMedian",
    "GeometricMedianInfo",
    "InvalidParameterError",
    "Krum",
    "Meamed",
    "Mean",
    "Median",
    "MoNNA",
    "MultiKrum",
    "NNMTrimmedMean",
    "NoMajorityError",
    "NonFiniteError",
    "Perturb",
    "Pipeline",
    "PreAggregator",
    "Rule",
    "Selection",
    "ShapeError",
    "SignVote",
    "TooFewInputsError",
    "TrimmedMean",
    "UpdateBuffer",
    "__version__",
    "attacks",
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
    "get_num_threads",
    "get_work_limit",
    "krum",
    "list_preaggregators",
    "list_rules",
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "nnm_cc",
    "nnm_trimmed_mean",
    "pipeline",
    "random_groups",
    "rule",
    "set_num_threads",
    "set_work_limit",
    "sign_vote",
    "simd_level",
    "smea",
    "trimmed_mean",
]
