"""Bags of tile features: the synthetic bag cohort, frozen patch encoders, feature files and their readers."""

from mtlutils.bags.cohort import BagCohortConfig, bag_cohort_config, plan_bag_cohort
from mtlutils.bags.encoders import DEFAULT_ENCODER, ENCODERS, get_encoder
from mtlutils.bags.features import build_bag_cohort, encoder_dir_name

__all__ = [
    "DEFAULT_ENCODER",
    "ENCODERS",
    "BagCohortConfig",
    "bag_cohort_config",
    "build_bag_cohort",
    "encoder_dir_name",
    "get_encoder",
    "plan_bag_cohort",
]
